"""``negsynth``: build, train, evaluate, diagnose and publish from one YAML config; ``demo`` runs them all.

The recipes in ``recipes/`` are thin wrappers around the ``run_*`` functions here, so
``accelerate launch recipes/train.py --config X`` and ``negsynth train --config X`` do the same thing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negsynth_hf.recipe_config import ConfigError, DataConfig, RecipeConfig, format_help, parse_step_args

logger = logging.getLogger("negsynth_hf")

COMMANDS: dict[str, str] = {
    "build": "pairs from a judged collection -> mined + LLM-generated hard negatives with gap weights (save_to_disk)",
    "train": "LoRA fine-tuning with CausalNegLoss (or a baseline loss) -> <model_dir>/adapter and /merged",
    "evaluate": "base vs trained on the test split: nDCG@10, MRR@10, Recall@100 -> results.json + results.md",
    "diagnose": "generative-discriminative gap report of a built dataset (spectrum, source probes, false negatives)",
    "publish": "stage dataset + merged model + adapter with cards, then upload to the Hub (unless --dry_run)",
    "demo": "the whole pipeline on embedded defaults (MiniLM + SmolLM2 + SciFact), offline, CPU, < 20 min",
}

TOP_HELP = """usage: negsynth <command> [--config recipes/<task>/config.yaml] [--key value ...]

Train retrievers with LLM-synthesized counterfactual hard negatives.

commands:
{commands}

Every command reads one YAML task file (sections run, data, build, train, evaluate, diagnose, publish) and
takes --key value overrides; `negsynth <command> --help` lists every key with its default.

Start here:
  negsynth demo                                                      # offline end-to-end run (~15 min on 2 CPU cores)
  negsynth build    --config recipes/scifact/config.yaml
  negsynth train    --config recipes/scifact/config.yaml --loss mined  # a baseline
  negsynth evaluate --config recipes/scifact/config.yaml
  negsynth publish  --config recipes/scifact/config.yaml --dataset_repo_id you/scifact-negsynth \\
                    --model_repo_id you/minilm-scifact-causalneg --dry_run   # inspect outputs/.../publish first

Multi-process (same steps): accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml \\
  recipes/train.py --config recipes/scifact/config.yaml
"""


def _state():
    """The process group. ``cpu`` follows ``ACCELERATE_USE_CPU`` (set by ``accelerate launch --cpu``): without it a
    CPU-only ``torchrun``/multi-process launch would give every process rank 0 of 1."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _print(*args: Any) -> None:
    """Progress lines from the main process only."""
    if _state().is_main_process:
        print(*args, flush=True)


# ------------------------------------------------------------------------------------------ data
def load_collection(data: DataConfig):
    """The judged collection named by ``data`` (local BEIR folder, or BEIR-style Hub datasets)."""
    if data.source == "hub":
        return load_hub_collection(data)
    from negsynth_hf.data import load_beir
    from negsynth_hf.paths import shared_data_dir

    folder = Path(data.dataset)
    if not folder.is_dir():
        folder = shared_data_dir() / data.dataset
    if not folder.is_dir():
        raise ConfigError(
            f"data.dataset={data.dataset!r} is neither a folder nor a collection under {shared_data_dir()} "
            "(set $NEGSYNTH_DATA_DIR, give a BEIR-layout folder, or use data.source: hub)."
        )
    return load_beir(folder, splits=sorted({data.train_split, data.test_split}))


def load_hub_collection(data: DataConfig):
    """BEIR-style Hub datasets: ``<id>`` with configs ``corpus``/``queries`` and ``<id>-qrels`` with splits.

    Needs the network (untested offline). Same BeirCollection as the local path, so every later step is shared.
    """
    from datasets import load_dataset

    from negsynth_hf.data import BeirCollection

    corpus_ds = load_dataset(data.dataset, "corpus", split="corpus")
    queries_ds = load_dataset(data.dataset, "queries", split="queries")
    qrels_id = data.qrels_dataset or f"{data.dataset}-qrels"
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in sorted({data.train_split, data.test_split}):
        table: dict[str, dict[str, int]] = {}
        for row in load_dataset(qrels_id, split=split):
            score = int(float(row["score"]))
            if score > 0:
                table.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = score
        qrels[split] = table
    return BeirCollection(
        name=data.dataset.split("/")[-1],
        corpus={str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""} for r in corpus_ds},
        queries={str(r["_id"]): r.get("text") or "" for r in queries_ds},
        qrels=qrels,
    )


def source_dataset_ids(cfg: RecipeConfig) -> list[str] | None:
    if cfg.data.source_dataset_id:
        return [cfg.data.source_dataset_id]
    if cfg.data.source == "hub":
        return [cfg.data.dataset]
    return None


# ------------------------------------------------------------------------------------------ build
@dataclass
class BuildOutput:
    dataset_dir: str
    rows: int
    num_train_queries: int
    num_validation_queries: int
    seconds: float


def _generator_config(cfg: RecipeConfig, rank: int):
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


def _build_kwargs(cfg: RecipeConfig, generator, retriever: str) -> dict[str, Any]:
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
        if b.query_editor != "llm":  # only when set: build_options may still pass it
            kwargs["query_editor"] = b.query_editor
    overlap = set(kwargs) & set(b.build_options)
    if overlap - {"seed"}:
        raise ConfigError(f"build.build_options repeats {sorted(overlap)}: set those as build keys instead.")
    return {**kwargs, **b.build_options}


def run_build(cfg: RecipeConfig) -> BuildOutput:
    """Pairs -> build_dataset -> save. With N processes each rank synthesizes its shard (its own endpoint) into
    the shared response cache; rank 0 then assembles the full set from that cache (no LLM call is repeated) so
    that mining margins, verification and the cross-row source probe see the merged data."""
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.build import build_dataset
    from negsynth_hf.data import corpus_texts, pairs_dataset, split_train_validation
    from negsynth_hf.training import resolve_model_path

    start = time.perf_counter()
    state = _state()
    collection = load_collection(cfg.data)
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
    corpus = corpus_texts(collection)
    if cfg.build.corpus_size is not None:
        from negsynth_hf.training import subset_corpus

        table = collection.qrels[cfg.data.train_split]
        judged = {q: set(table.get(q, {})) for q in set(pairs["query_id"])}
        docs = {d: collection.doc_text(d) for d in collection.corpus}
        corpus = [
            t
            for t in subset_corpus(docs, judged, corpus_size=cfg.build.corpus_size, seed=cfg.run.seed).values()
            if t.strip()
        ]
    retriever = resolve_model_path(cfg.build.retriever or cfg.run.base_model)
    _print(
        f"[build] {collection.name}/{cfg.data.train_split}: {len(pairs)} pairs, {len(val_ids)} validation queries held out, corpus {len(corpus):,} docs"
    )

    if state.num_processes > 1 and cfg.build.generator is not None:
        shard = pairs.shard(num_shards=state.num_processes, index=state.process_index, contiguous=True)
        logger.info("rank %d synthesizing %d rows", state.process_index, len(shard))
        build_dataset(
            shard,
            corpus=corpus,
            show_progress_bar=False,
            **_build_kwargs(cfg, _generator_config(cfg, state.process_index), retriever),
        )
        state.wait_for_everyone()

    output_dir = cfg.dataset_dir
    rows = 0
    if state.is_main_process:
        result = build_dataset(pairs, corpus=corpus, **_build_kwargs(cfg, _generator_config(cfg, 0), retriever))
        recipe_info = {
            "source": {
                "type": cfg.data.source,
                "dataset": cfg.data.dataset,
                "collection": collection.name,
                "train_split": cfg.data.train_split,
                "test_split": cfg.data.test_split,
            },
            "num_train_queries": len(set(pairs["query_id"])) if "query_id" in pairs.column_names else len(pairs),
            "train_query_ids": sorted(set(pairs["query_id"])) if "query_id" in pairs.column_names else [],
            "validation_query_ids": val_ids,
            "validation_fraction": cfg.data.validation_fraction,
            "max_train_queries": cfg.data.max_train_queries,
            "num_processes": state.num_processes,
            "retriever_id": _public_model_id(cfg.build.retriever, cfg),
            "recipe": cfg.build.__dict__ | {"generator": _public_generator(cfg.build.generator)},
        }
        known = list(pairs["known_positives"]) if "known_positives" in pairs.column_names else None
        BuiltDataset.from_build_result(result, recipe_info=recipe_info, known_positives=known).save(output_dir)
        rows = len(result.train)
        _print(f"[build] saved {rows} rows to {output_dir}")
    state.wait_for_everyone()
    return BuildOutput(str(output_dir), rows, len(train_ids), len(val_ids), round(time.perf_counter() - start, 1))


def _public_model_id(spec: str | None, cfg: RecipeConfig) -> str:
    """A model name fit for cards: the Hub id, never a local path of this machine."""
    if spec is None or spec == cfg.run.base_model:
        return cfg.run.resolved_base_model_id() or Path(cfg.run.base_model).name
    return Path(spec).name if Path(spec).exists() else spec


def _public_generator(gen: dict[str, Any] | None) -> dict[str, Any] | None:
    if gen is None:
        return None
    return {
        k: v
        for k, v in gen.items()
        if k == "api_key_env" or not any(s in k.lower() for s in ("key", "token", "secret"))
    }


# ------------------------------------------------------------------------------------------ train
def run_train(cfg: RecipeConfig):
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.data import evaluator_inputs
    from negsynth_hf.training import ir_evaluator, train

    built = BuiltDataset.load(cfg.train_dataset_dir)
    evaluator = None
    if built.validation_query_ids:
        collection = load_collection(cfg.data)
        queries, corpus, relevant = evaluator_inputs(
            collection, cfg.data.train_split, query_ids=built.validation_query_ids
        )
        evaluator = ir_evaluator(
            queries,
            corpus,
            relevant,
            name=f"{collection.name}-validation",
            corpus_size=cfg.train.validation_corpus_size,
            seed=cfg.run.seed,
        )
    known = built.known_positives if cfg.train.known_positive_batches else None
    if known is not None and len(known) != len(built.train):
        raise ValueError(
            f"{cfg.train_dataset_dir}: known_positives.json has {len(known)} rows but the dataset has "
            f"{len(built.train)}; rebuild, or pass --known_positive_batches false."
        )
    _print(
        f"[train] {len(built.train)} rows, loss={cfg.train.loss}, lora={cfg.train.lora}, "
        f"validation queries={len(evaluator.queries) if evaluator else 0}, batches: "
        f"{'no known positive of a query in its batch' if known is not None else 'NO_DUPLICATES'}"
    )
    result = train(
        built.train,
        base_model=cfg.run.base_model,
        config=cfg.train,
        output_dir=cfg.model_dir,
        evaluator=evaluator,
        seed=cfg.run.seed,
        known_positives=known,
    )
    _print(f"[train] {result.steps} steps in {result.train_seconds:.0f}s -> {result.merged_dir}")
    return result


# ------------------------------------------------------------------------------------------ evaluate
def run_evaluate(cfg: RecipeConfig):
    from negsynth_hf.evaluation import EvaluationResult, evaluate_models

    state = _state()
    result: EvaluationResult | None = None
    if state.is_main_process:
        collection = load_collection(cfg.data)
        models = {"base": cfg.run.base_model} if cfg.evaluate.evaluate_base else {}
        models["trained"] = str(cfg.eval_model_dir)
        if not Path(models["trained"]).exists():
            raise ConfigError(f"trained model {models['trained']} does not exist: run `negsynth train` first.")
        _print(f"[evaluate] {collection.name}/{cfg.data.test_split}: {', '.join(models)}")
        result = evaluate_models(
            collection,
            models,
            split=cfg.data.test_split,
            max_queries=cfg.evaluate.max_test_queries,
            corpus_size=cfg.evaluate.test_corpus_size,
            batch_size=cfg.evaluate.eval_batch_size,
            seed=cfg.run.seed,
            # one truncation for every model: a trained model saves train.max_seq_length, the base keeps its own
            max_seq_length=cfg.evaluate.eval_max_seq_length or cfg.train.max_seq_length,
        )
        result.save(cfg.eval_dir)
        _print(result.to_markdown())
    state.wait_for_everyone()
    return result


# ------------------------------------------------------------------------------------------ diagnose
def run_diagnose(cfg: RecipeConfig):
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.diagnostics import diagnose
    from negsynth_hf.training import resolve_model_path

    state = _state()
    report = None
    if state.is_main_process:
        built = BuiltDataset.load(cfg.dataset_dir)
        model = resolve_model_path(cfg.diagnose.diagnose_model or cfg.build.retriever or cfg.run.base_model)
        figures = cfg.diagnose.figures
        if figures:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                figures = False
                logger.warning("matplotlib is not installed: no figures (pip install 'negsynth-hf[plots]').")
        report = diagnose(
            built.train,
            model,
            output_dir=str(cfg.diagnostics_dir),
            max_rows=cfg.diagnose.diagnose_max_rows,
            seed=cfg.run.seed,
            figures=figures,
        )
        _print(f"[diagnose] report written to {cfg.diagnostics_dir}")
    state.wait_for_everyone()
    return report


# ------------------------------------------------------------------------------------------ publish
def run_publish(cfg: RecipeConfig):
    """Stage everything that exists (dataset, merged model, adapter), then upload unless dry_run."""
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.evaluation import EvaluationResult
    from negsynth_hf.publish import StagingResult, UploadTarget, hub_token, stage_dataset, stage_models, upload_targets

    state = _state()
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    p = cfg.publish
    if not p.dry_run and not (p.dataset_repo_id or p.model_repo_id):
        raise ConfigError("publish needs dataset_repo_id and/or model_repo_id (or --dry_run to stage only).")
    base_id = cfg.run.resolved_base_model_id()
    if base_id is None:
        raise ConfigError(
            f"run.base_model={cfg.run.base_model!r} is a local path: set run.base_model_id to its Hub id "
            "(published adapters and cards must not point at a local folder)."
        )
    name = (cfg.data.dataset_pretty_name or Path(cfg.data.dataset).name.split("/")[-1]).lower().replace(" ", "-")
    placeholder = "your-hf-username"
    dataset_repo = p.dataset_repo_id or (f"{placeholder}/{name}-negsynth" if p.dry_run else None)
    model_repo = p.model_repo_id or (f"{placeholder}/{base_id.split('/')[-1]}-{name}-negsynth" if p.dry_run else None)
    adapter_repo = p.adapter_repo_id or (f"{model_repo}-lora" if model_repo else None)
    root = cfg.staging_dir
    root.mkdir(parents=True, exist_ok=True)
    staging = StagingResult(root=str(root))
    source_name = cfg.data.dataset_pretty_name or Path(cfg.data.dataset).name
    example = None
    if dataset_repo and cfg.dataset_dir.exists():
        built = BuiltDataset.load(cfg.dataset_dir)
        folder = stage_dataset(
            built,
            root / "dataset",
            repo_id=dataset_repo,
            base_model_id=base_id,
            license=cfg.data.dataset_license,
            source_datasets=source_dataset_ids(cfg),
            source_name=source_name,
        )
        staging.targets.append(UploadTarget(str(folder), dataset_repo, "dataset"))
        example = (built.train[0]["anchor"], built.train[0]["positive"]) if len(built.train) else None
    elif dataset_repo:
        staging.notes.append(f"no built dataset at {cfg.dataset_dir}: dataset not staged")
    if model_repo and (cfg.model_dir / "training_summary.json").exists():
        eval_result = EvaluationResult.load(cfg.eval_dir) if (cfg.eval_dir / "results.json").exists() else None
        staged = stage_models(
            cfg.model_dir,
            root,
            model_repo_id=model_repo,
            adapter_repo_id=adapter_repo,
            base_model_id=base_id,
            eval_result=eval_result,
            dataset_repo_id=dataset_repo,
            dataset_name=source_name,
            source_name=source_name,
            license=p.model_license,
            example=example,
            eval_dataset_id=(source_dataset_ids(cfg) or [cfg.data.dataset])[0],
        )
        staging.targets.append(UploadTarget(str(staged["model"]), model_repo, "model"))
        if "adapter" in staged and adapter_repo:
            staging.targets.append(UploadTarget(str(staged["adapter"]), adapter_repo, "model"))
    elif model_repo:
        staging.notes.append(f"no trained model at {cfg.model_dir}: models not staged")
    staging.save_plan()
    for t in staging.targets:
        _print(f"[publish] staged {t.repo_type} {t.repo_id} <- {t.folder}")
    for note in staging.notes:
        _print(f"[publish] {note}")
    if p.dry_run:
        _print(f"[publish] dry run: nothing uploaded; inspect {root} (exactly what would be uploaded)")
    else:
        if not staging.targets:
            raise ConfigError("nothing to upload: " + "; ".join(staging.notes))
        for r in upload_targets(
            staging.targets, private=p.private, token=hub_token(p.token_env), commit_message=p.commit_message
        ):
            _print(f"[publish] uploaded {r.repo_type} {r.repo_id}: {r.url}")
    state.wait_for_everyone()
    return staging


RUNNERS = {
    "build": run_build,
    "train": run_train,
    "evaluate": run_evaluate,
    "diagnose": run_diagnose,
    "publish": run_publish,
}


def run_step(step: str, argv: list[str] | None = None, *, prog: str | None = None) -> Any:
    """Parse ``argv`` for ``step`` and run it (the recipes and the CLI both come here)."""
    if step == "demo":
        from negsynth_hf.demo import demo_config, run_demo

        return run_demo(demo_config(argv))
    return RUNNERS[step](parse_step_args(step, argv, prog=prog))


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("negsynth_hf").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def recipe_main(step: str, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point of ``recipes/<step>.py`` and of each ``negsynth <step>``: config errors exit 2 with a message."""
    _setup_logging()
    try:
        run_step(step, argv, prog=prog)
    except ConfigError as err:
        print(f"{prog or 'negsynth ' + step}: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``negsynth <command> [--config FILE] [--key value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(TOP_HELP.format(commands="\n".join(f"  {k:<9} {v}" for k, v in COMMANDS.items())))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"negsynth: unknown command {command!r}; commands: {', '.join(COMMANDS)} (see negsynth --help)",
            file=sys.stderr,
        )
        return 2
    return recipe_main(command, rest, prog=f"negsynth {command}")


__all__ = [
    "COMMANDS",
    "format_help",
    "load_collection",
    "main",
    "recipe_main",
    "run_build",
    "run_diagnose",
    "run_evaluate",
    "run_publish",
    "run_step",
    "run_train",
]

if __name__ == "__main__":
    sys.exit(main())
