"""``negsynth train | evaluate | diagnose``: one function per step, from a :class:`RecipeConfig` to its outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from negsynth_hf.pipeline.config import ConfigError, RecipeConfig
from negsynth_hf.pipeline.runtime import main_print, process_state
from negsynth_hf.pipeline.sources import load_collection

logger = logging.getLogger("negsynth_hf")


def load_built(folder: Path) -> Any:
    """The built dataset in ``folder``; a missing one is a ConfigError that says which step makes it."""
    from negsynth_hf.artifacts import BuiltDataset

    try:
        return BuiltDataset.load(folder)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None


def run_train(cfg: RecipeConfig) -> Any:
    """LoRA fine-tuning on the built dataset, with a validation evaluator on the held-out training queries."""
    from negsynth_hf.data import evaluator_inputs
    from negsynth_hf.training import ir_evaluator, train

    built = load_built(cfg.train_dataset_dir)
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
    main_print(
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
    main_print(f"[train] {result.steps} steps in {result.train_seconds:.0f}s -> {result.merged_dir}")
    return result


def run_evaluate(cfg: RecipeConfig) -> Any:
    """Base vs trained on the test split (main process), saved as results.json + results.md."""
    from negsynth_hf.evaluation import evaluate_models

    state = process_state()
    result = None
    if state.is_main_process:
        collection = load_collection(cfg.data)
        models = {"base": cfg.run.base_model} if cfg.evaluate.evaluate_base else {}
        models["trained"] = str(cfg.eval_model_dir)
        if not Path(models["trained"]).exists():
            raise ConfigError(f"trained model {models['trained']} does not exist: run `negsynth train` first.")
        main_print(f"[evaluate] {collection.name}/{cfg.data.test_split}: {', '.join(models)}")
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
        main_print(result.to_markdown())
    state.wait_for_everyone()
    return result


def run_diagnose(cfg: RecipeConfig) -> Any:
    """The gap report of the built dataset, through the retriever whose view is diagnosed."""
    from negsynth_hf.diagnostics import diagnose
    from negsynth_hf.training import resolve_model_path

    state = process_state()
    report = None
    if state.is_main_process:
        built = load_built(cfg.dataset_dir)
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
        main_print(f"[diagnose] report written to {cfg.diagnostics_dir}")
    state.wait_for_everyone()
    return report
