from __future__ import annotations

import numpy as np

from negsynth_hf.data import document_text, evaluator_inputs, load_beir, pairs_dataset, split_train_validation
from negsynth_hf.probe import cross_fitted_probe, importance_weights, surface_features, weighted_auc


def test_probe_sees_planted_artifact_and_weights_correct_it():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta"]
    mined = [" ".join(rng.choice(words, size=12)) + "." for _ in range(80)]
    plain = [" ".join(rng.choice(words, size=12)) + "." for _ in range(40)]
    marked = [t + " In conclusion, this is clearly stated!!!" for t in plain[:40]]
    texts, y = mined + plain + marked, np.array([0] * 80 + [1] * 80)
    probe = cross_fitted_probe(surface_features(texts), y, seed=0)
    assert probe.auc > 0.7
    w = importance_weights(probe, y)
    assert np.all(w[y == 0] == 1.0)
    assert w[120:].mean() < 0.1 < 0.5 < w[80:120].mean()  # the marked half is down-weighted, the rest kept
    assert abs(weighted_auc(y, probe.proba_generated, w) - 0.5) < 0.15  # ...which hides the source again


def test_perfectly_separable_sources_get_near_zero_weight():
    y = np.array([0] * 30 + [1] * 30)
    X = np.c_[y * 5.0 + np.random.default_rng(0).normal(size=60)]
    probe = cross_fitted_probe(X, y)
    assert probe.auc > 0.99 and importance_weights(probe, y)[y == 1].mean() < 0.2


def test_probe_on_indistinguishable_sources_is_near_chance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 8))
    y = rng.permutation(np.array([0] * 200 + [1] * 200))
    probe = cross_fitted_probe(X, y, seed=0)
    assert 0.4 < probe.auc < 0.6
    assert importance_weights(probe, y)[y == 1].mean() > 0.8


def test_probe_caps_folds_at_number_of_groups():
    y = np.array([0, 1] * 6)
    probe = cross_fitted_probe(np.random.default_rng(0).normal(size=(12, 3)), y, groups=np.repeat([0, 1, 2], 4))
    assert probe.n_splits == 3 and probe.proba_generated.shape == (12,)


def test_probe_with_one_class_is_not_fitted():
    probe = cross_fitted_probe(np.zeros((5, 2)), [0] * 5)
    assert np.isnan(probe.auc) and probe.n_splits == 0


def test_document_text_strips_repeated_title():
    assert document_text({"title": "wing flow .", "text": "wing flow . more text"}) == "wing flow . more text"
    assert document_text({"title": "A", "text": "b"}) == "A. b"


def test_load_real_collection(shared_data):
    scifact = load_beir(shared_data / "scifact")
    assert len(scifact.corpus) == 5183 and len(scifact.split_query_ids("test")) == 300
    pairs = pairs_dataset(scifact, "train", max_queries=20, seed=0)
    assert len(pairs) == 20
    assert set(pairs.column_names) == {"anchor", "positive", "query_id", "positive_id", "known_positives"}
    assert all(p in known for p, known in zip(pairs["positive"], pairs["known_positives"], strict=True))
    train, val = split_train_validation(scifact.split_query_ids("train"), validation_fraction=0.25)
    assert not set(train) & set(val) and len(val) == round(809 * 0.25)
    queries, corpus, relevant = evaluator_inputs(scifact, "test")
    assert len(queries) == 300 and all(d in corpus for docs in relevant.values() for d in docs)
    cran = load_beir(shared_data / "cranfield")
    top = pairs_dataset(cran, "train", max_queries=5, max_positives_per_query=1)
    for qid, doc in zip(top["query_id"], top["positive_id"], strict=True):
        assert cran.qrels["train"][qid][doc] == max(cran.qrels["train"][qid].values())
