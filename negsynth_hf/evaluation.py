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
    #: paired tests over the queries (``negsynth_hf.significance.PairedTest.to_dict()``): trained vs base
    significance: list[dict[str, Any]] = field(default_factory=list)

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
        p = {t["metric"]: t["p_value"] for t in self.significance}
        if p:
            cells = " | ".join(f"{p[key]:.3f}" if key in p else "" for _, key, _ in _PAIRED)
            lines.append(f"| p (paired randomization test) | {cells} |")
            lines += [
                "",
                f"p: two-sided paired randomization test over the {self.num_queries} queries (SciPy's "
                "permutation_test on ranx's per-query scores); < 0.05 = unlikely to be noise.",
            ]
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULTS_JSON).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        (folder / RESULTS_MD).write_text(self.to_markdown(), encoding="utf-8")
        return folder


# (label, ranx metric, evaluator suffix): the same three metrics, per query
_PAIRED = (("nDCG@10", "ndcg@10", "cosine_ndcg@10"), ("MRR@10", "mrr@10", "cosine_mrr@10"),
           ("Recall@100", "recall@100", "cosine_recall@100"))  # fmt: skip


def per_query(evaluator: Any, model: Any, *, optional: bool = True) -> dict[str, dict[str, float]] | None:
    """``{metric: {query_id: score}}`` on the evaluator's own queries and documents (binary relevance, as the
    evaluator reads the qrels). ``None`` without ranx when ``optional`` (the table then has no p-values)."""
    try:
        from negsynth_hf.significance import per_query_scores, retrieval_run

        queries = dict(zip(evaluator.queries_ids, evaluator.queries, strict=True))
        corpus = dict(zip(evaluator.corpus_ids, evaluator.corpus, strict=True))
        qrels = {q: {d: 1 for d in evaluator.relevant_docs[q]} for q in queries}
        run = retrieval_run(model, queries, corpus, batch_size=evaluator.batch_size)
        return per_query_scores(qrels, run, [key for _, key, _ in _PAIRED])
    except ImportError:  # ranx is optional (the bench extra)
        if not optional:
            raise
        return None


def paired_tests(a: str, a_scores: dict, b: str, b_scores: dict) -> list[dict[str, Any]]:
    """a vs b on each metric, paired over the same queries (``negsynth_hf.significance.paired_test``)."""
    from negsynth_hf.significance import paired_test

    return [paired_test(a, a_scores[k], b, b_scores[k], metric=k).to_dict() for _, k, _ in _PAIRED]


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
    significance: bool = True,
) -> EvaluationResult:
    """Evaluate each ``{name: model path or 'embedded'}`` on the same queries and documents.

    With ``significance`` (and ``ranx`` installed) and models named ``base`` and ``trained``, the per-query scores
    of both go through a paired randomization test (:mod:`negsynth_hf.significance`), in ``result.significance``.

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
    scores: dict[str, Any] = {}
    for name, spec in models.items():
        start = time.perf_counter()
        model = load_model(spec, max_seq_length=max_seq_length)
        metrics = pick_metrics(evaluator(model))
        if significance and {"base", "trained"} <= set(models):
            scores[name] = per_query(evaluator, model)
        result.models.append(
            ModelScores(name=name, model=str(spec), metrics=metrics, seconds=round(time.perf_counter() - start, 2))
        )
    if scores.get("base") and scores.get("trained"):
        result.significance = paired_tests("trained", scores["trained"], "base", scores["base"])
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
