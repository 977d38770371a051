"""diagnose() on constructed datasets whose answer is known (planted artifacts, shuffled sources, false negatives)."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
from datasets import Dataset

from negsynth_hf.diagnostics import DiagnosticsReport, diagnose
from negsynth_hf.labels import encode_negative_labels

TOPICS = [
    "aspirin",
    "insulin",
    "vitamin d",
    "statins",
    "melatonin",
    "caffeine",
    "metformin",
    "ibuprofen",
    "zinc",
    "omega-3",
    "lithium",
    "iron",
]
OUTCOMES = ["blood pressure", "sleep quality", "bone density", "heart attacks", "memory", "fatigue", "infections"]
POPULATIONS = ["older adults", "children", "athletes", "pregnant women", "smokers", "nurses"]


def _doc(rng: random.Random) -> str:
    t, o, p = rng.choice(TOPICS), rng.choice(OUTCOMES), rng.choice(POPULATIONS)
    return f"A cohort study of {p} found that {t} changed {o} over two years."


def _rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t, o = TOPICS[i % len(TOPICS)], OUTCOMES[i % len(OUTCOMES)]
        rows.append(
            {
                "anchor": f"does {t} affect {o}",
                "positive": f"In a trial, {t} lowered {o} in {rng.choice(POPULATIONS)}.",
                "mined": [_doc(rng) for _ in range(3)],
                "rng": rng,
            }
        )
    return rows


def _artifact(text: str) -> str:
    # LLM-style artifact: much longer, boilerplate, ends with a marker
    return f"{text} Furthermore, it is important to note that further research is needed!!! [GENERATED]"


def make_dataset(
    n: int = 48,
    *,
    generated: str = "artifact",
    shuffle_sources: bool = False,
    artifact_weight: float | None = None,
    plant_false_negative: tuple[int, int] | None = None,
    empty_slot: tuple[int, int] | None = None,
    seed: int = 0,
) -> Dataset:
    """Rows with 3 mined + 2 generated negatives (columns 4 and 5) and a labels column.

    generated="artifact": both generated negatives carry the artifact and restate the query (high similarity).
    generated="half": one generated negative has the artifact, the other is corpus-like text.
    shuffle_sources: the generated flags are assigned at random across the 5 columns (no relation to text).
    """
    rows = _rows(n, seed)
    rng = np.random.default_rng(seed)
    records: dict[str, list] = {
        k: [] for k in ["anchor", "positive", *[f"negative_{i}" for i in range(1, 6)], "labels"]
    }
    for r, row in enumerate(rows):
        gen_a = _artifact(f"Regarding whether {row['anchor']}, {row['anchor']}.")
        gen_b = (
            _artifact(f"Regarding whether {row['anchor']}, {row['anchor']}.")
            if generated == "artifact"
            else _doc(row["rng"])
        )
        negs = [*row["mined"], gen_a, gen_b]
        flags = [False, False, False, True, True]
        weights = [1.0, 1.0, 1.0, 1.0, 1.0]
        if artifact_weight is not None:
            weights[3] = artifact_weight
            if generated == "artifact":
                weights[4] = artifact_weight
        if shuffle_sources:
            flags = list(rng.permutation(flags))
        if plant_false_negative and plant_false_negative[0] == r:
            negs[plant_false_negative[1] - 1] = row["positive"]
        if empty_slot and empty_slot[0] == r:
            negs[empty_slot[1] - 1] = ""
            weights[empty_slot[1] - 1] = 0.0
        records["anchor"].append(row["anchor"])
        records["positive"].append(row["positive"])
        for i, t in enumerate(negs, 1):
            records[f"negative_{i}"].append(t)
        records["labels"].append(encode_negative_labels(weights, flags))
    return Dataset.from_dict(records)


@pytest.fixture(scope="module")
def planted(tiny_model_path, tmp_path_factory) -> tuple[DiagnosticsReport, object]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path)
    out = tmp_path_factory.mktemp("diag")
    ds = make_dataset(plant_false_negative=(7, 2), empty_slot=(3, 1))
    return diagnose(ds, model, output_dir=out, max_rows=None, n_shuffles=20), out


def test_planted_artifact_is_visible(planted):
    report, _ = planted
    probes = report.shortcut.probes
    assert probes["surface"].auc > 0.95
    assert probes["embedding"].auc > 0.9
    mi = report.shortcut.mutual_information["sim_q_neg"]["raw"]
    assert mi.normalized > 0.25, mi
    assert mi.mi_bits > 5 * mi.shuffled_p95_bits
    assert mi.bins == 10 and mi.n == 48 * 5 - 1
    # generated text restates the query: it is harder than nearly every mined negative of its row
    assert report.hardness.raw["generated"].mean > 0.9
    assert 0.3 < report.hardness.raw["mined"].mean < 0.7  # leave-one-out reference


def test_counts_and_empty_slots(planted):
    report, _ = planted
    assert report.rows_used == report.rows_total == 48
    assert report.counts["mined"] == {
        "slots": 144,
        "non_empty": 143,
        "empty": 1,
        "zero_weight": 0,
        "masked_by_guard": 0,
    }
    assert report.counts["generated"]["non_empty"] == 96
    assert report.spectrum.raw["mined"].n == 143


def test_planted_false_negative_is_reported(planted):
    report, _ = planted
    fn = report.false_negatives
    hits = [e for e in fn.examples if e.at_or_above_positive and e.row == 7 and e.column == "negative_2"]
    assert len(hits) == 1
    assert hits[0].source == "mined" and hits[0].identical_to_positive
    assert fn.examples[0] == hits[0]  # copies of the positive are listed first
    assert fn.raw["mined"].identical == 1 and fn.raw["generated"].identical == 0
    assert hits[0].sim_q_neg == pytest.approx(hits[0].sim_q_pos, abs=1e-5)
    assert fn.raw["mined"].at_or_above >= 1
    assert fn.raw["mined"].within_margin >= fn.raw["mined"].at_or_above


def test_report_files(planted):
    report, out = planted
    data = json.loads((out / "report.json").read_text())
    assert data["shortcut"]["probes"]["surface"]["auc"] > 0.95
    assert data["false_negatives"]["examples"][0]["row"] >= 0
    md = (out / "report.md").read_text()
    assert "## False-negative risk" in md and "| 7 | negative_2 | mined |" in md
    assert set(report.figures) == {"spectrum.png", "margin.png", "hardness.png"}
    for name in report.figures:
        assert (out / name).stat().st_size > 5000
        assert f"![{name}]({name})" in md


def test_shuffled_sources_show_nothing(tiny_model):
    ds = make_dataset(96, shuffle_sources=True, seed=1)
    report = diagnose(ds, tiny_model, max_rows=None, n_shuffles=20, seed=1)
    for probe in report.shortcut.probes.values():
        assert 0.35 < probe.auc < 0.65, probe
    mi = report.shortcut.mutual_information["sim_q_neg"]["raw"]
    assert mi.mi_bits < 0.03
    assert mi.mi_bits < 3 * mi.shuffled_p95_bits
    assert abs(report.hardness.raw["generated"].mean - 0.5) < 0.15


def test_weights_that_downweight_the_artifact_change_the_weighted_view(tiny_model):
    raw = diagnose(make_dataset(generated="half"), tiny_model, max_rows=None, n_shuffles=5)
    down = diagnose(make_dataset(generated="half", artifact_weight=0.01), tiny_model, max_rows=None, n_shuffles=5)
    p_raw, p_down = raw.shortcut.probes["surface"], down.shortcut.probes["surface"]
    assert p_raw.auc == pytest.approx(p_down.auc)  # raw view ignores weights
    assert p_raw.auc_weighted == pytest.approx(p_raw.auc)  # all weights 1
    assert p_raw.auc > 0.7
    assert p_down.auc_weighted < p_raw.auc - 0.15
    assert p_down.auc_weighted_refit < 0.7
    mi_raw = down.shortcut.mutual_information["sim_q_neg"]["raw"]
    mi_w = down.shortcut.mutual_information["sim_q_neg"]["weighted"]
    assert mi_w.mi_bits < mi_raw.mi_bits / 2
    assert mi_w.n_effective < mi_w.n
    assert down.spectrum.weighted["generated"].mean < down.spectrum.raw["generated"].mean
    assert down.spectrum.weighted["generated"].weight_sum == pytest.approx(48 * 1.01)


def test_without_labels_num_generated_and_subsampling(tiny_model):
    ds = make_dataset(40).remove_columns("labels")
    plain = diagnose(ds, tiny_model, max_rows=None, n_shuffles=0)
    assert plain.counts["generated"]["slots"] == 0
    assert plain.notes and "No generated negatives" in plain.notes[0]
    flagged = diagnose(ds, tiny_model, num_generated=2, max_rows=25, seed=3, n_shuffles=0)
    assert flagged.rows_used == 25 and flagged.rows_total == 40
    assert flagged.counts["generated"]["slots"] == 50
    assert flagged.shortcut.probes["surface"].auc > 0.95
    with pytest.raises(ValueError, match="num_generated"):
        diagnose(make_dataset(8), tiny_model, num_generated=2)


def test_subsample_keeps_original_row_index(tiny_model):
    ds = make_dataset(30, plant_false_negative=(21, 1))
    report = diagnose(ds, tiny_model, max_rows=12, seed=0, n_shuffles=0)
    rows = set(report.table.row.tolist())
    assert len(rows) == 12 and max(rows) < 30
    flagged = {(e.row, e.column) for e in report.false_negatives.examples if e.at_or_above_positive}
    assert ((21, "negative_1") in flagged) == (21 in rows)


def test_margins_follow_mine_hard_negatives(tiny_model):
    ds = make_dataset(16)
    none = diagnose(ds, tiny_model, relative_margin=None, n_shuffles=0)
    wide = diagnose(ds, tiny_model, absolute_margin=2.0, relative_margin=None, n_shuffles=0)
    for src in ("mined", "generated"):
        assert none.false_negatives.raw[src].within_margin == none.false_negatives.raw[src].at_or_above
        # cosine gaps are < 2, so an absolute margin of 2 flags every negative
        assert wide.false_negatives.raw[src].within_margin_share == pytest.approx(1.0)


def test_missing_matplotlib_gives_install_hint(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    report = diagnose(make_dataset(12), tiny_model, output_dir=tmp_path, n_shuffles=0)
    assert report.figures == []
    assert any("pip install 'negsynth-hf[plots]'" in n for n in report.notes)
    assert not list(tmp_path.glob("*.png"))
    assert json.loads((tmp_path / "report.json").read_text())["figures"] == []
    assert "negsynth-hf[plots]" in (tmp_path / "report.md").read_text()


def test_rejects_wrong_layout(tiny_model):
    with pytest.raises(ValueError, match="n-tuple layout"):
        diagnose(Dataset.from_dict({"query": ["a"], "negative_1": ["b"]}), tiny_model)
    bad = make_dataset(4).remove_columns("labels").add_column("labels", [[1.0, 0.0]] * 4)
    with pytest.raises(ValueError, match="w_1..w_N"):
        diagnose(bad, tiny_model)


def test_provenance_skips_fillers_and_shows_rejected_texts(tiny_model, tmp_path):
    """On a real build_dataset output: fillers skipped, the guard's rejected copy of a positive reappears (raw)."""
    from test_transform_helpers import ScriptedSpec, corpus, pairs

    from negsynth_hf.build import build_dataset

    data = pairs(8, fail_rows=(4,))
    planted = ((data["anchor"][2], data["positive"][2]),)  # the LLM "negative" of row 2 copies its positive
    result = build_dataset(
        Dataset.from_dict(data),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(copies=planted, fail_token="FAIL"),
        strategy="naive",
        num_mined=3,
        num_generated=2,
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=False,
    )
    counts = result.summary.counts
    assert counts["generated_masked"] >= 1
    plain = diagnose(result.train, tiny_model, n_shuffles=0)
    assert plain.counts["generated"]["zero_weight"] > 0 and "provenance=" in plain.notes[0]
    assert plain.false_negatives.raw["generated"].identical == 0  # the copy was replaced by a filler

    report = diagnose(result.train, tiny_model, provenance=result.provenance, n_shuffles=0)
    gen = report.counts["generated"]
    assert gen["masked_by_guard"] == counts["generated_masked"]
    assert gen["empty"] == counts["generated_filled"] >= 2  # row 4 failed: both its generated slots are fillers
    assert report.counts["mined"]["empty"] == counts["mined_filled"]
    hit = [e for e in report.false_negatives.examples if e.identical_to_positive]
    assert [(e.row, e.source, e.weight) for e in hit] == [(2, "generated", 0.0)]
    assert report.false_negatives.raw["generated"].identical == 1
    assert report.false_negatives.weighted["generated"].identical == 0  # weight 0: gone from the weighted view
