"""``TrainConfig``: the settings of :func:`negsynth_hf.training.train` (loss, LoRA, optimizer, batches).

A plain dataclass of the library layer: ``training`` reads it, the recipes' YAML ``train:`` section fills it
(:mod:`negsynth_hf.pipeline.config`), each field's ``help`` is what ``negsynth train --help`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def config_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its ``--help`` text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


_f = config_field


@dataclass
class TrainConfig:
    """``negsynth train``: LoRA (or full) fine-tuning with CausalNegLoss or a baseline loss."""

    train_dataset_dir: str | None = _f(None, "Built dataset to train on (default: build.dataset_dir).")
    model_dir: str | None = _f(None, "Output folder: adapter/ and merged/ (default <run_dir>/model).")
    loss: Literal["causalneg", "cached_causalneg", "mined", "in_batch"] = _f(
        "causalneg",
        "'causalneg' (weights + entropy term), 'cached_causalneg' (same, GradCache), 'mined' (MNRL on mined "
        "negatives only), 'in_batch' (MNRL on pairs only).",
    )
    in_batch_negatives: bool = _f(True, "CausalNeg: other rows' positives/negatives are candidates too.")
    use_weights: Literal["weights", "mask", "none"] = _f(
        "weights",
        "CausalNeg: 'weights' = apply the gap-correction weights; 'mask' = as a 0/1 mask (ablation: every real "
        "negative counts once, filled/masked slots stay out); 'none' = ignore them (fillers count too).",
    )
    entropy_weight: float = _f(0.05, "CausalNeg: lambda of the query-view entropy term (0 = ablation).")
    entropy_temperature: float = _f(0.1, "CausalNeg: tau_ent of the entropy softmax.")
    scale: float = _f(20.0, "Inverse temperature of InfoNCE (20 = tau 0.05).")
    hardness_mode: Literal["in_batch_negatives", "hard_negatives", "all_negatives"] | None = _f(
        None,
        "MNRL's hardness weighting (every loss): alpha * stop_grad(sim) added to negative logits; "
        "'hard_negatives' = each row's own negatives (EmbeddingGemma). null = off.",
    )
    hardness_strength: float = _f(0.0, "alpha of the hardness weighting (EmbeddingGemma 5, Lan et al. 9).")
    mini_batch_size: int = _f(32, "cached_causalneg: GradCache mini-batch size.")
    known_positive_batches: bool = _f(
        True,
        "Batch so that no document judged relevant to a query is its in-batch negative (KnownPositivesBatchSampler; "
        "uses the build's known_positives.json, plain NO_DUPLICATES without one).",
    )
    gather_across_devices: bool = _f(False, "Multi-GPU: gather embeddings across processes for in-batch negatives.")
    lora: bool = _f(True, "Train a LoRA adapter (peft) instead of all weights.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_target_modules: list[str] = _f(["query", "value"], "Modules that get LoRA weights.")
    per_device_train_batch_size: int = _f(16, "Rows per batch per process.")
    learning_rate: float = _f(2e-4, "Peak learning rate.")
    num_train_epochs: float = _f(1.0, "Epochs (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = use epochs).")
    warmup_ratio: float = _f(0.1, "Linear warm-up share of the steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_seq_length: int | None = _f(256, "Truncate inputs to this many tokens (null = model default).")
    logging_steps: int = _f(10, "Log losses every N steps.")
    eval_steps: int | None = _f(None, "Run the validation evaluator every N steps (null = only at the end).")
    validation_corpus_size: int | None = _f(
        2000, "Documents in the validation evaluator: the judged ones plus random distractors (null = all)."
    )
    bf16: bool = _f(False, "bf16 mixed precision (GPU).")
    fp16: bool = _f(False, "fp16 mixed precision (GPU).")
    report_to: str = _f("none", "Trainer loggers: none, tensorboard, wandb, ...")
