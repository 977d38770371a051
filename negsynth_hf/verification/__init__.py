"""Verification of generated (and optionally mined) negatives beyond the retriever margin.

- :mod:`~negsynth_hf.verification.checks`: pure-code checks from what the pipeline knows (the query edit itself);
- :mod:`~negsynth_hf.verification.judge`: an LLM relevance judge over the generator protocol, with probabilities
  from logprobs (votes otherwise) and the collection's relevance definition from its profile;
- :mod:`~negsynth_hf.verification.policy`: the guard policy that combines them with the margin rule;
- :mod:`~negsynth_hf.verification.contrast`: the default ``contrast`` policy's rule (edit checks, and whether the
  retriever finds a query-edit passage closer to the edited query than to the original);
- :mod:`~negsynth_hf.verification.mined`: the same judge on mined negatives (RLHN), ``build_dataset(mined_judge=)``.

The original guard (:mod:`negsynth_hf.verify`) keeps its public names.
"""

from __future__ import annotations

from negsynth_hf.verification.checks import EditCheck, changed_span_of, edit_check, requirement_of
from negsynth_hf.verification.judge import JUDGE_PROMPT_VERSION, JudgeStats, Judgment, RelevanceJudge
from negsynth_hf.verification.mined import MinedJudge, judge_mined
from negsynth_hf.verification.policy import POLICY_MODES, Candidate, GuardDecision, GuardPolicy, apply_policy

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "POLICY_MODES",
    "Candidate",
    "EditCheck",
    "GuardDecision",
    "GuardPolicy",
    "JudgeStats",
    "Judgment",
    "MinedJudge",
    "RelevanceJudge",
    "apply_policy",
    "changed_span_of",
    "edit_check",
    "judge_mined",
    "requirement_of",
]
