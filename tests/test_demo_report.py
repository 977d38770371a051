"""What ``negsynth demo`` prints at the end: kept and masked generated negatives with their reasons, seconds per
step and the folders it wrote, from a real small build (tiny retriever, scripted LLM: a mock named as such)."""

from __future__ import annotations

from datasets import Dataset
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.build import build_dataset
from negsynth_hf.demo import demo_config
from negsynth_hf.pipeline.demo import DemoResult, demo_report, example_negatives


def _built(tiny_model, tmp_path) -> tuple[BuiltDataset, dict]:
    data = pairs(8)
    # the scripted (mock) LLM copies the positive as the first "negative" of rows 1, 3 and 5: the guard masks them
    planted = tuple((data["anchor"][i], data["positive"][i]) for i in (1, 3, 5))
    # the default guard policy: naive texts carry no query edit, so it decides them by the margin rule
    built = build_dataset(
        Dataset.from_dict(data),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(copies=planted),
        strategy="naive",
        num_mined=2,
        num_generated=2,
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=False,
    )
    return built, data


def test_examples_show_kept_and_masked_negatives_with_query_text_decision_and_reason(tiny_model, tmp_path):
    built, data = _built(tiny_model, tmp_path)
    text = example_negatives(built, dataset_dir="out/dataset")
    kept = [r for r in built.provenance if r["source"] == "generated" and r["status"] == "ok"]
    masked = [r for r in built.provenance if r["source"] == "generated" and r["status"] == "masked"]
    assert len(kept) >= 3 and len(masked) >= 3  # the build itself gives both kinds
    assert text.startswith(f"Generated negatives: {len(kept)} kept, {len(masked)} masked")
    assert "`provenance` config of out/dataset" in text
    blocks = text.split("\n\n")[1:]
    assert [b.split()[0] for b in blocks] == ["KEPT"] * 3 + ["MASKED"] * 3
    for block in blocks:
        for name in ("query:", "edit:", "text:", "decision:", "reason:"):
            assert f"\n  {name}" in block, block
    shown = {(r["row"], r["column"]): r for r in kept + masked}
    for block, label in zip(blocks, ["KEPT"] * 3 + ["MASKED"] * 3, strict=True):
        row, column = int(block.split()[2].rstrip(",")), block.split()[3].rstrip(",")
        record = shown[(row, column)]  # a block per record of its own decision, naming its row and slot
        assert (record["status"] == "ok") == (label == "KEPT")
        assert data["anchor"][row][:30] in block  # the row's query
        text = record["text"] if label == "KEPT" else record["original_text"]
        assert " ".join(text.split())[:40] in " ".join(block.split())  # the generated text (a masked one: rejected)
        decision = "kept" if label == "KEPT" else "masked"
        assert f"{decision} by the {record['guard_policy']} guard ({record['guard_reason']})" in block
        assert f"weight {record['weight']:.2f}: " in block
    # masked examples cover each reason the guard gave (here: margin and the planted copies' near_duplicate)
    assert {"margin", "near_duplicate"} <= {r["guard_reason"] for r in masked}
    assert "(margin)" in "".join(blocks[3:]) and "(near_duplicate)" in "".join(blocks[3:])


def test_report_has_examples_timings_and_every_output_folder(tiny_model, tmp_path):
    built, _ = _built(tiny_model, tmp_path)
    cfg = demo_config(["--run_dir", str(tmp_path / "run")])
    built.save(cfg.dataset_dir)
    timings = {"build": 12.3, "train": 45.6, "evaluate": 7.8, "publish": 0.4, "total": 66.1}
    report = demo_report(cfg, DemoResult(timings=timings))
    assert "Generated negatives:" in report and report.count("\nKEPT  ") == 3 and report.count("\nMASKED  ") == 3
    assert "| step | seconds |" in report and "| train | 46 |" in report and "| total | 66 |" in report
    for name, folder in (
        ("dataset", cfg.dataset_dir),
        ("model", cfg.model_dir),
        ("results", cfg.eval_dir),
        ("publish", cfg.staging_dir),
    ):
        assert f"  {name:<8} {folder}" in report
    assert "(dry run: nothing was uploaded)" in report  # the demo never uploads
    # before a build there is nothing to show, and the report says where things would be
    empty = demo_report(demo_config(["--run_dir", str(tmp_path / "none")]), DemoResult(timings={}))
    assert "Generated negatives" not in empty and "Files:" in empty


def test_summary_counters_say_what_they_count(tiny_model, tmp_path):
    """``llm_calls`` (requests) and the cache's ``calls`` (batches) differ by design: each row says what it counts."""
    built = build_dataset(
        Dataset.from_dict(pairs(4)),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(cache_dir=str(tmp_path / "responses")),  # scripted (mock) LLM behind the real cache
        strategy="naive",
        num_mined=1,
        num_generated=1,
        cache_dir="",
        show_progress_bar=False,
    )
    table = built.summary.to_markdown()
    stats = built.summary.generator_stats
    assert stats["misses"] == 4 and stats["calls"] == 1  # four requests went out in one batch
    assert "| llm_calls: LLM requests of the synthesis, retries and cache hits included | 4 |" in table
    assert "| calls: batches of those requests sent to the LLM | 1 |" in table
    assert "| misses: requests the LLM answered (not in the cache) | 4 |" in table
    assert "| discarded: rejected answers removed from the cache (a rerun asks again) | 0 |" in table


def test_evaluation_table_names_the_test_that_gave_the_p_values():
    from negsynth_hf.evaluation import EvaluationResult, ModelScores

    scores = {"nDCG@10": 0.5, "MRR@10": 0.4, "Recall@100": 0.9}
    result = EvaluationResult("scifact", "test", 300, 1000, 5183, [ModelScores("base", "b", scores, 1.0)])
    result.models.append(ModelScores("trained", "t", {k: v + 0.01 for k, v in scores.items()}, 1.0))
    result.significance = [{"metric": "ndcg@10", "p_value": 0.04}]
    text = result.to_markdown()
    assert "| p (paired randomization test) | 0.040 |" in text
    assert "SciPy's permutation_test" in text and "(ranx)" not in text
