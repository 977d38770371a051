"""The relevance judge on MINED negatives (RLHN's idea): a mined "negative" the judge finds relevant is masked.

Mining trusts the qrels, and qrels are incomplete: a top-ranked unjudged document is often relevant (CISI's
queries have ~49 judged-relevant documents each, and more unjudged ones). RLHN (Thakur et al., 2025) re-labels
such hard negatives with an LLM and reports +0.7 to +1.4 nDCG@10 on BEIR. Here a mined negative with
p(relevant) >= ``threshold`` leaves the row's negatives: its slot holds a filler with weight 0 (``status``
``masked``, the text kept in provenance as ``original_text`` with its p), counted, never silently dropped. A
judge failure keeps the negative (mining's own decision stands), counted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from negsynth_hf.verification.policy import safe_judgments


@dataclass(frozen=True)
class MinedJudge:
    """Judge mined negatives with ``judge`` (a :class:`~negsynth_hf.verification.RelevanceJudge` or
    :class:`~negsynth_hf.verification.CrossEncoderJudge`).

    Args:
        judge: the relevance judge (its generator's response cache makes a rebuild free).
        threshold: judged relevant (masked) when p >= threshold; calibrate it like the guard's
            (``benchmarks/calibrate_judge.py``).
    """

    judge: Any = field(compare=False)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"MinedJudge.threshold must be in [0, 1], got {self.threshold!r}")
        if self.judge is None or not hasattr(self.judge, "relevance"):
            raise ValueError(
                "MinedJudge.judge must be a RelevanceJudge or a CrossEncoderJudge (an object with "
                ".relevance(queries, docs))"
            )

    def to_config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "judge": getattr(self.judge, "name", type(self.judge).__name__)}


@dataclass
class MinedVerdicts:
    """Per row: the mined negatives kept (in mining order) and the ones judged relevant, with their p."""

    kept: list[list[str]]
    judged_relevant: list[list[tuple[str, float]]]
    counts: dict[str, int]
    judge_stats: dict[str, Any]


def judge_mined(policy: MinedJudge, queries: Sequence[str], negatives: Sequence[Sequence[str]]) -> MinedVerdicts:
    """Ask the judge about every mined negative (one batch, grouped by query) and split each row's list."""
    pairs = [(i, text) for i, row in enumerate(negatives) for text in row]
    before = dict(vars(policy.judge.stats)) if hasattr(policy.judge, "stats") else {}
    judgments = safe_judgments(
        lambda: policy.judge.relevance([queries[i] for i, _ in pairs], [t for _, t in pairs]), len(pairs)
    )
    kept: list[list[str]] = [[] for _ in negatives]
    relevant: list[list[tuple[str, float]]] = [[] for _ in negatives]
    failed = 0
    for (i, text), j in zip(pairs, judgments, strict=True):
        if j.p is not None and j.p >= policy.threshold:
            relevant[i].append((text, float(j.p)))
        else:
            failed += j.p is None
            kept[i].append(text)
    counts = {"mined_judged": len(pairs), "mined_masked_judge": sum(map(len, relevant)), "mined_judge_failed": failed}
    return MinedVerdicts(kept, relevant, counts, _cost(policy.judge, before))


def _cost(judge: Any, before: dict[str, Any]) -> dict[str, Any]:
    """This call's share of the judge's counters (tokens, seconds) and its cost per judgment."""
    if not before:
        return {}
    now = vars(judge.stats)
    delta = {k: now[k] - before[k] for k in ("judgments", "prompt_tokens", "completion_tokens", "seconds", "cached")}
    n = max(delta["judgments"], 1)
    return {**delta, "per_judgment": {k: delta[k] / n for k in ("prompt_tokens", "completion_tokens", "seconds")}}
