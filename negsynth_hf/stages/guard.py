"""Stage 3: embed every text once, then let the false-negative guard (:mod:`negsynth_hf.verify`) judge each
generated negative. The guard is reached through :func:`verify_generated` only, so its policy can change in
``verify.py`` and :mod:`negsynth_hf.verification.policy` (which rule, check or judge decides: ``GuardPolicy``)
without touching the build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negsynth_hf.embeddings import embed_texts
from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedItem


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
    """Per generated item (``GeneratedRows.items()`` order): valid or not, and the guard's full record."""

    valid: np.ndarray
    verification: Any  # negsynth_hf.verify.Verification, None when nothing was generated
    absolute_margin: float | None
    relative_margin: float | None
    decisions: list[Any] = field(default_factory=list)  # GuardDecision per item (the policy's record)
    policy_counts: dict[str, int] = field(default_factory=dict)  # guard_<decision>_<reason>
    judge_stats: dict[str, Any] = field(default_factory=dict)
    policy: str = "margin"


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
    judges: Sequence[Any],
    enabled: bool,
    policy: Any = None,
    records: Sequence[Any] = (),
    profile: Any = "generic",
) -> Verdicts:
    """Judge every generated item; ``enabled=False`` (the naive baseline) keeps all, with their flags recorded.

    ``policy`` (a :class:`~negsynth_hf.verification.policy.GuardPolicy`; ``None``: its default) decides from the
    retriever scores, the transform's per-negative ``records`` (the edit, the broken requirement) and its judge.
    Legacy ``judges`` veto under ``margin`` only.
    """
    from negsynth_hf.verification.policy import GuardPolicy
    from negsynth_hf.verify import verify_negatives

    policy = policy if policy is not None else GuardPolicy()
    if not enabled:
        policy = GuardPolicy(mode="off")
    guard_abs, guard_rel = guard_margins(absolute_margin, relative_margin)
    if not items:
        return Verdicts(np.zeros(0, dtype=bool), None, guard_abs, guard_rel, policy=policy.mode)
    queries = [rows.anchors[item.row] for item in items]
    positives = [rows.positives[item.row] for item in items]
    texts = [item.text for item in items]
    verification = verify_negatives(
        queries,
        positives,
        texts,
        embeddings=(emb.stack(queries, query=True), emb.stack(positives), emb.stack(texts)),
        absolute_margin=guard_abs,
        relative_margin=guard_rel,
        judges=judges if policy.mode == "margin" else (),
    )
    outcome = _decide(policy, verification, queries, positives, texts, [_meta(records, it) for it in items], profile)
    valid = np.array(outcome.valid, dtype=bool)
    if policy.mode == "margin":  # legacy judges may have vetoed after the margin rule
        valid &= verification.valid
    return Verdicts(valid, verification, guard_abs, guard_rel, outcome.decisions, outcome.counts,
                    outcome.judge_stats, policy.mode)  # fmt: skip


def _meta(records: Sequence[Any], item: GeneratedItem) -> Any:
    """The transform's record of one generated negative (``None`` when there is none)."""
    if item.row >= len(records):
        return None
    negatives = getattr(records[item.row], "negatives", ())
    return negatives[item.k] if item.k < len(negatives) else None


def _decide(
    policy: Any,
    v: Any,
    queries: list[str],
    positives: list[str],
    texts: list[str],
    metas: list[Any],
    profile: Any,
) -> Any:
    """The policy's decisions from the margin guard's findings, written back into ``v`` (reasons, counts)."""
    from negsynth_hf.synthesis.profiles import get_profile
    from negsynth_hf.synthesis.quality import DEGENERATE_FLAGS
    from negsynth_hf.verification.policy import Candidate, apply_policy

    margin = ["scores_above_positive" in f for f in v.flags]
    cands = [
        Candidate(
            query=q,
            positive=p,
            text=t,
            near_duplicate="near_duplicate_of_positive" in f,
            contains_query="contains_query" in f,
            margin_reason=v.reasons[i] if margin[i] else None,
            strategy_type=getattr(m, "strategy_type", None),
            violated_requirement=getattr(m, "violated_requirement", None),
            edited_query=getattr(m, "edited_query", None),
            degenerate=next((g for g in DEGENERATE_FLAGS if g in (getattr(m, "flags", None) or ())), None),
        )  # fmt: skip
        for i, (q, p, t, f, m) in enumerate(zip(queries, positives, texts, v.flags, metas, strict=True))
    ]
    outcome = apply_policy(policy, cands, get_profile(profile))
    masked = [d for d in outcome.decisions if d.masked]
    v.counts["degenerate"] = sum(d.reason == "degenerate" for d in masked)
    for i, d in enumerate(outcome.decisions):  # the reasons assemble reads follow the policy's decisions
        if d.reason == "degenerate":
            v.reasons[i] = f"{d.reason}: {d.detail}"
        elif policy.mode != "margin":
            kept_reason = v.reasons[i] if policy.mode == "off" else ""  # off: what the margin rule would have said
            v.reasons[i] = f"{d.reason}: {d.detail}".rstrip(": ") if d.masked else kept_reason
    if policy.mode == "margin":  # a degenerate text is counted once, as degenerate
        v.counts["margin"] = sum(d.reason == "margin" for d in masked)
        v.counts["near_duplicate"] = sum(d.reason == "near_duplicate" for d in masked)
    else:
        v.counts["margin"] = sum(d.reason in ("margin", "judge_failed_margin_fallback") for d in masked)
        v.counts["near_duplicate"] = sum(d.reason == "near_duplicate" for d in masked)
        v.counts["judge"] = len(masked) - v.counts["margin"] - v.counts["near_duplicate"] - v.counts["degenerate"]
    return outcome
