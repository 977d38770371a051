"""The false-negative guard: is a generated (or mined) "negative" really not relevant to its query?

- :mod:`~negsynth_hf.verification.findings`: what the reference retriever and the texts say (similarities, the
  margin band, near-duplicates of the positive, texts containing the query); no decision;
- :mod:`~negsynth_hf.verification.checks`: pure-code checks from what the pipeline knows (the query edit itself);
- :mod:`~negsynth_hf.verification.judge`: an LLM relevance judge over the generator protocol, with probabilities
  from logprobs (votes otherwise) and the collection's relevance definition from its profile;
- :mod:`~negsynth_hf.verification.cross_encoder`: a cross-encoder as the judge (no LLM);
- :mod:`~negsynth_hf.verification.policy`: the guard policy, the one place that decides (typed
  :class:`GuardDecision` per negative), from the findings, the checks and a judge;
- :mod:`~negsynth_hf.verification.contrast`: the default ``contrast`` policy's rule (edit checks, and whether the
  retriever finds a query-edit passage closer to the edited query than to the original);
- :mod:`~negsynth_hf.verification.mined`: a judge on mined negatives (RLHN), ``build_dataset(mined_judge=)``.
"""

from __future__ import annotations

from negsynth_hf.verification.checks import EditCheck, changed_span_of, edit_check, requirement_of
from negsynth_hf.verification.cross_encoder import CrossEncoderJudge
from negsynth_hf.verification.findings import Findings, contains_query, find, margin_violation, token_jaccard
from negsynth_hf.verification.judge import JUDGE_PROMPT_VERSION, Judge, JudgeStats, Judgment, RelevanceJudge
from negsynth_hf.verification.mined import MinedJudge, judge_mined
from negsynth_hf.verification.policy import (
    NAMED_MODES,
    POLICY_MODES,
    Candidate,
    GuardDecision,
    GuardPolicy,
    GuardReason,
    apply_policy,
    candidates,
)

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "NAMED_MODES",
    "POLICY_MODES",
    "Candidate",
    "CrossEncoderJudge",
    "EditCheck",
    "Findings",
    "GuardDecision",
    "GuardPolicy",
    "GuardReason",
    "Judge",
    "JudgeStats",
    "Judgment",
    "MinedJudge",
    "RelevanceJudge",
    "apply_policy",
    "candidates",
    "changed_span_of",
    "contains_query",
    "edit_check",
    "find",
    "judge_mined",
    "margin_violation",
    "requirement_of",
    "token_jaccard",
]
