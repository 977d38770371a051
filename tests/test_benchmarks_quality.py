"""Smoke test of benchmarks/quality.py's plumbing: a tiny BEIR collection, a tiny retriever and a loopback LLM.

Every variant runs through ``build_dataset`` -> ``training.train`` -> the IR evaluator, results land in the
JSON/markdown/PNG files, and a rerun skips the records already there.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_server import FaultServer  # noqa: E402

TOPICS = [
    ("wing flutter", "flutter of swept wings at transonic speed"),
    ("boundary layer", "laminar boundary layer separation on flat plates"),
    ("heat transfer", "heat transfer in hypersonic stagnation regions"),
    ("shock waves", "shock wave interaction with turbulent layers"),
    ("buckling", "buckling of thin cylindrical shells under pressure"),
    ("jet noise", "noise radiated by supersonic jets"),
    ("slender bodies", "pressure distribution on slender bodies of revolution"),
    ("ablation", "ablation of heat shields during reentry"),
    ("vortex", "vortex shedding behind bluff bodies"),
    ("panel", "panel flutter in supersonic flow"),
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_quality():
    return _load("quality")


def _write_collection(folder: Path) -> Path:
    folder.mkdir(parents=True)
    docs, queries, train, test = [], [], [], []
    for i, (title, topic) in enumerate(TOPICS):
        for j in range(3):
            docs.append({"_id": f"{i * 3 + j + 1}", "title": f"{title} {j}", "text": f"A study of {topic}, part {j}."})
        queries.append({"_id": str(i + 1), "text": f"what is known about {topic}?"})
        (train if i % 2 == 0 else test).append((str(i + 1), f"{i * 3 + 1}", 1))
        (train if i % 2 == 0 else test).append((str(i + 1), f"{i * 3 + 2}", 1))
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels").mkdir()
    for name, rows in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_quality_smoke(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setenv("NEGSYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    quality = _load_quality()
    collection = _write_collection(tmp_path / "tinycoll")
    results = tmp_path / "results"
    with FaultServer() as server:
        argv = [
            "--collection",
            str(collection),
            "--seeds",
            "0",
            "--base-model",
            tiny_model_path,
            "--generator-backend",
            "openai",
            "--generator-model",
            "fault-model",
            "--generator-base-url",
            server.base_url,
            "--num-mined",
            "2",
            "--num-generated",
            "2",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-seq-length",
            "32",
            "--work-dir",
            str(tmp_path / "work"),
            "--results-dir",
            str(results),
            "--llm-cache-dir",
            str(tmp_path / "llm-cache"),
            "--data-dir",
            str(tmp_path / "data"),
        ]
        records = quality.main(argv)
        requests_first = len(server.requests)
        # a rerun finds every record and every build: nothing trained, no LLM call
        again = quality.main(argv)
        assert len(server.requests) == requests_first
    assert {(r["variant"], r["seed"]) for r in records} == {(v, s) for v in quality.VARIANTS for s in (0,)}
    assert again == records
    for r in records:
        for key in ("ndcg@10", "mrr@10", "recall@100"):
            assert 0.0 <= r[key] <= 1.0
        if r["variant"] != "base":
            assert r["steps"] == 2 and r["n_train_rows"] > 0
    by = {(r["variant"], r["seed"]): r for r in records}
    assert by[("counterfactual", 0)]["training_set"] == "counterfactual"
    assert by[("full", 0)]["loss_config"]["entropy_weight"] == pytest.approx(0.05)
    assert by[("counterfactual_weighted", 0)]["loss_config"]["entropy_weight"] == 0.0
    saved = json.loads((results / "quality_tinycoll.json").read_text())
    assert len(saved) == len(records)
    md = (results / "quality_tinycoll.md").read_text()
    assert "| full |" in md and "± " in md
    assert (results / "quality_tinycoll.png").stat().st_size > 0
    assert by[("counterfactual_checks", 0)]["training_set"] == "counterfactual_checks"
    assert by[("full_checks", 0)]["training_set"] == "counterfactual_checks"
    assert by[("full_hardness", 0)]["loss_config"]["hardness_mode"] == "hard_negatives"
    assert by[("mined_hardness", 0)]["loss_config"]["hardness_strength"] == 5.0
    # per-query scores of every run (means are their means), and paired tests over the same test queries
    per_query = json.loads((results / "quality_tinycoll.per_query.json").read_text())["runs"]
    assert set(per_query) == {f"{v}/0" for v in quality.VARIANTS}
    for r in records:
        scores = per_query[f"{r['variant']}/0"]["ndcg@10"]
        assert len(scores) == r["n_eval_queries"] and sum(scores.values()) / len(scores) == pytest.approx(r["ndcg@10"])
    tests = json.loads((results / "quality_tinycoll.significance.json").read_text())
    pairs = {(t["a"], t["b"]) for t in tests if t["metric"] == "ndcg@10"}
    assert {("full", "mined"), ("full", "naive"), ("naive", "mined")} <= pairs
    assert all(0.0 <= t["p_value"] <= 1.0 and t["test"] == "fisher" for t in tests)
    assert "Δ vs mined" in md
    from datasets import load_dataset  # what the LLM wrote, keyed by ids, readable as a dataset

    n_rows = json.loads((results / "quality_tinycoll.meta.json").read_text())["n_train_rows"]
    for name, policy in quality.COUNTERFACTUAL_SETS.items():  # each set's slots say which guard judged them
        slots = load_dataset("json", data_files=str(tmp_path / "data" / "tinycoll" / f"{name}.jsonl"))["train"]
        assert len(slots) == n_rows * 2 and set(slots["guard_policy"]) <= {policy, None}
    assert {"query_id", "text", "guard_decision", "judge_p_relevant"} <= set(slots.column_names)
    meta = json.loads((results / "quality_tinycoll.meta.json").read_text())
    assert meta["n_test_queries"] == 5 and meta["test_corpus_size"] == 30 and meta["seeds"] == [0]
    # the cross-collection table the README shows, read back from the same files
    summary = _load("quality_summary").main(["--collections", "tinycoll", "missing", "--results-dir", str(results)])
    assert (results / "quality_summary.md").read_text() == summary
    assert "| variant | tinycoll |" in summary
    assert f"| full | {by[('full', 0)]['ndcg@10']:.4f} (1 seed)" in summary and "| full − mined |" in summary
    assert "missing" not in summary  # a collection never scored is left out, not shown empty
    # an invocation that does one more run of the grid: the files' seeds and command stay the grid's
    quality.main([*argv, "--variants", "base", "--seeds", "5"])
    meta = json.loads((results / "quality_tinycoll.meta.json").read_text())
    assert meta["seeds"] == [0, 5] and "--variants" not in meta["command"] and "--seeds" not in meta["command"]


def test_variants_map_to_the_documented_loss_switches():
    """(d)/(e) plain InfoNCE = weights as a 0/1 mask without entropy; (f) weights; (g) weights + entropy."""
    import argparse

    quality = _load_quality()
    args = argparse.Namespace(
        entropy_weight=0.05, entropy_temperature=0.1, scale=20.0, lora_r=8, lora_alpha=16, batch_size=16,
        learning_rate=2e-4, steps=15, max_seq_length=128, hardness_strength=5.0,
    )  # fmt: skip
    switches = {
        v: (c.loss, c.use_weights, c.entropy_weight)
        for v in quality.VARIANT_SPECS
        for c in [quality.train_config(v, args)]
    }
    assert switches["naive"] == switches["counterfactual"] == ("causalneg", "mask", 0.0)
    assert switches["counterfactual_weighted"] == ("causalneg", "weights", 0.0)
    assert switches["full"] == ("causalneg", "weights", 0.05)
    assert switches["mined"][0] == "mined" and switches["in_batch"][0] == "in_batch"
    assert switches["counterfactual_checks"] == switches["counterfactual_guard_off"] == switches["naive"]
    assert switches["full_checks"] == switches["full"] and switches["full_checks_hardness"][0] == "causalneg"
    hard = {v: quality.train_config(v, args).hardness_mode for v in quality.VARIANT_SPECS}
    assert {v for v, mode in hard.items() if mode} == {"mined_hardness", "full_hardness", "full_checks_hardness"}
    # the earlier table's names train on the recommended guard's set; the others on their own policy's
    guard = {v: quality.COUNTERFACTUAL_SETS.get(spec["dataset"]) for v, spec in quality.VARIANT_SPECS.items()}
    assert {guard[v] for v in ("counterfactual", "counterfactual_weighted", "full", "full_hardness")} == {
        quality.RECOMMENDED_GUARD_POLICY
    }
    assert {guard[v] for v in quality.VARIANTS if "checks" in v} == {"checks"}
    assert set(quality.VARIANTS) == {"base", *quality.VARIANT_SPECS}


def test_aggregate_mean_and_spread():
    quality = _load_quality()
    recs = [
        {"variant": "mined", "seed": s, "ndcg@10": v, "mrr@10": v, "recall@100": v} for s, v in enumerate([0.1, 0.3])
    ]
    row = quality.aggregate(recs)[0]
    assert row["ndcg@10"] == pytest.approx(0.2) and row["ndcg@10_std"] == pytest.approx(0.1414, abs=1e-3)


def test_summary_marks_only_significant_differences_in_their_direction():
    summary = _load("quality_summary")
    tests = [
        {"a": "full", "b": "mined", "metric": "ndcg@10", "delta": 0.012, "p_value": 0.01},
        {
            "a": "naive",
            "b": "full",
            "metric": "ndcg@10",
            "delta": 0.02,
            "p_value": 0.03,
            "ci_low": 0.01,
            "ci_high": 0.03,
        },
        {"a": "counterfactual", "b": "mined", "metric": "ndcg@10", "delta": 0.03, "p_value": 0.2},
    ]
    assert summary.marks(tests, "full") == "▲m ▼n"
    assert summary.marks(tests, "counterfactual") == ""  # not significant: no mark whatever the size
    assert summary.marks(tests, "mined") == ""
    assert summary.test_for(tests, "full", "naive") == (-0.02, 0.03)  # stored the other way round
    assert summary.interval_for(tests, "full", "naive") == (-0.03, -0.01)
    assert summary.comparison_cell(tests, "full", "naive") == "-0.0200 [-0.030, -0.010] (p 0.030)*"
    assert summary.comparison_cell(tests, "full", "mined") == "+0.0120 (p 0.010)*"  # no stored interval


def test_summary_table_shows_intervals_and_single_seed_rows():
    summary = _load("quality_summary")
    quality = _load_quality()
    recs = [{"variant": "mined", "seed": s, "ndcg@10": v} for s, v in enumerate([0.40, 0.42])]
    recs += [{"variant": "full", "seed": 0, "ndcg@10": 0.45}, {"variant": "base", "seed": 0, "ndcg@10": 0.39}]
    for r in recs:
        r.update({"mrr@10": r["ndcg@10"], "recall@100": r["ndcg@10"]})
    tests = [
        {"a": "full", "b": "mined", "metric": "ndcg@10", "delta": 0.04, "p_value": 0.0004, "ci_low": 0.02,
         "ci_high": 0.06},
    ]  # fmt: skip
    meta = {"n_train_queries": 9, "n_train_rows": 9, "n_test_queries": 5, "test_corpus_size": 30, "seeds": [0, 1, 2]}
    scored = {
        "tiny": {
            "meta": meta,
            "rows": {r["variant"]: r for r in quality.aggregate(recs)},
            "tests": tests,
            "cost": {
                "selection_runs": 0,
                "selection_seconds": 0.0,
                "test_runs": 4,
                "test_seconds": 60.0,
            },  # fmt: skip
        }
    }
    text = summary.summary_markdown(scored)
    assert "| full − mined | +0.0400 [+0.020, +0.060] (p < 0.001)* |" in text  # the interval the caption promises
    assert "| full | 0.4500 (1 seed) ▲m |" in text  # one seed: no fake "± 0.0000"
    assert "| mined | 0.4100 ± 0.0141 |" in text and "| base | 0.3900 |" in text
    assert "seeds 0, 1, 2 (0, 1 so far)" in text  # a grid still running says how far it got


def test_selection_scores_candidates_on_a_validation_subset_and_trains_with_the_winner(tmp_path, tiny_model_path):
    quality = _load_quality()
    collection = _write_collection(tmp_path / "tinycoll")
    results = tmp_path / "results"
    argv = [
        "--collection", str(collection), "--seeds", "0", "--base-model", tiny_model_path,
        "--variants", "base", "mined", "--num-mined", "2", "--batch-size", "2", "--max-seq-length", "32",
        "--select-steps", "1", "2", "--select-variants", "mined", "--select-eval-corpus-size", "12",
        "--work-dir", str(tmp_path / "work"), "--results-dir", str(results), "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    records = quality.main(argv)
    meta = json.loads((results / "quality_tinycoll.meta.json").read_text())
    selection = meta["selection"]
    assert selection["eval_corpus_size"] == 12 and {c["steps"] for c in selection["candidates"]} == {1, 2}
    assert {r["steps"] for r in records if r["variant"] == "mined"} == {selection["chosen"]["steps"]}
    assert meta["test_corpus_size"] == 30  # the test run still scores the full corpus
    for steps in (1, 2):  # each candidate: the validation queries over 12 documents, in its own files
        stem = results / "quality_validation" / f"quality_tinycoll_steps{steps}_lr0.0002_corpus12"
        candidate = json.loads(Path(f"{stem}.meta.json").read_text())
        assert candidate["split"] == "validation" and candidate["test_corpus_size"] == 12
    assert "(12 documents)" in (results / "quality_tinycoll.md").read_text()


def test_grid_command_leaves_out_only_what_chooses_runs():
    """The result file's command reproduces its whole grid: --variants/--seeds pick runs, never their settings."""
    quality = _load_quality()
    one = ["--collection", "cisi", "--variants", "mined", "full", "--seeds", "1", "--threads", "1"]
    assert quality.grid_command(one) == "python benchmarks/quality.py --collection cisi --threads 1"
    assert (
        quality.grid_command(["--seeds=2", "--collection", "a b"]) == "python benchmarks/quality.py --collection 'a b'"
    )
    whole = quality.parse_args(["--collection", "cisi", "--threads", "1"])
    part = quality.parse_args(one)
    settings = quality.resolve_settings(whole)
    assert quality.settings_key(part, settings) == quality.settings_key(whole, settings)
    assert quality.settings_key(quality.parse_args([*one, "--steps", "7"]), settings) != quality.settings_key(
        whole, settings
    )


def test_concurrent_json_writers_do_not_collide(tmp_path):
    """Two grid processes save the same meta file at once (a crash seen in session 8 with one shared tmp name)."""
    from concurrent.futures import ThreadPoolExecutor

    reporting = _load("reporting")
    target = tmp_path / "quality_x.meta.json"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: reporting.write_json(target, {"writer": i, "pad": "x" * 100_000}), range(40)))
    assert json.loads(target.read_text())["writer"] in range(40)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind
