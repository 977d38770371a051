"""Inputs and outputs of the synthesizer: small, typed, JSON-serializable records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SynthesisInput:
    """One (query, positive) pair, optionally with mined candidates and the positive's title.

    ``candidates`` are mined hard negatives the LLM may rewrite (it keeps corpus style and noise);
    ``title`` is the only context the query-edit strategy's writer sees besides the edited query;
    ``positive_id`` (optional) names the positive in provenance when the rewrite strategy edits it.
    """

    query: str
    positive: str
    candidates: tuple[str, ...] = ()
    title: str | None = None
    positive_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.candidates, tuple):  # accept lists, keep the record hashable
            object.__setattr__(self, "candidates", tuple(self.candidates))


@dataclass
class SynthesizedNegative:
    """One generated negative with its provenance.

    Attributes:
        text: the negative document.
        violated_requirement: which requirement it breaks (counterfactual: ``"R2: <node>"``;
            query_edit: ``"'<old span>' -> '<new span>'"``; naive: empty).
        strategy_type: one of the six break types, ``"naive"`` or ``"query_edit:<edit type>"``.
        rewrote_candidate: whether the LLM says it rewrote a mined candidate.
        candidate_index: 0-based index into ``SynthesisInput.candidates`` when it did.
        explanation: why it no longer satisfies the query (LLM's own words, or the edit).
        flags: non-filtering quality flags (see ``negsynth_hf.synthesis.quality``).
        edited_query: the one-detail-edited query (query_edit only).
        changed_span: ``(original words, replacement words)`` of that edit (query_edit only).
        node_id: the violated requirement node's id (counterfactual only).
        rule_edit: ``True`` when the query edit was made by code (``rule_edits``), not by the LLM.
        source: the document the rewrite strategy edited (``"positive"``); ``None`` for written texts.
        source_id: that document's id when the input named it (``SynthesisInput.positive_id``).
        edits: ``(original span, replacement)`` of every in-place edit (rewrite only); ``text`` is ``source`` with
            every mention of each span replaced.
    """

    text: str
    violated_requirement: str = ""
    strategy_type: str = "naive"
    rewrote_candidate: bool = False
    candidate_index: int | None = None
    explanation: str = ""
    flags: tuple[str, ...] = ()
    edited_query: str | None = None
    changed_span: tuple[str, str] | None = None
    node_id: str | None = None
    rule_edit: bool = False
    source: str | None = None
    source_id: str | None = None
    edits: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flags"] = list(self.flags)
        out["changed_span"] = list(self.changed_span) if self.changed_span else None
        out["edits"] = [list(e) for e in self.edits]
        return out


@dataclass
class SynthesisResult:
    """Everything one input row produced. ``failure_reason`` is set exactly when nothing usable came back.

    Attributes:
        attempts: the most attempts any single stage of this row needed (1 = first try everywhere).
        llm_calls: requests sent for this row (including cached answers and retries).
        cached_calls: how many of those the generator answered from its cache.
        analysis: the counterfactual analysis, or the query-edit attempts; ``None`` for naive.
        duplicates_removed: generated negatives dropped as duplicates of another in the row.
        notes: non-fatal issues (a negative dropped for an unknown node id, a rejected edit...).
        trimmed_tokens: prompt tokens cut from the positive/candidates to fit the model's context.
        dropped_candidates: mined candidates left out of prompts to fit the model's context.
        stage_attempts: stage -> attempts each of the row's calls of that stage took (negative: it failed after
            that many); ``1`` is a reply valid on the first attempt.
        unfilled: one reason per negative the row asked for (K) but did not get: ``len(negatives) +
            len(unfilled) == K`` for every row.
    """

    negatives: list[SynthesizedNegative] = field(default_factory=list)
    failure_reason: str | None = None
    strategy: str = ""
    prompt_version: str = ""
    model_id: str = ""
    attempts: int = 0
    llm_calls: int = 0
    cached_calls: int = 0
    analysis: dict[str, Any] | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    duplicates_removed: int = 0
    notes: list[str] = field(default_factory=list)
    trimmed_tokens: int = 0
    dropped_candidates: int = 0
    stage_attempts: dict[str, list[int]] = field(default_factory=dict)
    unfilled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure_reason is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["negatives"] = [n.to_dict() for n in self.negatives]
        return out
