"""Gap-correction weights: a planted source artifact is found and down-weighted; invisible sources are not."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from test_transform_helpers import ScriptedSpec, pairs, scripted_passage

from negsynth_hf.build import build_dataset
from negsynth_hf.weighting import hardness_percentile, source_weights

MARKER = "AI-GENERATED SUMMARY!!! "


def _items(rows: int, *, marker: str):
    texts, is_gen, groups = [], [], []
    for r in range(rows):
        for k in range(4):
            texts.append(scripted_passage(f"mined {r}", k))
            is_gen.append(False)
            groups.append(r)
        for k in range(2):
            texts.append(scripted_passage(f"generated {r}", k, marker=marker))
            is_gen.append(True)
            groups.append(r)
    return texts, np.array(is_gen), np.array(groups)


def test_planted_artifact_gives_high_auc_and_low_weights():
    texts, y, groups = _items(60, marker=MARKER)
    result = source_weights(texts, y, groups)
    assert result.auc_before > 0.9
    assert result.weights[~y].tolist() == [1.0] * int((~y).sum())
    assert result.weights[y].mean() < 0.2
    assert result.effective_generated_share < 0.2
    assert result.n_splits == 5


def test_indistinguishable_sources_give_auc_near_half_and_weights_near_one():
    texts, y, groups = _items(60, marker="")
    result = source_weights(texts, y, groups)
    assert 0.35 < result.auc_before < 0.65
    assert result.weights[y].mean() > 0.75
    assert result.effective_generated_share > 0.75


def test_switched_off_still_measures_auc():
    texts, y, groups = _items(30, marker=MARKER)
    result = source_weights(texts, y, groups, enabled=False)
    assert result.auc_before > 0.9 and set(result.weights.tolist()) == {1.0}
    assert result.auc_after == pytest.approx(result.auc_before)


def test_too_few_groups_is_not_an_error():
    texts, y, groups = _items(1, marker=MARKER)
    result = source_weights(texts, y, groups)
    assert np.isnan(result.auc_before) and set(result.weights.tolist()) == {1.0} and result.n_splits == 0


def test_hardness_percentile():
    assert hardness_percentile(0.9, [0.1, 0.2, 0.3, 0.4]) == 100.0
    assert hardness_percentile(0.0, [0.1, 0.2]) == 0.0
    assert hardness_percentile(0.25, [0.1, 0.2, 0.3, 0.4]) == 50.0
    assert hardness_percentile(0.2, [0.1, 0.2]) == 75.0  # ties count half
    assert np.isnan(hardness_percentile(0.5, []))


@pytest.mark.parametrize("marker", [MARKER, ""])
def test_build_reports_probe_auc_and_weights(tiny_model, tmp_path, marker):
    """End to end: generated texts with a style marker are found by the probe and down-weighted."""
    n = 30
    data = pairs(n)
    # positives are mining candidates too: write them (and the corpus) with the scripted generator's template,
    # so that only the marker tells generated from mined
    data["positive"] = [scripted_passage(f"positive {i}", 0) for i in range(n)]
    # the corpus is written by the same template as the scripted generator: only the marker tells them apart
    corpus = [scripted_passage(f"corpus {i}", i % 3) for i in range(120)]
    result = build_dataset(
        Dataset.from_dict(data),
        corpus=corpus,
        retriever=tiny_model,
        generator=ScriptedSpec(marker=marker),
        strategy="naive",
        num_mined=4,
        num_generated=2,
        guard_policy="off",  # keep every generated text: this test is about the source probe
        relative_margin=None,
        sampling_strategy="random",  # a random tiny model mines the same few hub documents for every query
        range_max=100,
        show_progress_bar=False,
        cache_dir="",
    )
    weights = result.summary.weights
    gen = result.provenance.filter(lambda r: r["source"] == "generated")
    if marker:
        assert weights["probe_auc_before"] > 0.9
        assert np.mean(gen["weight"]) < 0.3
        assert weights["effective_generated_share"] < 0.3
    else:
        assert 0.3 < weights["probe_auc_before"] < 0.7
        assert np.mean(gen["weight"]) > 0.6
    assert all(p is not None for p in gen["probe_p_generated"])
    assert all(h is not None and 0 <= h <= 100 for h in gen["hardness_percentile"])
