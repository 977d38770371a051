"""``negsynth build``: pairs from a judged collection -> :func:`negsynth_hf.build.build_dataset` -> saved dataset."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negsynth_hf.pipeline.config import ConfigError, RecipeConfig
from negsynth_hf.pipeline.runtime import main_print, process_state
from negsynth_hf.pipeline.sources import load_collection
from negsynth_hf.redaction import redact

logger = logging.getLogger("negsynth_hf")


@dataclass
class BuildOutput:
    dataset_dir: str
    rows: int
    num_train_queries: int
    num_validation_queries: int
    seconds: float


def generator_config(cfg: RecipeConfig, rank: int) -> Any:
    """The build's GeneratorConfig for process ``rank`` (its own endpoint from ``base_urls``); None: mined-only."""
    if cfg.build.generator is None:
        return None
    from negsynth_hf.generators import GeneratorConfig

    gen = dict(cfg.build.generator)
    if cfg.build.base_urls:
        gen["base_url"] = cfg.build.base_urls[rank % len(cfg.build.base_urls)]
    try:
        return GeneratorConfig.from_dict(gen)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"build.generator: {err}") from err


def build_kwargs(cfg: RecipeConfig, generator: Any, retriever: str) -> dict[str, Any]:
    """``build_dataset`` keywords from the ``build`` section (``build_options`` may not repeat a build key)."""
    b = cfg.build
    kwargs: dict[str, Any] = {
        "retriever": retriever,
        "generator": generator,
        "num_mined": b.num_mined,
        "num_generated": b.num_generated if generator is not None else 0,
        "seed": cfg.run.seed,
    }
    if generator is not None:
        kwargs["strategy"] = b.strategy
        kwargs["profile"] = b.profile
        if b.query_editor != "auto":  # only when set: build_options may still pass it
            kwargs["query_editor"] = b.query_editor
    if getattr(generator, "backend", None) == "llamacpp" and "map_batch_size" not in b.build_options:
        # one map batch per set of server slots: every slot stays busy and the progress bar advances as rows finish
        kwargs["map_batch_size"] = generator.n_parallel
    overlap = set(kwargs) & set(b.build_options)
    if overlap - {"seed"}:
        raise ConfigError(f"build.build_options repeats {sorted(overlap)}: set those as build keys instead.")
    return {**kwargs, **b.build_options}


def check_build_section(cfg: RecipeConfig) -> None:
    """Mistakes in the ``build`` section found before anything is loaded: a bad generator, an unknown profile, a
    ``build_options`` key ``build_dataset`` does not take (each a ConfigError naming the key and the valid values)."""
    import inspect

    from negsynth_hf.build import build_dataset
    from negsynth_hf.synthesis.profiles import get_profile

    if cfg.build.generator is not None:
        generator_config(cfg, 0)  # an unknown backend or generator key
        try:
            get_profile(cfg.build.profile)
        except (ValueError, TypeError, OSError) as err:
            raise ConfigError(f"build.profile: {err}") from None
    valid = set(inspect.signature(build_dataset).parameters) - {"pairs"}
    unknown = sorted(set(cfg.build.build_options) - valid)
    if unknown:
        raise ConfigError(
            f"build.build_options: build_dataset takes no keyword {', '.join(map(repr, unknown))}; "
            f"valid keywords: {', '.join(sorted(valid))}."
        )


def stop_llm_servers() -> None:
    """Stop the llama.cpp servers this process started (a build's generator frees its memory before training;
    the next build starts a fresh one). A no-op when none runs."""
    from negsynth_hf.generators.llamacpp import stop_servers

    stop_servers()


def _pairs_and_corpus(cfg: RecipeConfig, collection: Any) -> tuple[Any, list[str], list[str], list[str]]:
    """(pairs, corpus texts, train ids, validation ids): the held-out validation queries never become pairs."""
    from negsynth_hf.data import mining_corpus, pairs_dataset, split_train_validation

    all_ids = collection.split_query_ids(cfg.data.train_split)
    train_ids, val_ids = split_train_validation(
        all_ids, validation_fraction=cfg.data.validation_fraction, seed=cfg.run.seed
    )
    pairs = pairs_dataset(
        collection,
        cfg.data.train_split,
        query_ids=train_ids,
        max_queries=cfg.data.max_train_queries,
        max_positives_per_query=cfg.data.max_positives_per_query,
        seed=cfg.run.seed,
    )
    corpus = mining_corpus(
        collection, cfg.data.train_split, set(pairs["query_id"]), corpus_size=cfg.build.corpus_size, seed=cfg.run.seed
    )
    return pairs, corpus, train_ids, val_ids


def _recipe_info(cfg: RecipeConfig, collection: Any, pairs: Any, val_ids: list[str], processes: int) -> dict:
    has_ids = "query_id" in pairs.column_names
    return {
        "source": {
            "type": cfg.data.source,
            "dataset": cfg.data.dataset,
            "collection": collection.name,
            "train_split": cfg.data.train_split,
            "test_split": cfg.data.test_split,
        },
        "num_train_queries": len(set(pairs["query_id"])) if has_ids else len(pairs),
        "train_query_ids": sorted(set(pairs["query_id"])) if has_ids else [],
        "validation_query_ids": val_ids,
        "validation_fraction": cfg.data.validation_fraction,
        "max_train_queries": cfg.data.max_train_queries,
        "num_processes": processes,
        "retriever_id": public_model_id(cfg.build.retriever, cfg),
        "recipe": redact(cfg.build.__dict__),
    }


def run_build(cfg: RecipeConfig) -> BuildOutput:
    """Pairs -> build_dataset -> save. With N processes each rank mines and synthesizes only its shard of the
    pairs (its own endpoint: every LLM request is sent once, by one rank) and saves it; rank 0 then reads the
    shards and runs the cross-row stages (verification, the source probe, assembly) on the merged rows."""
    from negsynth_hf.build import ShardedBuild, build_dataset, build_shard
    from negsynth_hf.training import resolve_model_path

    start = time.perf_counter()
    state = process_state()
    check_build_section(cfg)
    collection = load_collection(cfg.data)
    pairs, corpus, train_ids, val_ids = _pairs_and_corpus(cfg, collection)
    retriever = resolve_model_path(cfg.build.retriever or cfg.run.base_model)
    main_print(
        f"[build] {collection.name}/{cfg.data.train_split}: {len(pairs)} pairs, {len(val_ids)} validation queries "
        f"held out, corpus {len(corpus):,} docs"
    )
    rows = 0
    try:
        shards = None
        if state.num_processes > 1 and cfg.build.generator is not None:
            shards = ShardedBuild(_shard_folder(cfg), state.num_processes)
            if state.is_main_process:
                shutil.rmtree(shards.folder, ignore_errors=True)  # a crashed run's shards are not this run's
            state.wait_for_everyone()
            own = ShardedBuild(shards.folder, state.num_processes, index=state.process_index)
            logger.info(
                "rank %d synthesizing rows %s", state.process_index, own.rows_of(state.process_index, len(pairs))
            )
            kwargs = build_kwargs(cfg, generator_config(cfg, state.process_index), retriever)
            build_shard(pairs, corpus=corpus, shards=own, show_progress_bar=False, **kwargs)
            state.wait_for_everyone()
        if state.is_main_process:
            kwargs = build_kwargs(cfg, generator_config(cfg, 0), retriever)
            result = build_dataset(pairs, corpus=corpus, shards=shards, **kwargs)
            info = _recipe_info(cfg, collection, pairs, val_ids, state.num_processes)
            result.with_recipe_info(info).save(cfg.dataset_dir)
            if shards is not None:
                shutil.rmtree(shards.folder, ignore_errors=True)
            rows = len(result.train)
            main_print(f"[build] saved {rows} rows to {cfg.dataset_dir}")
        state.wait_for_everyone()
    finally:
        if cfg.build.generator is not None:
            stop_llm_servers()  # after every rank is done with it: a shared server serves them all
    return BuildOutput(str(cfg.dataset_dir), rows, len(train_ids), len(val_ids), round(time.perf_counter() - start, 1))


def _shard_folder(cfg: RecipeConfig) -> Path:
    """Where the ranks hand their shards to rank 0: beside the dataset folder (every rank can reach it)."""
    folder = Path(cfg.dataset_dir)
    return folder.parent / f".{folder.name}.shards"


def public_model_id(spec: str | None, cfg: RecipeConfig) -> str:
    """A model name fit for cards: the Hub id, never a local path of this machine."""
    if spec is None or spec == cfg.run.base_model:
        return cfg.run.resolved_base_model_id() or Path(cfg.run.base_model).name
    return Path(spec).name if Path(spec).exists() else spec
