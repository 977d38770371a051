"""Stage 3: embed every text once, then let the false-negative guard decide on each generated negative.

The guard is reached through :func:`verify_generated` only: the retriever's findings come from
:mod:`negsynth_hf.verification.findings`, the decision from the :class:`~negsynth_hf.verification.GuardPolicy`
(:mod:`negsynth_hf.verification.policy`), so which rule, check or judge decides can change there without touching
the build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negsynth_hf.embeddings import embed_texts
from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedItem
from negsynth_hf.synthesis.profiles import get_profile
from negsynth_hf.verification.findings import Findings, find
from negsynth_hf.verification.policy import (
    GuardDecision,
    GuardPolicy,
    apply_policy,
    candidates,
    decision_counts,
    masked_counts,
)


@dataclass
class Embeddings:
    """Normalized query and document vectors of every text of the build, by text."""

    queries: dict[str, np.ndarray]
    documents: dict[str, np.ndarray]

    def sim(self, a: str, b: str) -> float:
        """Cosine of a query (or else document) ``a`` with document ``b``; NaN when either is unknown."""
        left = self.queries.get(a) if a in self.queries else self.documents.get(a)
        if left is None or b not in self.documents:
            return float("nan")
        return float(np.dot(left, self.documents[b]))

    def stack(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        table = self.queries if query else self.documents
        zeros = np.zeros(next(iter(self.documents.values())).shape[0], dtype=np.float32)
        return np.stack([table.get(t, zeros) for t in texts])


@dataclass
class Verdicts:
    """Per generated item (``GeneratedRows.items()`` order): the retriever's findings and the policy's decisions."""

    findings: Findings | None  # None when nothing was generated
    decisions: list[GuardDecision]
    absolute_margin: float | None
    relative_margin: float | None
    policy: str = "margin"
    judge_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return np.array([not d.masked for d in self.decisions], dtype=bool)

    def counts(self) -> dict[str, int]:
        """The summary's guard counts: ``masked_*`` by kind, ``flagged_contains_query``, then
        ``guard_<decision>_<reason>``."""
        flagged = sum(self.findings.contains_query) if self.findings is not None else 0
        return {**masked_counts(self.decisions), "flagged_contains_query": flagged, **decision_counts(self.decisions)}


def embed(
    model: Any,
    rows: PairRows,
    mined: MinedRows,
    items: Sequence[GeneratedItem],
    *,
    batch_size: int,
    show_progress_bar: bool,
) -> Embeddings:
    """Queries, positives, mined and generated texts, reusing what mining already embedded."""
    queries = embed_texts(model, rows.anchors, query=True, batch_size=batch_size, known=mined.query_embeddings)
    docs = rows.positives + [t for row in mined.negatives for t in row] + [item.text for item in items]
    documents = embed_texts(
        model,
        docs,
        query=False,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        known=mined.document_embeddings,
    )
    return Embeddings(queries, documents)


def guard_margins(absolute_margin: float | None, relative_margin: float | None) -> tuple[float | None, float | None]:
    """The mining margins are the guard's; with neither set a negative must at least score below the positive."""
    if absolute_margin is None and relative_margin is None:
        return 0.0, None
    return absolute_margin, relative_margin


def verify_generated(
    rows: PairRows,
    items: Sequence[GeneratedItem],
    emb: Embeddings,
    *,
    absolute_margin: float | None,
    relative_margin: float | None,
    policy: GuardPolicy,
    records: Sequence[Any] = (),
    profile: Any = "generic",
) -> Verdicts:
    """Decide every generated item with ``policy`` (``mode="off"``, the naive baseline, keeps all, flags recorded).

    The policy decides from the retriever's findings (:func:`~negsynth_hf.verification.findings.find`), the
    transform's per-negative ``records`` (the edit, the broken requirement, quality flags) and its judge.
    """
    guard_abs, guard_rel = guard_margins(absolute_margin, relative_margin)
    if not items:
        return Verdicts(None, [], guard_abs, guard_rel, policy=policy.mode)
    queries = [rows.anchors[item.row] for item in items]
    positives = [rows.positives[item.row] for item in items]
    texts = [item.text for item in items]
    findings = find(
        queries,
        positives,
        texts,
        embeddings=(emb.stack(queries, query=True), emb.stack(positives), emb.stack(texts)),
        absolute_margin=guard_abs,
        relative_margin=guard_rel,
    )
    metas = [_meta(records, item) for item in items]
    outcome = apply_policy(policy, candidates(findings, queries, positives, texts, metas), get_profile(profile))
    return Verdicts(findings, outcome.decisions, guard_abs, guard_rel, policy.mode, outcome.judge_stats)


def _meta(records: Sequence[Any], item: GeneratedItem) -> Any:
    """The transform's record of one generated negative (``None`` when there is none)."""
    if item.row >= len(records):
        return None
    negatives = getattr(records[item.row], "negatives", ())
    return negatives[item.k] if item.k < len(negatives) else None
