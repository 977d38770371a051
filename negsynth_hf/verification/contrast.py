"""The ``contrast`` guard policy: a query-edit negative is kept when it is about the edited query, not the original.

A query-edit negative is written for an edited query that changes one detail. It is a true counterfactual when
the edit makes sense and changes the meaning, and the passage follows the edit: it carries the replacement and
not the original detail, the retriever finds it close to the query (``sim(text, query) >= min_sim_query``: on
topic) and closer to the edited query than to the original one by at least ``min_contrast``
(``sim(text, edited) - sim(text, query)``). The retriever margin plays no part: a true
counterfactual is *meant* to score close to the query, which is why the margin rule masks most of them.

Masked, in order (each reason counted as ``guard_masked_<reason>``): degenerate texts and near-duplicates of the
positive (as under every policy). Negatives without an edited query (counterfactual or naive strategies) then keep
the margin rule. Query-edit negatives are masked when the text contains the whole query, the edit is of a kind the
profile marks relevant, the text is commentary instead of a passage
(:func:`~negsynth_hf.synthesis.quality.looks_like_commentary`), the edit cannot make a counterfactual
(:func:`~negsynth_hf.synthesis.edits.edit_problem`: ``edit_<code>``), the passage does not carry the edit
(:func:`~negsynth_hf.verification.checks.edit_check` other than ``replacement_only``: ``edit_not_carried``), the
text is far from the query (``off_topic``) or its contrast is below ``min_contrast`` (``low_contrast``).

The default thresholds were chosen on the development half of hand-labelled negatives
(``benchmarks/data/labels``, ``benchmarks/guard_eval.py``); the held-out half's precision and recall are in
``benchmarks/results/guard_eval.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from negsynth_hf.synthesis.edits import edit_problem
from negsynth_hf.synthesis.quality import looks_like_commentary

# chosen on the labelled development half (benchmarks/guard_eval.py: the best pooled F0.5 of SciFact and
# Cranfield over a grid); recorded with the whole grid in benchmarks/results/guard_eval.json
DEFAULT_MIN_CONTRAST = 0.03
DEFAULT_MIN_SIM_QUERY = 0.5


@dataclass(frozen=True)
class ContrastSignals:
    """The retriever's view of one query-edit negative: similarity of the text to the original and edited query."""

    sim_query: float
    sim_edited: float

    @property
    def contrast(self) -> float:
        return self.sim_edited - self.sim_query


def contrast_signals(encoder: Any, queries: Sequence[str], edited: Sequence[str], texts: Sequence[str],
                     *, batch_size: int = 32) -> list[ContrastSignals]:  # fmt: skip
    """One batch through ``encoder`` (a SentenceTransformer: queries with its query prompt, texts as documents)."""
    from negsynth_hf.embeddings import embed_rows

    if not texts:
        return []
    q = embed_rows(encoder, [*queries, *edited], query=True, batch_size=batch_size)
    d = embed_rows(encoder, list(texts), query=False, batch_size=batch_size)
    n = len(texts)
    sim_q = np.sum(q[:n] * d, axis=1)
    sim_e = np.sum(q[n:] * d, axis=1)
    return [ContrastSignals(float(a), float(b)) for a, b in zip(sim_q, sim_e, strict=True)]


def contrast_rule(
    c: Any,
    ev: dict[str, Any],
    signals: ContrastSignals | None,
    *,
    min_contrast: float,
    min_sim_query: float,
    profile: Any,
) -> tuple[Literal["kept", "masked"], str, str]:
    """``(decision, reason, detail)`` for one candidate (a :class:`~negsynth_hf.verification.policy.Candidate`)
    whose degenerate and near-duplicate checks have passed; ``ev`` is its edit evidence (span, kind, check)."""
    span = ev.get("changed_span")
    if span is None or signals is None:  # no query edit (counterfactual, naive): the margin rule stands
        if c.margin_reason is not None:
            return "masked", "margin", c.margin_reason
        return "kept", "margin_passed", ""
    if c.contains_query:
        return "masked", "contains_query", "the text contains the whole query"
    if ev.get("edit_kind") in profile.relevant_edit_kinds:
        return "masked", "profile_relevant_edit", f"{ev['edit_kind']} edits yield relevant documents here"
    if looks_like_commentary(c.text):
        return "masked", "commentary", "the text comments on the request instead of being a passage"
    problem = edit_problem(c.query, *span, edited=c.edited_query)
    if problem is not None:
        return "masked", f"edit_{problem.code}", problem.message
    if ev.get("edit_check") != "replacement_only":
        return "masked", "edit_not_carried", f"edit check: {ev.get('edit_check')}"
    if signals.sim_query < min_sim_query:
        return "masked", "off_topic", f"sim(text, query)={signals.sim_query:.3f} < {min_sim_query}"
    detail = f"sim(text, edited)-sim(text, query)={signals.contrast:.3f}"
    if signals.contrast < min_contrast:
        return "masked", "low_contrast", f"{detail} < {min_contrast}"
    return "kept", "contrast_passed", f"{detail} >= {min_contrast}"
