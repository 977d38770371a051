"""The guard's findings (margin semantics, near-duplicates, query containment), the margin policy on them, and the
cross-encoder judge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from negsynth_hf.synthesis.profiles import get_profile
from negsynth_hf.verification import (
    CrossEncoderJudge,
    GuardPolicy,
    Judge,
    MinedJudge,
    apply_policy,
    candidates,
    find,
    judge_mined,
    margin_violation,
    token_jaccard,
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


def test_findings_and_the_margin_policys_typed_decisions():
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
    found = find(queries, positives, negatives, embeddings=(q, p, d), absolute_margin=0.0)
    assert found.near_duplicate == [True, False, False, False]
    assert found.contains_query == [False, False, True, False]
    assert [r is not None for r in found.margin_reasons] == [False, False, False, True]
    assert found.flags(0) == ("near_duplicate_of_positive",) and found.flags(2) == ("contains_query",)
    assert found.flags(3) == ("scores_above_positive",) and "sim(q,neg)=0.954" in found.margin_reasons[3]
    assert found.sim_query_positive == pytest.approx([0.8] * 4)

    outcome = apply_policy(
        GuardPolicy(mode="margin"), candidates(found, queries, positives, negatives, [None] * 4), get_profile("generic")
    )
    assert outcome.valid == [False, True, True, False]
    assert [d.reason for d in outcome.decisions] == ["near_duplicate", "margin_passed", "margin_passed", "margin"]
    assert outcome.decisions[3].describe().startswith("margin: sim(q,neg)=0.954")
    off = apply_policy(
        GuardPolicy(mode="off"), candidates(found, queries, positives, negatives, [None] * 4), get_profile("generic")
    )
    assert off.valid == [True] * 4 and {d.reason for d in off.decisions} == {"policy_off"}


def test_find_with_the_embedded_retriever(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path)
    query = "Vitamin D supplementation reduces fracture risk in elderly women."
    positive = "In a trial of 3,000 elderly women, daily vitamin D cut hip fractures by 30 percent versus placebo."
    answers = "Daily vitamin D supplements reduced fracture risk among elderly women in a large placebo trial."
    unrelated = "The migration routes of arctic terns span both hemispheres each year."
    found = find([query] * 2, [positive] * 2, [answers, unrelated], model=model, absolute_margin=0.0)
    assert found.margin_reasons[0] is not None and found.margin_reasons[1] is None
    assert found.sim_query[0] > found.sim_query[1]


def test_token_jaccard_and_validation():
    assert token_jaccard("A b, c.", "a B c") == 1.0
    with pytest.raises(ValueError, match="align"):
        find(["q"], ["p", "p"], ["n"], embeddings=None)
    with pytest.raises(ValueError, match="reference model"):
        find(["q"], ["p"], ["n"])


# ------------------------------------------------------------------------------------------------ cross-encoder
class _MockCrossEncoder:
    """A mock CrossEncoder: one logit per (query, document) from a table, through the activation it is given."""

    num_labels = 1

    def __init__(self, logits: dict[tuple[str, str], float]) -> None:
        self.logits = logits
        self.calls = 0

    def predict(self, pairs, batch_size=32, show_progress_bar=False, activation_fn=None, apply_softmax=False):
        import torch

        self.calls += 1
        raw = torch.tensor([self.logits[(q, d)] for q, d in pairs])
        return (activation_fn(raw) if activation_fn is not None else raw).numpy()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_cross_encoder_judge_gives_probabilities_for_each_question():
    ce = _MockCrossEncoder({("q", "a"): 2.0, ("q", "b"): -3.0, ("q2", "a"): 0.0, ("req", "b"): 1.0})
    judge = CrossEncoderJudge(ce)
    assert isinstance(judge, Judge) and judge.name == "cross_encoder:_MockCrossEncoder"
    rel = judge.relevance(["q", "q"], ["a", "b"])
    assert [j.p for j in rel] == pytest.approx([_sigmoid(2.0), _sigmoid(-3.0)])
    assert {j.method for j in rel} == {"cross_encoder"}
    assert judge.requirement(["req"], ["b"])[0].p == pytest.approx(_sigmoid(1.0))
    (contra,) = judge.contrastive(["q"], ["q2"], ["a"])
    assert contra.p == pytest.approx(_sigmoid(2.0) / (_sigmoid(2.0) + 0.5))
    assert judge.stats.judgments == 4 and judge.stats.by_method == {"cross_encoder": 4}
    with pytest.raises(ValueError, match="must align"):
        judge.relevance(["q"], ["a", "b"])
    with pytest.raises(ValueError, match="CrossEncoder"):
        CrossEncoderJudge(object())


def test_cross_encoder_judge_decides_in_the_policy_and_on_mined_negatives():
    texts = ["answers it", "off topic"]
    ce = _MockCrossEncoder({("q", "answers it"): 3.0, ("q", "off topic"): -3.0})
    found = find(["q"] * 2, ["pos"] * 2, texts, embeddings=(_unit([[1, 0]] * 2),) * 2 + (_unit([[0, 1]] * 2),))
    cands = candidates(found, ["q"] * 2, ["pos"] * 2, texts, [None, None])
    outcome = apply_policy(GuardPolicy(mode="judge", judge=CrossEncoderJudge(ce)), cands, get_profile("generic"))
    assert [(d.decision, d.reason) for d in outcome.decisions] == [
        ("masked", "judge_relevant"),
        ("kept", "judge_not_relevant"),
    ]
    assert outcome.decisions[0].p_relevant == pytest.approx(_sigmoid(3.0)) and outcome.judge_stats["judgments"] == 2
    mined = judge_mined(MinedJudge(CrossEncoderJudge(ce)), ["q"], [texts])
    assert mined.kept == [["off topic"]] and mined.judged_relevant[0][0][0] == "answers it"
    with pytest.raises(ValueError, match="RelevanceJudge or a CrossEncoderJudge"):
        GuardPolicy(mode="judge", judge=ce)


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
    judge = CrossEncoderJudge(str(tmp_path))
    out = judge.relevance(["a query", "another"], ["neg one", "neg two"])
    assert len(out) == 2 and all(0.0 < j.p < 1.0 for j in out)
    (contra,) = judge.contrastive(["a query"], ["an edited query"], ["neg one"])
    assert 0.0 < contra.p < 1.0
    assert CrossEncoderJudge(CrossEncoder(str(tmp_path))).relevance(["a query"], ["neg one"])[0].p == pytest.approx(
        out[0].p
    )
