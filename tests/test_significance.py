"""Per-query scores and paired tests (ranx and SciPy underneath), on hand-checkable qrels and a real tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from negsynth_hf.significance import mean_over_seeds, paired_test, per_query_scores, retrieval_run

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d4": 0}}


def test_per_query_scores_are_ranx_metrics_per_query():
    run = {"q1": {"d1": 0.9, "d2": 0.1}, "q2": {"d1": 0.9, "d2": 0.5}}  # q3 retrieved nothing
    scores = per_query_scores(QRELS, run, metrics=("ndcg@10", "mrr@10", "recall@100"))
    assert scores["ndcg@10"]["q1"] == pytest.approx(1.0)
    assert scores["ndcg@10"]["q2"] == pytest.approx(1 / math.log2(3))  # relevant at rank 2
    assert scores["mrr@10"]["q2"] == pytest.approx(0.5)
    assert scores["ndcg@10"]["q3"] == 0.0 and scores["recall@100"]["q3"] == 0.0  # missed, not dropped
    with pytest.raises(ValueError, match="no relevant document"):
        per_query_scores({"q9": {"d1": 0}}, run)


def test_paired_test_separates_a_consistent_gain_from_noise():
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, 60))}
    better = {q: v + 0.05 + float(rng.normal(0, 0.02)) for q, v in base.items()}
    noisy = {q: v + float(rng.normal(0, 0.05)) for q, v in base.items()}
    for test in ("fisher", "student"):
        gain = paired_test("trained", better, "base", base, metric="ndcg@10", test=test, n_permutations=2000)
        assert gain.p_value < 0.01 and gain.significant() and gain.delta == pytest.approx(0.05, abs=0.01)
        assert gain.n_queries == 60 and gain.mean_a - gain.mean_b == pytest.approx(gain.delta)
        assert 0.0 < gain.ci_low < gain.delta < gain.ci_high  # a consistent gain: the interval excludes 0
        null = paired_test("noisy", noisy, "base", base, metric="ndcg@10", test=test, n_permutations=2000)
        assert null.p_value > 0.05 and not null.significant()
        assert null.ci_low < 0.0 < null.ci_high and null.ci_high - null.ci_low < 0.04  # how much noise rules out
    same = paired_test("a", base, "b", dict(base), metric="ndcg@10", test="student")
    assert same.delta == 0.0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0
    assert set(gain.to_dict()) >= {"a", "b", "metric", "delta", "p_value", "test"}


def test_randomization_test_is_exact_for_few_queries_and_reproducible():
    """3 queries, each +1: of the 8 sign swaps, 2 reach |mean difference| >= 1, so the exact p is 2/8."""
    a, b = {"q1": 1.0, "q2": 2.0, "q3": 3.0}, {"q1": 0.0, "q2": 1.0, "q3": 2.0}
    assert paired_test("a", a, "b", b, metric="ndcg@10").p_value == pytest.approx(0.25)
    rng = np.random.default_rng(1)
    x = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 80))}
    y = {q: v + float(rng.normal(0.02, 0.1)) for q, v in x.items()}  # 2^80 swaps: sampled, seeded
    runs = [paired_test("x", x, "y", y, metric="ndcg@10").p_value for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]  # the same p on every call (ranx's parallel one differs)
    assert paired_test("x", x, "y", y, metric="ndcg@10", seed=7).p_value != runs[0]


def test_paired_test_and_seed_means_refuse_unpaired_inputs():
    with pytest.raises(ValueError, match="different queries"):
        paired_test("a", {"q1": 1.0, "q2": 0.0}, "b", {"q1": 1.0, "q3": 0.0}, metric="ndcg@10")
    with pytest.raises(ValueError, match="test must be one of"):
        paired_test("a", {"q1": 1.0, "q2": 0.0}, "b", {"q1": 1.0, "q2": 0.0}, metric="ndcg@10", test="wilcoxon")
    assert mean_over_seeds([{"q1": 0.2, "q2": 1.0}, {"q1": 0.4, "q2": 0.0}]) == {"q1": pytest.approx(0.3), "q2": 0.5}
    with pytest.raises(ValueError, match="seed #1"):
        mean_over_seeds([{"q1": 0.2}, {"q2": 0.4}])


def test_retrieval_run_ranks_with_a_real_model(tiny_model):
    corpus = {f"d{i}": text for i, text in enumerate(["red apples grow", "blue ocean waves", "fast red cars"])}
    queries = {"q0": "blue ocean waves", "q1": "red apples grow"}  # each equals one document exactly
    run = retrieval_run(tiny_model, queries, corpus, top_k=2)
    assert set(run) == {"q0", "q1"} and all(len(docs) == 2 for docs in run.values())
    assert max(run["q0"], key=run["q0"].get) == "d1" and run["q0"]["d1"] == pytest.approx(1.0, abs=1e-4)
    assert max(run["q1"], key=run["q1"].get) == "d0"
    scores = per_query_scores({"q0": {"d1": 1}, "q1": {"d0": 1}}, run)
    assert scores["ndcg@10"] == {"q0": pytest.approx(1.0), "q1": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="top_k"):
        retrieval_run(tiny_model, queries, corpus, top_k=0)
