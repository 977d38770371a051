"""What the reference retriever and the texts themselves say about each generated negative (no decision).

Small LLMs asked for a related passage that does not answer a query often answer it anyway (the
generative-discriminative gap). Every generated negative is therefore scored by a reference retriever against its
query and positive; the guard policy (:mod:`~negsynth_hf.verification.policy`) decides from these findings.

- the *margin band*, with sentence-transformers' margin semantics (exactly as ``mine_hard_negatives``):
  ``absolute_margin=m``: in the band if ``sim(q, neg) + m > sim(q, pos)``; ``relative_margin=r``: in the band if
  ``sim(q, neg) > sim(q, pos) - |sim(q, pos)| * r`` (equal to ``sim(q, pos) * (1 - r)`` for positive scores, and
  sign-safe otherwise, as the installed ST does);
- a *near-duplicate* of the positive (token Jaccard >= 0.8, or retriever similarity to the positive >= 0.97): the
  positive in other words, so training against it pushes the query away from its own answer;
- a text *containing the whole query*: only flagged by the margin policy, because a counterfactual may
  legitimately restate the query while breaking one detail.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NEAR_DUPLICATE_JACCARD = 0.8
NEAR_DUPLICATE_SIMILARITY = 0.97
#: the flags a finding adds to a negative's provenance ``flags``
NEAR_DUPLICATE_FLAG = "near_duplicate_of_positive"
CONTAINS_QUERY_FLAG = "contains_query"
MARGIN_FLAG = "scores_above_positive"


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def token_jaccard(a: str, b: str) -> float:
    ta, tb = set(_normalize(a).split()), set(_normalize(b).split())
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def contains_query(text: str, query: str) -> bool:
    """Whether the normalized query occurs as a whole inside the normalized text."""
    nq = _normalize(query)
    return bool(nq) and f" {nq} " in f" {_normalize(text)} "


def margin_violation(
    neg_score: float, pos_score: float, *, absolute_margin: float | None, relative_margin: float | None
) -> str | None:
    """Why a negative fails sentence-transformers' margin filter, or ``None`` if it passes."""
    if absolute_margin is not None and neg_score + absolute_margin > pos_score:
        return f"sim(q,neg)={neg_score:.3f} > sim(q,pos)={pos_score:.3f} - absolute_margin {absolute_margin}"
    if relative_margin is not None and neg_score > pos_score - abs(pos_score) * relative_margin:
        return f"sim(q,neg)={neg_score:.3f} > sim(q,pos)={pos_score:.3f} - |sim(q,pos)| * relative_margin {relative_margin}"
    return None


@dataclass
class Findings:
    """Per negative (input order): retriever similarities, the margin band and the text checks.

    ``margin_reasons[i]`` says why negative ``i`` is inside the margin band (``None``: outside it).
    """

    sim_query: np.ndarray
    sim_positive: np.ndarray
    sim_query_positive: np.ndarray
    near_duplicate: list[bool]
    contains_query: list[bool]
    margin_reasons: list[str | None]

    def __len__(self) -> int:
        return len(self.margin_reasons)

    def flags(self, i: int) -> tuple[str, ...]:
        """Negative ``i``'s provenance flags."""
        named = (
            (NEAR_DUPLICATE_FLAG, self.near_duplicate[i]),
            (CONTAINS_QUERY_FLAG, self.contains_query[i]),
            (MARGIN_FLAG, self.margin_reasons[i] is not None),
        )
        return tuple(name for name, on in named if on)


def find(
    queries: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str],
    *,
    model: Any = None,
    embeddings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    absolute_margin: float | None = 0.0,
    relative_margin: float | None = None,
    near_duplicate_jaccard: float = NEAR_DUPLICATE_JACCARD,
    near_duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> Findings:
    """Score each ``(queries[i], positives[i], negatives[i])`` triple.

    Args:
        model: the reference ``SentenceTransformer`` (needed unless ``embeddings`` are given).
        embeddings: precomputed normalized ``(query, positive, negative)`` embeddings, row-aligned.
        absolute_margin / relative_margin: the margin band on retriever cosine similarities (``None`` disables one).
        near_duplicate_jaccard / near_duplicate_similarity: near-duplicate-of-positive thresholds.
    """
    n = len(negatives)
    if not (len(queries) == len(positives) == n):
        raise ValueError(f"queries, positives and negatives must align, got {len(queries)}, {len(positives)}, {n}.")
    if embeddings is None:
        if model is None:
            raise ValueError("find needs a reference model or precomputed embeddings.")
        embeddings = tuple(
            np.asarray(
                model.encode(
                    list(t), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress_bar
                )
            ).reshape(n, -1)
            for t in (queries, positives, negatives)
        )  # type: ignore[assignment]
    q, p, d = embeddings  # type: ignore[misc]
    sim_q = np.sum(q * d, axis=1) if n else np.zeros(0)
    sim_p = np.sum(p * d, axis=1) if n else np.zeros(0)
    sim_qp = np.sum(q * p, axis=1) if n else np.zeros(0)
    near = [
        token_jaccard(neg, pos) >= near_duplicate_jaccard or float(s) >= near_duplicate_similarity
        for neg, pos, s in zip(negatives, positives, sim_p, strict=True)
    ]
    margin = [
        margin_violation(float(a), float(b), absolute_margin=absolute_margin, relative_margin=relative_margin)
        for a, b in zip(sim_q, sim_qp, strict=True)
    ]
    inside = [contains_query(neg, query) for neg, query in zip(negatives, queries, strict=True)]
    return Findings(sim_q, sim_p, sim_qp, near, inside, margin)
