"""What ``negsynth demo`` prints at the end: kept and masked generated negatives with their reasons, seconds per
step and the folders it wrote, from a real small build (tiny retriever, scripted LLM: a mock named as such)."""

from __future__ import annotations

from datasets import Dataset
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.build import build_dataset
from negsynth_hf.pipeline.demo import DemoResult, demo_report, example_negatives
from negsynth_hf.recipe_config import parse_step_args


def _built(tiny_model, tmp_path) -> tuple[BuiltDataset, dict]:
    data = pairs(8)
    # the scripted (mock) LLM copies the positive as the first "negative" of rows 1, 3 and 5: the guard masks them
    planted = tuple((data["anchor"][i], data["positive"][i]) for i in (1, 3, 5))
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
        assert f"{decision} by the margin guard ({record['guard_reason']})" in block
        assert f"weight {record['weight']:.2f}: " in block
    # masked examples cover each reason the guard gave (here: margin and the planted copies' near_duplicate)
    assert {"margin", "near_duplicate"} <= {r["guard_reason"] for r in masked}
    assert "(margin)" in "".join(blocks[3:]) and "(near_duplicate)" in "".join(blocks[3:])


def test_report_has_examples_timings_and_every_output_folder(tiny_model, tmp_path):
    built, _ = _built(tiny_model, tmp_path)
    cfg = parse_step_args("demo", ["--run_dir", str(tmp_path / "run")])
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
    # before a build there is nothing to show, and the report says where things would be
    empty = demo_report(parse_step_args("demo", ["--run_dir", str(tmp_path / "none")]), DemoResult(timings={}))
    assert "Generated negatives" not in empty and "Files:" in empty
