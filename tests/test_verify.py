"""The false-negative guard: margin semantics, near-duplicates, query containment, judges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from negsynth_hf.generators.base import ChatResponse
from negsynth_hf.verify import (
    CrossEncoderJudge,
    JudgeVerdict,
    LLMJudge,
    margin_violation,
    token_jaccard,
    verify_negatives,
)


def test_margin_semantics_match_sentence_transformers():
    # absolute: invalid iff neg + m > pos
    assert margin_violation(0.5, 0.6, absolute_margin=0.05, relative_margin=None) is None
    assert margin_violation(0.56, 0.6, absolute_margin=0.05, relative_margin=None) is not None
    assert margin_violation(0.61, 0.6, absolute_margin=0.0, relative_margin=None) is not None
    # relative: invalid iff neg > pos - |pos| * r  (= pos * (1 - r) for positive scores)
    assert margin_violation(0.56, 0.6, absolute_margin=None, relative_margin=0.05) is None  # 0.56 < 0.57
    assert margin_violation(0.58, 0.6, absolute_margin=None, relative_margin=0.05) is not None
    # sign-safe for negative positive scores, as the installed ST does (#3819)
    # threshold = -0.5 - 0.5 * 0.05 = -0.525 (pos * (1 - r) would wrongly give -0.475)
    assert margin_violation(-0.53, -0.5, absolute_margin=None, relative_margin=0.05) is None
    assert margin_violation(-0.52, -0.5, absolute_margin=None, relative_margin=0.05) is not None
    assert margin_violation(0.9, 0.1, absolute_margin=None, relative_margin=None) is None  # both off


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_verify_with_embeddings_flags_and_reasons():
    queries = ["does aspirin prevent stroke"] * 4
    positives = ["Aspirin lowered stroke risk by 20 percent in a large trial of adults."] * 4
    negatives = [
        "Aspirin lowered stroke risk by 20 percent in a large trial of adults!",  # copy of the positive
        "Ibuprofen was studied for knee pain in athletes over ten weeks.",  # fine
        "Does aspirin prevent stroke? A history of the drug's marketing in Europe.",  # contains the query
        "Statins and stroke: cholesterol outcomes in older women.",  # scores above the positive
    ]
    q = _unit([[1, 0, 0]] * 4)
    p = _unit([[0.8, 0.6, 0]] * 4)
    d = _unit([[0.8, 0.6, 0], [0.2, 0.2, 0.9], [0.5, 0.1, 0.8], [0.95, 0.0, 0.3]])
    result = verify_negatives(queries, positives, negatives, embeddings=(q, p, d), absolute_margin=0.0)
    assert result.valid.tolist() == [False, True, True, False]
    assert "near-duplicate" in result.reasons[0] and "near_duplicate_of_positive" in result.flags[0]
    assert "contains_query" in result.flags[2] and result.reasons[2] == ""
    assert "false-negative guard" in result.reasons[3] and "scores_above_positive" in result.flags[3]
    assert result.counts == {"margin": 1, "near_duplicate": 1, "contains_query": 1, "judge": 0}
    assert result.sim_query_positive == pytest.approx([0.8] * 4)


def test_verify_with_the_embedded_retriever(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path)
    query = "Vitamin D supplementation reduces fracture risk in elderly women."
    positive = "In a trial of 3,000 elderly women, daily vitamin D cut hip fractures by 30 percent versus placebo."
    answers = "Daily vitamin D supplements reduced fracture risk among elderly women in a large placebo trial."
    unrelated = "The migration routes of arctic terns span both hemispheres each year."
    result = verify_negatives([query] * 2, [positive] * 2, [answers, unrelated], model=model, absolute_margin=0.0)
    assert result.valid.tolist() == [False, True]
    assert result.sim_query[0] > result.sim_query[1]


class _FakeCrossEncoder:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def predict(self, pairs, batch_size=32, show_progress_bar=False):
        return np.array([self.scores[doc] for _, doc in pairs])


def test_cross_encoder_judge_vetoes_with_margins():
    judge = CrossEncoderJudge(_FakeCrossEncoder({"pos": 5.0, "bad": 6.0, "ok": 1.0, "close": 4.9}), absolute_margin=0.5)
    verdicts = judge.judge(["q"] * 3, ["pos"] * 3, ["bad", "ok", "close"])
    assert [v.valid for v in verdicts] == [False, True, False]
    assert verdicts[1].score == 1.0
    q = _unit([[1, 0]] * 3)
    d = _unit([[0, 1]] * 3)
    result = verify_negatives(["q"] * 3, ["pos"] * 3, ["bad", "ok", "close"], embeddings=(q, q, d), judges=[judge])
    assert result.valid.tolist() == [False, True, False]
    assert result.reasons[0].startswith("cross_encoder:") and "judge_veto" in result.flags[0]
    assert result.counts["judge"] == 2


def test_cross_encoder_judge_loads_a_real_model(tmp_path):
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from negsynth_hf.paths import embedded_retriever_path

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_retriever_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = CrossEncoderJudge(CrossEncoder(str(tmp_path)), absolute_margin=None, relative_margin=None, max_score=1e9)
    verdicts = judge.judge(["a query", "another"], ["pos one", "pos two"], ["neg one", "neg two"])
    assert len(verdicts) == 2 and all(v.valid and isinstance(v.score, float) for v in verdicts)


class _JudgeLLM:
    model_id = "scripted-judge"

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []

    def generate(self, requests):
        self.seen.extend(requests)
        return [self.replies.pop(0) for _ in requests]

    async def agenerate(self, requests):
        return self.generate(requests)


def test_llm_judge_parses_and_abstains_safely():
    llm = _JudgeLLM(
        [
            ChatResponse(text=json.dumps({"answers_query": True, "reason": "states the effect"})),
            ChatResponse(text='```json\n{"answers_query": false, "reason": "other drug"}\n```'),
            ChatResponse(text="I cannot tell."),
            ChatResponse(text=None, error="timeout"),
        ]
    )
    verdicts = LLMJudge(llm).judge(["q"] * 4, ["p"] * 4, ["a", "b", "c", "d"])
    assert [v.valid for v in verdicts] == [False, True, True, True]
    assert "answers the query" in verdicts[0].reason
    assert verdicts[2].reason.startswith("judge abstained") and "timeout" in verdicts[3].reason
    assert llm.seen[0].json_schema is not None and llm.seen[0].prompt_version == "llm-judge-v1"
    assert isinstance(verdicts[0], JudgeVerdict)


def test_token_jaccard_and_validation():
    assert token_jaccard("A b, c.", "a B c") == 1.0
    with pytest.raises(ValueError, match="align"):
        verify_negatives(["q"], ["p", "p"], ["n"], embeddings=None)
    with pytest.raises(ValueError, match="reference model"):
        verify_negatives(["q"], ["p"], ["n"])
