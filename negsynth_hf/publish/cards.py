"""Dataset and model cards rendered from ``model_cards/*.md`` (Jinja) with Hub metadata, without the network.

Cards are built with huggingface_hub's ``DatasetCard``/``ModelCard.from_template`` and ``*CardData``; nothing
here calls ``validate()`` or any Hub API (both would need the network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from negsynth_hf.evaluation import METRICS, EvaluationResult
from negsynth_hf.redaction import redact
from negsynth_hf.training import TrainResult

DATASET_TEMPLATE = "dataset_card.md"
MODEL_TEMPLATE = "model_card.md"
DATASET_TAGS = ["sentence-transformers", "synthetic", "hard-negatives", "retrieval", "negsynth"]
MODEL_TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "negsynth", "hard-negatives"]

PAPER_CITATION = """@inproceedings{causalneg2026,
  title     = {When Hard Negatives Hurt: Bridging the Generative-Discriminative Gap in Hard Negative Synthesis for Retrieval},
  booktitle = {Proceedings of the 32nd ACM SIGKDD Conference on Knowledge Discovery and Data Mining},
  year      = {2026},
  eprint    = {2606.01304},
  archivePrefix = {arXiv}
}"""


def template_path(name: str) -> Path:
    """``negsynth_hf/templates/<name>`` when packaged, else ``<checkout>/model_cards/<name>``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates" / name, here.parent / "model_cards" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"card template {name!r} not found in negsynth_hf/templates/ or model_cards/.")


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


@dataclass
class ConfigInfo:
    """One published dataset config (a folder of parquet shards)."""

    name: str
    rows: int
    columns: list[str]
    use: str
    splits: tuple[str, ...] = ("train",)
    default: bool = False

    def yaml_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "config_name": self.name,
            "data_files": [{"split": s, "path": f"{self.name}/{s}-*.parquet"} for s in self.splits],
        }
        if self.default:
            entry["default"] = True
        return entry


def dataset_card(
    *,
    repo_id: str,
    configs: list[ConfigInfo],
    info: dict[str, Any],
    summary_markdown: str = "",
    triplet_dropped: int = 0,
    base_model_id: str | None = None,
    license: str | None = None,
    source_datasets: list[str] | None = None,
    pretty_name: str | None = None,
    source_name: str | None = None,
    source_citation: str | None = None,
) -> DatasetCard:
    """The dataset card: configs/data_files YAML (so ``load_dataset(folder_or_repo, config)`` works), tags, text."""
    rows = max((c.rows for c in configs), default=0)
    pretty_name = pretty_name or f"{source_name or repo_id.split('/')[-1]} hard negatives (negsynth)"
    data = DatasetCardData(
        language="en",
        license=license,
        annotations_creators=["machine-generated"],
        language_creators=["found", "machine-generated"],
        multilinguality="monolingual",
        size_categories=size_category(rows),
        source_datasets=source_datasets or None,
        task_categories=["sentence-similarity", "text-retrieval"],
        pretty_name=pretty_name,
        tags=list(DATASET_TAGS),
        configs=[c.yaml_entry() for c in configs],
    )
    generator = info.get("generator") or None
    return DatasetCard.from_template(
        data,
        template_path=str(template_path(DATASET_TEMPLATE)),
        pretty_name=pretty_name,
        repo_id=repo_id,
        configs=configs,
        source_name=source_name or info.get("source", {}).get("dataset", "the source collection"),
        source_split=info.get("source", {}).get("train_split", "train"),
        num_queries=info.get("num_train_queries"),
        num_negatives=int(info.get("num_mined") or 0) + int(info.get("num_generated") or 0),
        num_mined=info.get("num_mined", "?"),
        num_generated=info.get("num_generated", 0),
        retriever=info.get("retriever_id") or base_model_id or "the base retriever",
        generator=generator,
        base_model_id=base_model_id or "sentence-transformers/all-MiniLM-L6-v2",
        settings_json=json.dumps(public_settings(info), indent=2, sort_keys=True, default=str),
        summary_markdown=public_text(summary_markdown, info).strip(),
        triplet_dropped=triplet_dropped,
        source_license=license,
        source_citation=source_citation,
    )


def public_text(text: str, info: dict[str, Any]) -> str:
    """``text`` with this machine's model folders replaced by public names (the retriever's Hub id)."""
    local = info.get("retriever")
    if isinstance(local, str) and local.startswith("/") and info.get("retriever_id"):
        text = text.replace(local, str(info["retriever_id"]))
    return text


def public_settings(info: dict[str, Any]) -> dict[str, Any]:
    """Build settings fit for a card: no query-id lists (long), no secret-looking values."""
    hidden = {"validation_query_ids", "train_query_ids", "mining_log", "summary"}
    public = {k: v for k, v in info.items() if k not in hidden}
    if "retriever_id" in public:  # build_dataset records the local folder it loaded; cards show the Hub id
        public["retriever"] = public.pop("retriever_id")
    return redact(public)


def model_card(
    *,
    repo_id: str,
    base_model_id: str,
    train_result: TrainResult,
    eval_result: EvaluationResult | None = None,
    is_adapter: bool = False,
    dataset_repo_id: str | None = None,
    dataset_name: str | None = None,
    merged_repo_id: str | None = None,
    adapter_repo_id: str | None = None,
    license: str = "apache-2.0",
    embedding_dim: int | None = None,
    max_seq_length: int | None = None,
    source_name: str | None = None,
    example_query: str = "What does this model retrieve?",
    example_document: str = "A passage that answers the query.",
    eval_dataset_id: str | None = None,
) -> ModelCard:
    """The model card (merged model or adapter): base model, datasets, loss config, model-index, usage, limits."""
    model_name = repo_id.split("/")[-1]
    eval_results = _eval_results(eval_result, eval_dataset_id=eval_dataset_id, source_name=source_name)
    tags = list(MODEL_TAGS) + [f"loss:{train_result.loss_name}"] + (["peft", "lora"] if is_adapter else [])
    data = ModelCardData(
        base_model=base_model_id,
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        eval_results=eval_results or None,
        language="en",
        library_name="sentence-transformers",
        license=license,
        metrics=[m for _, _, m in METRICS] if eval_results else None,
        model_name=model_name,
        pipeline_tag="sentence-similarity",
        tags=tags,
        base_model_relation="adapter" if is_adapter else "finetune",
    )
    hp = train_result.hyperparameters
    citation = "\n\n".join(c for c in (PAPER_CITATION, train_result.loss_citation.strip()) if c and c.strip())
    return ModelCard.from_template(
        data,
        template_path=str(template_path(MODEL_TEMPLATE)),
        model_name=model_name,
        repo_id=repo_id,
        is_adapter=is_adapter,
        base_model_id=base_model_id,
        dataset_repo_id=dataset_repo_id,
        dataset_name=dataset_name or "a negsynth hard-negative dataset",
        source_name=source_name,
        merged_repo_id=merged_repo_id,
        adapter_repo_id=adapter_repo_id,
        train_rows=train_result.train_rows,
        loss_name=train_result.loss_name,
        loss_config_json=json.dumps(train_result.loss_config, indent=2, sort_keys=True),
        lora=_lora(hp),
        steps=train_result.steps,
        batch_size=hp.get("per_device_train_batch_size", "?"),
        learning_rate=hp.get("learning_rate", "?"),
        embedding_dim=embedding_dim or "?",
        max_seq_length=max_seq_length or hp.get("max_seq_length") or "?",
        eval_markdown=eval_result.to_markdown() if eval_result else "",
        validation_markdown=_validation_table(train_result),
        example_query=_one_line(example_query),
        example_document=_one_line(example_document),
        citation=citation,
    )


def _eval_results(
    eval_result: EvaluationResult | None, *, eval_dataset_id: str | None, source_name: str | None
) -> list[EvalResult]:
    """The model-index entries: the trained model's score on each reported metric (none without one)."""
    trained = eval_result.scores("trained") if eval_result else None
    if eval_result is None or not trained:
        return []
    return [
        EvalResult(
            task_type="information-retrieval",
            task_name="Information Retrieval",
            dataset_type=eval_dataset_id or eval_result.dataset,  # what was evaluated, not the train set
            dataset_name=source_name or eval_result.dataset,
            dataset_split=eval_result.split,
            metric_type=metric_type,
            metric_name=label,
            metric_value=round(trained[label], 4),
        )
        for label, _, metric_type in METRICS
    ]


def _lora(hp: dict[str, Any]) -> dict[str, Any] | None:
    """The adapter's LoRA settings for the card, or None when training was full fine-tuning."""
    if not hp.get("lora"):
        return None
    return {
        "r": hp.get("lora_r"),
        "alpha": hp.get("lora_alpha"),
        "dropout": hp.get("lora_dropout"),
        "target_modules": hp.get("lora_target_modules", []),
    }


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validation_table(result: TrainResult) -> str:
    if not result.validation_after:
        return ""
    from negsynth_hf.evaluation import pick_metrics

    try:
        before = pick_metrics(result.validation_before) if result.validation_before else None
        after = pick_metrics(result.validation_after)
    except KeyError:
        return ""
    lines = [
        "| validation | " + " | ".join(label for label, _, _ in METRICS) + " |",
        "| --- | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    if before:
        lines.append("| before training | " + " | ".join(f"{before[k]:.4f}" for k, _, _ in METRICS) + " |")
    lines.append("| after training | " + " | ".join(f"{after[k]:.4f}" for k, _, _ in METRICS) + " |")
    return "\n".join(lines) + "\n"
