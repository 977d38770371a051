"""Verification beyond the margin: edit checks (pure code), the relevance judge's scoring, the guard policy.

``MockJudgeGenerator`` is a mock: a ChatGenerator in code that answers yes/no with logprobs from what the prompt's
document says, so the policy's wiring is tested without a model. The real-model test (SmolLM2 through a
llama.cpp server) is ``test_policy_on_planted_cases_with_a_real_small_model``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from datasets import Dataset
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.build import build_dataset
from negsynth_hf.generators.base import ChatRequest, ChatResponse
from negsynth_hf.synthesis.profiles import get_profile
from negsynth_hf.verification import (
    Candidate,
    GuardPolicy,
    RelevanceJudge,
    apply_policy,
    changed_span_of,
    edit_check,
    requirement_of,
)
from negsynth_hf.verification.judge import p_from_logprobs, vote_of

YES, NO = frozenset({"yes"}), frozenset({"no"})


# ------------------------------------------------------------------------------------------------ edit checks
@pytest.mark.parametrize(
    ("text", "old", "new", "verdict"),
    [
        ("LDL was linked to cancer in 300 adults.", "cardiovascular disease", "cancer", "replacement_only"),
        ("LDL and cardiovascular disease in adults.", "cardiovascular disease", "cancer", "original_only"),
        ("Cancer and cardiovascular disease both rose.", "cardiovascular disease", "cancer", "both"),
        ("A study of blood lipids.", "cardiovascular disease", "cancer", "neither"),
        ("Treated 300 mice for a week.", "30", "60", "neither"),  # 30 is not 300: whole tokens only
        ("Young adults were enrolled.", "older adults", "young adults", "replacement_only"),  # shared word ignored
        ("Children were enrolled.", "adults", "children", "replacement_only"),
        ("ATR has a role in sensing.", "has no role", "has a role", "unknown"),  # negation: unreadable from text
    ],
)
def test_edit_check(text, old, new, verdict):
    assert edit_check(text, old, new).verdict == verdict


def test_edit_check_rejects_non_strings_naming_them():
    with pytest.raises(ValueError, match="text, old and new"):
        edit_check(None, "a", "b")  # type: ignore[arg-type]


def test_spans_and_requirements_read_back_from_provenance():
    assert changed_span_of("'30%' -> \"60%\"") == ("30%", "60%")
    assert changed_span_of("C2: the population is adults") is None and changed_span_of(None) is None
    assert requirement_of("C2: the population is adults") == "the population is adults"
    assert requirement_of("'a' -> 'b'") is None


# ------------------------------------------------------------------------------------------------ judge scoring
def _lp(token: str, top: dict[str, float]) -> dict:
    return {"token": token, "logprob": top.get(token, -1.0), "top": top}


def test_p_from_logprobs_normalizes_over_yes_and_no_and_skips_filler_tokens():
    top = {"Yes": math.log(0.3), "No": math.log(0.1), "Maybe": math.log(0.6)}
    assert p_from_logprobs([_lp("Yes", top)], YES, NO) == pytest.approx(0.75)
    lead = _lp("**", {"**": 0.0, " ": -2.0})
    assert p_from_logprobs([lead, _lp("no", {"no": math.log(0.8), " yes": math.log(0.2)})], YES, NO) == pytest.approx(
        0.2
    )
    assert p_from_logprobs([_lp("Hmm", {"Hmm": 0.0})], YES, NO) is None and p_from_logprobs(None, YES, NO) is None
    assert (
        vote_of(" Yes, it is", YES, NO) == 1.0
        and vote_of("no.", YES, NO) == 0.0
        and vote_of("perhaps", YES, NO) is None
    )


class MockJudgeGenerator:
    """Mock ChatGenerator: p(yes) = 0.9 when the document block says RELEVANT, 0.1 otherwise; ``logprobs=False``
    answers as text only (votes), ``fail`` makes every call fail, ``always`` answers that letter (position bias)."""

    def __init__(self, *, logprobs: bool = True, fail: bool = False, always: str | None = None) -> None:
        self.logprobs, self.fail, self.always, self.requests = logprobs, fail, always, []

    @property
    def model_id(self) -> str:
        return "mock-judge"

    def _answer(self, request: ChatRequest) -> ChatResponse:
        if self.fail:
            return ChatResponse(text=None, error="server down")
        user = request.messages[-1]["content"]
        document = user.rsplit("<data>", 1)[1]
        if self.always:
            top = {self.always: math.log(0.9), "B" if self.always == "A" else "A": math.log(0.1)}
            return ChatResponse(text=self.always, extra={"logprobs": [_lp(self.always, top)]}, prompt_tokens=50)
        p = 0.9 if "RELEVANT" in document else 0.1
        word = "yes" if p > 0.5 else "no"
        extra = {"logprobs": [_lp(word, {"yes": math.log(p), "no": math.log(1 - p)})]} if self.logprobs else {}
        return ChatResponse(text=word, extra=extra, prompt_tokens=40, completion_tokens=1)

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.requests += list(requests)
        return [self._answer(r) for r in requests]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return self.generate(requests)


def test_judge_groups_by_query_reads_logprobs_and_counts_cost():
    gen = MockJudgeGenerator()
    judge = RelevanceJudge(gen, "scientific")
    out = judge.relevance(["q2", "q1", "q2", "q1"], ["RELEVANT a", "b", "c", "RELEVANT d"])
    assert [round(j.p, 2) for j in out] == [0.9, 0.1, 0.1, 0.9] and {j.method for j in out} == {"logprobs"}
    sent = [r.messages[-1]["content"].split("</query>")[0] for r in gen.requests]
    assert sent == sorted(sent)  # one query's judgments are adjacent (shared prompt prefix)
    first = gen.requests[0]
    user = first.messages[-1]["content"]
    assert get_profile("scientific").relevance_definition in first.messages[0]["content"]
    assert user.index("<query>") < user.index("<data>") and first.top_logprobs > 0 and first.temperature == 0
    assert judge.stats.judgments == 4 and judge.stats.per_judgment()["prompt_tokens"] == 40


def test_judge_without_logprobs_votes_and_a_failed_call_is_recorded():
    votes = RelevanceJudge(MockJudgeGenerator(logprobs=False), votes=3).relevance(["q"], ["RELEVANT"])
    assert votes[0].method == "votes" and votes[0].p == 1.0
    failed = RelevanceJudge(MockJudgeGenerator(fail=True)).relevance(["q"], ["x"])
    assert failed[0].p is None and failed[0].method == "failed" and "server down" in failed[0].error
    with pytest.raises(ValueError, match="align"):
        RelevanceJudge(MockJudgeGenerator()).relevance(["q"], [])


def test_contrastive_judging_removes_position_bias():
    judge = RelevanceJudge(MockJudgeGenerator(always="A"))
    out = judge.contrastive(["LDL raises CVD risk"], ["LDL raises cancer risk"], ["a passage"])
    assert out[0].p == pytest.approx(0.5) and out[0].method == "logprobs"  # "always A" carries no signal


# ------------------------------------------------------------------------------------------------ policy
Q, POS = "LDL cholesterol raises the risk of cardiovascular disease.", "LDL raised CVD risk in 10,000 adults."
MARGIN = "sim(q,neg)=0.800 > sim(q,pos)=0.700 - ..."


def _cand(text: str, *, band: bool = True, dup: bool = False, contains: bool = False, **meta) -> Candidate:
    return Candidate(Q, POS, text, dup, contains, MARGIN if band else None, **meta)


def _edit(old: str, new: str, kind: str = "entity") -> dict:
    return {"strategy_type": f"query_edit:{kind}", "violated_requirement": f"{old!r} -> {new!r}",
            "edited_query": Q.replace(old, new)}  # fmt: skip


PLANTED = {
    "near_duplicate": _cand(POS, dup=True),
    "contains_query": _cand(f"{Q} A review.", contains=True),
    "direction_flip": _cand("LDL lowers risk.", **_edit("raises", "lowers", "other")),
    "carries_original": _cand("LDL and cardiovascular disease in mice.", **_edit("cardiovascular disease", "cancer")),
    "carries_replacement": _cand(
        "LDL was linked to cancer in 5,000 adults.", **_edit("cardiovascular disease", "cancer")
    ),
    "judged_relevant": _cand("RELEVANT evidence on LDL.", strategy_type="entity_shift", violated_requirement="C1: x"),
    "judged_not_relevant": _cand("HDL and sleep quality.", strategy_type="entity_shift", violated_requirement="C1: x"),
    "outside_band": _cand("RELEVANT but scored far below the positive.", band=False),
    "placeholder": _cand("...", band=False, degenerate="very_short"),  # Qwen 1.5B's counterfactual "text"
}


def _decide(mode: str, gen=None, **kw) -> dict[str, tuple[str, str]]:
    judge = RelevanceJudge(gen or MockJudgeGenerator(), "scientific") if mode in ("judge", "combined") else None
    out = apply_policy(GuardPolicy(mode=mode, judge=judge, **kw), list(PLANTED.values()), get_profile("scientific"))
    assert sum(out.counts.values()) == len(PLANTED)  # every negative decided and counted, none dropped
    return {name: (d.decision, d.reason) for name, d in zip(PLANTED, out.decisions, strict=True)}


def test_combined_policy_on_planted_cases():
    got = _decide("combined")
    assert got == {
        "near_duplicate": ("masked", "near_duplicate"),
        "contains_query": ("masked", "contains_query"),
        "direction_flip": ("masked", "profile_relevant_edit"),  # scientific: refuting evidence is relevant
        "carries_original": ("masked", "edit_carries_original"),
        "carries_replacement": ("kept", "edit_carries_replacement"),
        "judged_relevant": ("masked", "judge_relevant"),
        "judged_not_relevant": ("kept", "judge_not_relevant"),
        "outside_band": ("kept", "outside_band"),  # outside the margin band nothing changes
        "placeholder": ("masked", "degenerate"),  # no negative at all, wherever it scores
    }


def test_margin_judge_and_off_modes():
    margin = _decide("margin")
    assert margin["carries_replacement"] == ("masked", "margin") and margin["outside_band"] == ("kept", "margin_passed")
    assert margin["contains_query"] == ("masked", "margin")  # margin mode: containment is only a flag
    assert margin["placeholder"] == ("masked", "degenerate")
    judge = _decide("judge")
    assert judge["outside_band"] == ("masked", "judge_relevant")  # the judge sees every negative
    assert judge["placeholder"] == ("masked", "degenerate")  # masked by rule: the judge is not asked
    assert set(_decide("off").values()) == {("kept", "policy_off")}


def test_checks_policy_decides_without_any_llm():
    """checks: rules and the edit check decide inside the band; what they cannot decide keeps the margin rule."""
    got = _decide("checks")
    assert got["carries_replacement"] == ("kept", "edit_carries_replacement")
    assert got["carries_original"] == ("masked", "edit_carries_original")
    assert got["direction_flip"] == ("masked", "profile_relevant_edit")
    assert got["judged_relevant"] == got["judged_not_relevant"] == ("masked", "margin")  # no judge: margin stands
    assert got["outside_band"] == ("kept", "outside_band") and got["placeholder"] == ("masked", "degenerate")
    assert GuardPolicy(mode="checks").uses_judge is False


def test_judge_failure_falls_back_to_the_margin_rule_counted():
    got = _decide("combined", MockJudgeGenerator(fail=True))
    assert got["judged_relevant"] == got["judged_not_relevant"] == ("masked", "judge_failed_margin_fallback")
    assert got["outside_band"] == ("kept", "outside_band")


def test_policy_validation_names_the_field():
    with pytest.raises(ValueError, match="GuardPolicy.mode"):
        GuardPolicy(mode="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GuardPolicy.judge"):
        GuardPolicy(mode="combined")
    with pytest.raises(ValueError, match="GuardPolicy.threshold"):
        GuardPolicy(threshold=1.5)
    with pytest.raises(ValueError, match="guard_policy"):
        build_dataset(Dataset.from_dict(pairs(2)), guard_policy="judge", show_progress_bar=False)
    with pytest.raises(ValueError, match="write guard_policy: 'off'"):  # YAML's unquoted off
        build_dataset(Dataset.from_dict(pairs(2)), guard_policy=False, show_progress_bar=False)  # type: ignore[arg-type]


def test_build_records_decisions_and_counts(tiny_model, tmp_path):
    judge = RelevanceJudge(MockJudgeGenerator(), "generic")
    result = build_dataset(
        Dataset.from_dict(pairs(6)), corpus=corpus(), retriever=tiny_model, generator=ScriptedSpec(),
        strategy="naive", num_mined=2, num_generated=2, cache_dir=str(tmp_path / "c"), show_progress_bar=False,
        guard_policy=GuardPolicy(mode="judge", judge=judge),
    )  # fmt: skip
    gen = result.provenance.filter(lambda r: r["source"] == "generated" and r["status"] != "filled")
    assert len(gen) > 0 and set(gen["guard_policy"]) == {"judge"}
    assert all(d in ("kept", "masked") for d in gen["guard_decision"])
    assert all((d == "masked") == (s == "masked") for d, s in zip(gen["guard_decision"], gen["status"], strict=True))
    judged = [p for p, r in zip(gen["judge_p_relevant"], gen["guard_reason"], strict=True) if r.startswith("judge")]
    assert judged and all(0.0 <= p <= 1.0 for p in judged)
    counts = result.summary.counts
    assert sum(v for k, v in counts.items() if k.startswith("guard_")) == counts["generated"]
    masked = sum(counts[k] for k in ("masked_margin", "masked_near_duplicate", "masked_judge", "masked_degenerate"))
    assert masked == counts["generated_masked"] == sum(v for k, v in counts.items() if k.startswith("guard_masked_"))
    assert counts["judge_judgments"] == len(judged) and result.config["guard"]["policy"]["mode"] == "judge"
    assert result.summary.guard["judge"]["by_method"] == {"logprobs": len(judged)}  # this build's share
    assert result.summary.guard["judge"]["per_judgment"]["prompt_tokens"] == 40


def test_mined_judge_masks_mined_negatives_judged_relevant_counted_and_kept_in_provenance(tiny_model, tmp_path):
    """RLHN: mined "negatives" the judge finds relevant leave the training signal (weight 0), none silently."""
    from negsynth_hf.verification import MinedJudge

    docs = [t + (" RELEVANT" if i % 3 == 0 else "") for i, t in enumerate(corpus())]  # the mock says yes to these
    judge = RelevanceJudge(MockJudgeGenerator(), "generic")
    result = build_dataset(
        Dataset.from_dict(pairs(6)), corpus=docs, retriever=tiny_model, generator=None, num_mined=3,
        cache_dir=str(tmp_path / "c"), show_progress_bar=False, mined_judge=MinedJudge(judge, threshold=0.5),
    )  # fmt: skip
    mined = result.provenance.filter(lambda r: r["source"] == "mined")
    masked = mined.filter(lambda r: r["status"] == "masked")
    ok = mined.filter(lambda r: r["status"] == "ok")
    counts = result.summary.counts
    assert counts["mined_judged"] == len(masked) + len(ok) and counts["mined_masked_judge"] == len(masked) > 0
    assert all("RELEVANT" in t for t in masked["original_text"]) and not any("RELEVANT" in t for t in ok["text"])
    assert set(masked["weight"]) == {0.0} and all(p == pytest.approx(0.9) for p in masked["judge_p_relevant"])
    assert set(masked["guard_reason"]) == {"judge_relevant"} and counts["mined_judge_failed"] == 0
    assert result.config["guard"]["mined_judge"]["threshold"] == 0.5
    assert result.config["guard"]["mined_judge_cost"]["per_judgment"]["prompt_tokens"] == 40
    with pytest.raises(ValueError, match="MinedJudge.threshold"):
        MinedJudge(judge, threshold=2.0)


@pytest.mark.slow
def test_policy_on_planted_cases_with_a_real_small_model(tmp_path):
    """SmolLM2-135M through a real llama.cpp server: the rules decide their cases whatever the model says, the
    judge's cases carry a logprob probability and follow the threshold, and a rerun is answered from the cache."""
    from negsynth_hf.generators import GeneratorConfig

    config = GeneratorConfig(
        backend="llamacpp", model="smollm2-135m-instruct", cache_dir=str(tmp_path / "responses"), num_threads=1
    )
    judge = RelevanceJudge(config, "scientific", max_chars=600)
    policy = GuardPolicy(mode="combined", judge=judge, threshold=0.5, requirement_check=True)
    out = apply_policy(policy, list(PLANTED.values()), get_profile("scientific"))
    got = dict(zip(PLANTED, out.decisions, strict=True))
    assert sum(out.counts.values()) == len(PLANTED)
    for name in ("near_duplicate", "contains_query", "direction_flip", "carries_original", "carries_replacement"):
        assert got[name].reason == _decide("combined")[name][1]
    assert got["outside_band"].reason == "outside_band"
    for name in ("judged_relevant", "judged_not_relevant"):
        d = got[name]
        assert d.judge_method == "logprobs" and 0.0 <= d.p_relevant <= 1.0 and 0.0 <= d.p_requirement <= 1.0
        expected = d.p_relevant >= 0.5 or d.p_requirement >= 0.5
        assert d.masked == expected and d.reason in ("judge_relevant", "requirement_met", "judge_not_relevant")
    assert out.judge_stats["judgments"] == 4 and out.judge_stats["prompt_tokens"] > 0
    again = apply_policy(policy, list(PLANTED.values()), get_profile("scientific"))
    assert again.judge_stats["cached"] == 4 and [d.p_relevant for d in again.decisions] == [
        d.p_relevant for d in out.decisions
    ]
