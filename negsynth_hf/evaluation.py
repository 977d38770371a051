"""Base vs trained retrieval quality on a judged test split: nDCG@10, MRR@10, Recall@100 -> JSON + markdown."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from negsynth_hf.data import BeirCollection, evaluator_inputs
from negsynth_hf.training import ir_evaluator, load_model

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"

# (label in tables/cards, evaluator key suffix, model-index metric type)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("nDCG@10", "cosine_ndcg@10", "ndcg_at_10"),
    ("MRR@10", "cosine_mrr@10", "mrr_at_10"),
    ("Recall@100", "cosine_recall@100", "recall_at_100"),
)


@dataclass
class ModelScores:
    name: str
    model: str
    metrics: dict[str, float]
    seconds: float


@dataclass
class EvaluationResult:
    """Scores of each evaluated model on one split, with what was evaluated (for cards and reruns)."""

    dataset: str
    split: str
    num_queries: int
    corpus_size: int
    full_corpus_size: int
    models: list[ModelScores] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        models = [ModelScores(**m) for m in data.get("models", [])]
        return cls(**{**data, "models": models})

    @classmethod
    def load(cls, folder: str | Path) -> EvaluationResult:
        return cls.from_dict(json.loads((Path(folder) / RESULTS_JSON).read_text(encoding="utf-8")))

    def scores(self, name: str) -> dict[str, float] | None:
        return next((m.metrics for m in self.models if m.name == name), None)

    def to_markdown(self) -> str:
        subset = "" if self.corpus_size == self.full_corpus_size else f" (subset of {self.full_corpus_size:,})"
        lines = [
            f"{self.dataset} `{self.split}`: {self.num_queries} queries, {self.corpus_size:,} documents{subset}.",
            "",
            "| model | " + " | ".join(label for label, _, _ in METRICS) + " |",
            "| --- | " + " | ".join("---:" for _ in METRICS) + " |",
        ]
        for m in self.models:
            lines.append(
                f"| {m.name} | "
                + " | ".join(f"{m.metrics.get(label, float('nan')):.4f}" for label, _, _ in METRICS)
                + " |"
            )
        base, trained = self.scores("base"), self.scores("trained")
        if base and trained:
            lines.append(
                "| Δ (trained − base) | "
                + " | ".join(f"{trained[label] - base[label]:+.4f}" for label, _, _ in METRICS)
                + " |"
            )
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULTS_JSON).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        (folder / RESULTS_MD).write_text(self.to_markdown(), encoding="utf-8")
        return folder


def pick_metrics(raw: dict[str, float]) -> dict[str, float]:
    """The three reported metrics from an InformationRetrievalEvaluator result (whatever its ``name``)."""
    out: dict[str, float] = {}
    for label, suffix, _ in METRICS:
        key = next((k for k in raw if k.endswith(suffix)), None)
        if key is None:
            raise KeyError(f"evaluator output has no '*{suffix}' key; keys: {sorted(raw)}")
        out[label] = float(raw[key])
    return out


def evaluate_models(
    collection: BeirCollection,
    models: dict[str, str],
    *,
    split: str = "test",
    max_queries: int | None = None,
    corpus_size: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    max_seq_length: int | None = None,
    show_progress_bar: bool = True,
) -> EvaluationResult:
    """Evaluate each ``{name: model path or 'embedded'}`` on the same queries and documents.

    ``max_queries`` samples test queries (seeded); ``corpus_size`` keeps every judged document and adds seeded
    random distractors (documented in the result, since it makes scores higher than on the full corpus).
    """
    evaluator, full_corpus_size = split_evaluator(
        collection,
        split,
        max_queries=max_queries,
        corpus_size=corpus_size,
        seed=seed,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
    )
    result = EvaluationResult(
        dataset=collection.name,
        split=split,
        num_queries=len(evaluator.queries),
        corpus_size=len(evaluator.corpus),
        full_corpus_size=full_corpus_size,
    )
    for name, spec in models.items():
        start = time.perf_counter()
        model = load_model(spec, max_seq_length=max_seq_length)
        metrics = pick_metrics(evaluator(model))
        result.models.append(
            ModelScores(name=name, model=str(spec), metrics=metrics, seconds=round(time.perf_counter() - start, 2))
        )
    return result


def split_evaluator(
    collection: BeirCollection,
    split: str,
    *,
    query_ids: list[str] | None = None,
    max_queries: int | None = None,
    corpus_size: int | None = None,
    seed: int = 0,
    name: str | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> tuple[Any, int]:
    """``(IR evaluator, full corpus size)`` for ``split``'s queries (or ``query_ids`` among them).

    ``max_queries`` samples the queries with ``seed`` (kept in their split order); ``corpus_size`` subsets the
    corpus as :func:`negsynth_hf.training.ir_evaluator` does. Every evaluation of a split goes through here, so
    the same arguments always score the same queries against the same documents.
    """
    ids = query_ids if query_ids is not None else collection.split_query_ids(split)
    if max_queries is not None and len(ids) > max_queries:
        ids = sorted(random.Random(seed).sample(ids, max_queries), key=ids.index)
    queries, corpus, relevant = evaluator_inputs(collection, split, query_ids=ids)
    evaluator = ir_evaluator(
        queries,
        corpus,
        relevant,
        name=name or f"{collection.name}-{split}",
        corpus_size=corpus_size,
        seed=seed,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
    )
    return evaluator, len(corpus)
