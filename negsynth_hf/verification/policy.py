"""The guard policy: which rule, check or judge decides whether a generated negative is kept or masked.

The margin rule (positive-aware mining moved onto generated text) masks exactly the hard counterfactuals the
method is for, so under ``combined`` it only marks the *band* where a decision is needed:

- ``off``: keep everything (the naive baseline); flags are still recorded.
- every other mode first masks degenerate texts (``"..."`` placeholders, refusals, loops:
  :data:`~negsynth_hf.synthesis.quality.DEGENERATE_FLAGS`), which are no negatives at all.
- ``margin``: today's guard: near-duplicates of the positive and margin violators are masked.
- ``judge``: near-duplicates, texts containing the whole query and edits of a kind the profile marks relevant
  are rule-masked; the judge decides every other negative.
- ``checks``: the same rule masks; outside the margin band nothing changes (kept); inside it the deterministic
  checks decide (:func:`~negsynth_hf.verification.checks.edit_check`: a query-edit passage that carries the
  replacement and not the original detail is kept, one that carries the original is masked) and whatever they
  cannot decide keeps the margin rule (masked). No LLM is asked. The recommended policy for small judges: on the
  train-split calibration Qwen2.5-Coder-1.5B's relevance judgments were at chance (pooled AUC 0.54) and rated
  allowed one-detail edits as more relevant than judged-relevant documents.
- ``combined``: as ``checks``, but the judge decides what the checks cannot.
- ``contrast``: no LLM and no margin for query edits: a query-edit negative is kept when its edit makes sense and
  changes the meaning, its passage carries the edit, and the retriever finds it closer to the edited query than to
  the original (:mod:`~negsynth_hf.verification.contrast`); other negatives keep the margin rule.

A judge failure costs one negative the margin rule (``judge_failed_margin_fallback``, counted), never the run.
Every decision and its scores go to provenance (:class:`GuardDecision`), and counts by reason to the summary.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from negsynth_hf.synthesis.profiles import DatasetProfile
from negsynth_hf.synthesis.quality import DEGENERATE_FLAGS
from negsynth_hf.synthesis.rule_edits import edit_kind
from negsynth_hf.verification.checks import changed_span_of, edit_check, requirement_of
from negsynth_hf.verification.contrast import (
    DEFAULT_MIN_CONTRAST,
    DEFAULT_MIN_SIM_QUERY,
    ContrastSignals,
    contrast_rule,
    contrast_signals,
)
from negsynth_hf.verification.findings import Findings
from negsynth_hf.verification.judge import Judge, JudgeStats, Judgment

PolicyMode = Literal["contrast", "margin", "checks", "judge", "combined", "off"]
POLICY_MODES: tuple[str, ...] = ("contrast", "margin", "checks", "judge", "combined", "off")
#: the modes a name alone selects (``build_dataset(guard_policy="checks")``); the others need a judge object
NAMED_MODES: tuple[str, ...] = ("contrast", "margin", "checks", "off")

#: why a negative was kept or masked (``GuardDecision.reason``, counted as ``guard_<decision>_<reason>``)
GuardReason = Literal[
    # kept
    "policy_off",
    "margin_passed",
    "outside_band",
    "edit_carries_replacement",
    "judge_not_relevant",
    "contrast_passed",
    # masked
    "degenerate",
    "near_duplicate",
    "margin",
    "contains_query",
    "profile_relevant_edit",
    "edit_carries_original",
    "judge_relevant",
    "judge_original",
    "requirement_met",
    # masked by the contrast rule (negsynth_hf.verification.contrast; edit_<code> from synthesis.edits.edit_problem)
    "commentary",
    "edit_insertion",
    "edit_vague_replacement",
    "edit_same_meaning",
    "edit_replacement_in_query",
    "edit_auxiliary_flip",
    "edit_contradictory_population",
    "edit_inverted_range",
    "edit_not_carried",
    "off_topic",
    "low_contrast",
    # either: the judge failed and the margin band decided (masked inside it, kept outside)
    "judge_failed_margin_fallback",
]
#: the summary count (``masked_<kind>``) each masking reason adds to; a reason not listed counts as ``masked_judge``
MASKED_COUNT: dict[str, str] = {
    "degenerate": "masked_degenerate",
    "near_duplicate": "masked_near_duplicate",
    "margin": "masked_margin",
    "judge_failed_margin_fallback": "masked_margin",
}
MASKED_COUNTS: tuple[str, ...] = ("masked_margin", "masked_near_duplicate", "masked_judge", "masked_degenerate")


@dataclass(frozen=True)
class GuardPolicy:
    """How generated negatives are verified (frozen: part of the build config).

    Args:
        mode: ``contrast`` (default), ``margin``, ``checks``, ``judge``, ``combined`` or ``off`` (module
            docstring).
        threshold: judged relevant (masked) when p >= threshold; chosen on the train-split calibration
            (``benchmarks/calibrate_judge.py``).
        judge: a :class:`~negsynth_hf.verification.judge.Judge` (needed by ``judge``/``combined``):
            :class:`~negsynth_hf.verification.RelevanceJudge` (an LLM) or
            :class:`~negsynth_hf.verification.CrossEncoderJudge`.
        contrastive: query edits in doubt are judged "original vs edited query" (order bias removed) instead of
            absolutely; p is then p(addresses the original).
        requirement_check: counterfactuals are also asked whether they still meet the requirement they claim to
            break (p >= threshold: masked).
        edit_check_decides: a query-edit passage that carries the replacement and not the original detail is kept
            without asking the judge (the check is the cheaper, deterministic evidence).
        min_contrast: ``contrast``: the least ``sim(text, edited query) - sim(text, query)`` a kept query-edit
            negative needs (chosen on labelled negatives, ``benchmarks/guard_eval.py``).
        min_sim_query: ``contrast``: the least ``sim(text, query)`` (a text further from the query is off topic).
        encoder: ``contrast``: the SentenceTransformer that scores it; ``build_dataset`` passes its retriever,
            ``None`` elsewhere loads the embedded all-MiniLM-L6-v2.
    """

    mode: PolicyMode = "contrast"
    threshold: float = 0.5
    judge: Any = field(default=None, compare=False)
    contrastive: bool = False
    requirement_check: bool = False
    edit_check_decides: bool = True
    min_contrast: float = DEFAULT_MIN_CONTRAST
    min_sim_query: float = DEFAULT_MIN_SIM_QUERY
    encoder: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in POLICY_MODES:
            raise ValueError(f"GuardPolicy.mode must be one of {list(POLICY_MODES)}, got {self.mode!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"GuardPolicy.threshold must be in [0, 1], got {self.threshold!r}")
        for name in ("min_contrast", "min_sim_query"):
            if not -1.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"GuardPolicy.{name} must be in [-1, 1] (cosine), got {getattr(self, name)!r}")
        if self.mode in ("judge", "combined") and not isinstance(self.judge, Judge):
            raise ValueError(
                f"GuardPolicy.judge is required for mode={self.mode!r}: a RelevanceJudge or a CrossEncoderJudge "
                f"(an object with name, stats, relevance, requirement and contrastive), got {type(self.judge).__name__}"
            )

    @property
    def uses_judge(self) -> bool:
        return self.mode in ("judge", "combined")

    def to_config(self) -> dict[str, Any]:
        """JSON-safe description for ``build_config.json`` (the judge by name)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("judge", "encoder")}
        out["judge"] = getattr(self.judge, "name", None) if self.judge is not None else None
        if self.mode == "contrast":  # which retriever scored the contrast
            card = getattr(self.encoder, "model_card_data", None)
            out["encoder"] = getattr(card, "base_model", None) or (
                type(self.encoder).__name__ if self.encoder else None
            )
        return out


@dataclass(frozen=True)
class Candidate:
    """What the policy knows about one generated negative before any judge is asked."""

    query: str
    positive: str
    text: str
    near_duplicate: bool
    contains_query: bool
    margin_reason: str | None  # None: outside the margin band
    strategy_type: str | None = None
    violated_requirement: str | None = None
    edited_query: str | None = None
    degenerate: str | None = None  # the first degenerate quality flag of the text, if any


@dataclass
class GuardDecision:
    """One negative's verdict: ``decision`` kept/masked, ``reason`` a short code (counted), and the evidence."""

    decision: Literal["kept", "masked"]
    reason: GuardReason
    detail: str = ""
    in_band: bool = False
    p_relevant: float | None = None
    p_original: float | None = None
    p_requirement: float | None = None
    judge_method: str | None = None
    edit_check: str | None = None
    edit_kind: str | None = None
    changed_span: tuple[str, str] | None = None

    @property
    def masked(self) -> bool:
        return self.decision == "masked"

    def describe(self) -> str:
        """``"<reason>: <detail>"`` (the reason alone without a detail), as provenance's ``weight_reason`` says it."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass
class PolicyOutcome:
    """Decisions in candidate order, their counts by ``guard_<decision>_<reason>``, and the judge's cost."""

    decisions: list[GuardDecision]
    counts: dict[str, int]
    judge_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> list[bool]:
        return [not d.masked for d in self.decisions]


def decision_counts(decisions: Sequence[GuardDecision]) -> dict[str, int]:
    """Decisions by ``guard_<decision>_<reason>``."""
    counts: dict[str, int] = {}
    for d in decisions:
        key = f"guard_{d.decision}_{d.reason}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def masked_counts(decisions: Sequence[GuardDecision]) -> dict[str, int]:
    """The summary's ``masked_*`` counts: masked decisions by kind (:data:`MASKED_COUNT`)."""
    counts = dict.fromkeys(MASKED_COUNTS, 0)
    for d in decisions:
        if d.masked:
            key = MASKED_COUNT.get(d.reason, "masked_judge")
            counts[key] += 1
    return counts


def candidates(
    findings: Findings, queries: Sequence[str], positives: Sequence[str], texts: Sequence[str], metas: Sequence[Any]
) -> list[Candidate]:
    """The policy's view of each negative: the retriever's findings plus what synthesis recorded about it.

    ``metas[i]`` is the transform's record of negative ``i`` (anything with ``strategy_type``,
    ``violated_requirement``, ``edited_query`` and quality ``flags`` attributes; ``None``: nothing recorded).
    """
    out = []
    for i, (q, p, t, m) in enumerate(zip(queries, positives, texts, metas, strict=True)):
        quality = getattr(m, "flags", None) or ()
        out.append(Candidate(
            query=q, positive=p, text=t, near_duplicate=findings.near_duplicate[i],
            contains_query=findings.contains_query[i], margin_reason=findings.margin_reasons[i],
            strategy_type=getattr(m, "strategy_type", None),
            violated_requirement=getattr(m, "violated_requirement", None),
            edited_query=getattr(m, "edited_query", None),
            degenerate=next((g for g in DEGENERATE_FLAGS if g in quality), None),
        ))  # fmt: skip
    return out


def _edit_evidence(c: Candidate) -> dict[str, Any]:
    """The query edit's span, its kind (read from the words) and whether the passage carries it."""
    if not (c.strategy_type or "").startswith("query_edit"):
        return {}
    span = changed_span_of(c.violated_requirement)
    if span is None:
        return {}
    declared = (c.strategy_type or "").partition(":")[2] or None
    return {
        "changed_span": span,
        "edit_kind": edit_kind(*span, declared),
        "edit_check": edit_check(c.text, *span).verdict,
    }


def _rule_decision(
    policy: GuardPolicy, c: Candidate, profile: DatasetProfile, ev: dict, signals: ContrastSignals | None = None
) -> GuardDecision | None:
    """The decision rules and checks make alone, or ``None`` when the judge must be asked."""
    band = c.margin_reason is not None

    def made(decision: Literal["kept", "masked"], reason: GuardReason, detail: str = "") -> GuardDecision:
        return GuardDecision(decision, reason, detail, in_band=band, **ev)

    if policy.mode == "off":
        return made("kept", "policy_off")
    if c.degenerate:
        return made("masked", "degenerate", f"flagged {c.degenerate}")
    if c.near_duplicate:
        return made("masked", "near_duplicate", "near-duplicate of the positive")
    if policy.mode == "contrast":
        thresholds = {"min_contrast": policy.min_contrast, "min_sim_query": policy.min_sim_query}
        return made(*contrast_rule(c, ev, signals, **thresholds, profile=profile))
    if policy.mode == "margin":
        return made("masked", "margin", c.margin_reason or "") if band else made("kept", "margin_passed")
    if c.contains_query:
        return made("masked", "contains_query", "the text contains the whole query")
    if ev.get("edit_kind") in profile.relevant_edit_kinds:
        return made("masked", "profile_relevant_edit", f"{ev['edit_kind']} edits yield relevant documents here")
    if policy.mode in ("combined", "checks") and not band:
        return made("kept", "outside_band")
    if ev.get("edit_check") == "original_only":
        return made("masked", "edit_carries_original", "the passage states the original detail, not the replacement")
    if ev.get("edit_check") == "replacement_only" and (policy.edit_check_decides or policy.mode == "checks"):
        return made("kept", "edit_carries_replacement")
    if policy.mode == "checks":  # nothing deterministic says it is off-target: the margin rule stands
        return made("masked", "margin", c.margin_reason or "")
    return None


def safe_judgments(call: Any, n: int) -> list[Judgment]:
    """A judge call that cannot fail the build: an exception (or a wrong count) becomes ``n`` failed judgments."""
    if n == 0:
        return []
    try:
        out = list(call())
        if len(out) != n:
            raise ValueError(f"the judge returned {len(out)} judgments for {n} negatives")
        return out
    except Exception as err:  # noqa: BLE001 - a judge failure costs its negatives the margin rule, never the run
        return [Judgment(p=None, method="failed", error=f"{type(err).__name__}: {err}"[:200]) for _ in range(n)]


def _judge_pending(policy: GuardPolicy, cands: list[Candidate]) -> list[dict[str, Judgment]]:
    """Ask the judge about the negatives rules could not decide: one batch per kind of question."""
    judge = policy.judge
    contra = [i for i, c in enumerate(cands) if policy.contrastive and c.edited_query]
    absolute = [i for i in range(len(cands)) if i not in set(contra)]
    req = [i for i, c in enumerate(cands) if policy.requirement_check and requirement_of(c.violated_requirement)]
    texts = [c.text for c in cands]
    batches = {
        "original": (contra, lambda: judge.contrastive(
            [cands[i].query for i in contra], [cands[i].edited_query for i in contra], [texts[i] for i in contra])),
        "relevant": (absolute, lambda: judge.relevance([cands[i].query for i in absolute], [texts[i] for i in absolute])),
        "requirement": (req, lambda: judge.requirement(
            [requirement_of(cands[i].violated_requirement) for i in req], [texts[i] for i in req])),
    }  # fmt: skip
    out: list[dict[str, Judgment]] = [{} for _ in cands]
    for key, (idx, call) in batches.items():
        for i, judgment in zip(idx, safe_judgments(call, len(idx)), strict=True):
            out[i][key] = judgment
    return out


def _judged_decision(policy: GuardPolicy, c: Candidate, scores: dict[str, Judgment], ev: dict) -> GuardDecision:
    """Masked when the judge finds it relevant (or its broken requirement met); margin rule when the judge failed."""
    band = c.margin_reason is not None
    main = scores.get("original") or scores["relevant"]
    req = scores.get("requirement")
    d = GuardDecision("kept", "judge_not_relevant", in_band=band, judge_method=main.method, **ev)
    d.p_original = scores["original"].p if "original" in scores else None
    d.p_relevant = scores["relevant"].p if "relevant" in scores else None
    d.p_requirement = req.p if req is not None else None
    if main.p is None or (req is not None and req.p is None):
        d.decision = "masked" if band else "kept"
        d.reason, d.detail = "judge_failed_margin_fallback", (main.error or (req.error if req else "") or "")[:200]
    elif main.p >= policy.threshold:
        d.decision, d.reason = "masked", "judge_original" if "original" in scores else "judge_relevant"
        d.detail = f"p={main.p:.3f} >= threshold {policy.threshold}"
    elif req is not None and req.p is not None and req.p >= policy.threshold:
        d.decision, d.reason = "masked", "requirement_met"
        d.detail = f"p(requirement met)={req.p:.3f} >= threshold {policy.threshold}"
    return d


def apply_policy(policy: GuardPolicy, candidates: Sequence[Candidate], profile: DatasetProfile) -> PolicyOutcome:
    """Decide every candidate: rules first, then the judge for the rest (in batches), all recorded and counted."""
    evidence = [_edit_evidence(c) for c in candidates]
    signals = _contrast(policy, candidates, evidence)
    decisions: list[GuardDecision | None] = [
        _rule_decision(policy, c, profile, ev, s) for c, ev, s in zip(candidates, evidence, signals, strict=True)
    ]
    pending = [i for i, d in enumerate(decisions) if d is None]
    stats = getattr(policy.judge, "stats", None) if pending else None
    # a snapshot: by_method is a dict the live stats keep mutating
    stats_before = JudgeStats(**{**vars(stats), "by_method": dict(stats.by_method)}) if stats is not None else None
    if pending:
        scores = _judge_pending(policy, [candidates[i] for i in pending])
        for i, s in zip(pending, scores, strict=True):
            decisions[i] = _judged_decision(policy, candidates[i], s, evidence[i])
    final = [d for d in decisions if d is not None]
    return PolicyOutcome(final, decision_counts(final), _stats_delta(policy.judge, stats_before))


def _contrast(policy: GuardPolicy, cands: Sequence[Candidate], evidence: list[dict]) -> list[ContrastSignals | None]:
    """The retriever's contrast for every query-edit candidate (one batch; ``None`` for the others)."""
    out: list[ContrastSignals | None] = [None] * len(cands)
    if policy.mode != "contrast":
        return out
    idx = [i for i, (c, ev) in enumerate(zip(cands, evidence, strict=True)) if c.edited_query and ev]
    if idx:
        encoder = policy.encoder if policy.encoder is not None else _embedded_encoder()
        found = contrast_signals(
            encoder, [cands[i].query for i in idx], [cands[i].edited_query for i in idx], [cands[i].text for i in idx]
        )  # fmt: skip
        for i, s in zip(idx, found, strict=True):
            out[i] = s
    return out


@functools.lru_cache(maxsize=1)
def _embedded_encoder() -> Any:
    """The embedded all-MiniLM-L6-v2 (the default retriever), loaded once."""
    from sentence_transformers import SentenceTransformer

    from negsynth_hf.paths import embedded_retriever_path

    return SentenceTransformer(str(embedded_retriever_path()))


def _stats_delta(judge: Any, before: JudgeStats | None) -> dict[str, Any]:
    """This call's share of the judge's running stats (a judge object may serve several builds)."""
    if before is None:
        return {}
    now = judge.stats
    delta = JudgeStats(
        judgments=now.judgments - before.judgments, requests=now.requests - before.requests,
        cached=now.cached - before.cached, failed=now.failed - before.failed,
        prompt_tokens=now.prompt_tokens - before.prompt_tokens,
        completion_tokens=now.completion_tokens - before.completion_tokens, seconds=now.seconds - before.seconds,
        by_method={k: v - before.by_method.get(k, 0) for k, v in now.by_method.items()},
    )  # fmt: skip
    return delta.to_dict()
