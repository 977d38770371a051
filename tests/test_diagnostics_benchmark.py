"""benchmarks/diagnostics.py on a saved build (scripted generator, tiny retriever): reports and summary written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from datasets import Dataset
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.build import build_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "diagnostics.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_diagnoses_saved_builds(tiny_model, tiny_model_path, tmp_path):
    data = pairs(10)
    planted = ((data["anchor"][3], data["positive"][3]),)
    result = build_dataset(
        Dataset.from_dict(data),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(copies=planted, marker="[GEN] "),
        strategy="naive",
        num_mined=3,
        num_generated=2,
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=False,
    )
    result.save(tmp_path / "build")
    result.train.save_to_disk(str(tmp_path / "plain"))  # a plain n-tuple dataset folder works too
    out = tmp_path / "out"
    bench = _load_script()
    rc = bench.main(
        [
            "--dataset",
            f"scripted={tmp_path / 'build'}",
            "--dataset",
            f"plain={tmp_path / 'plain'}",
            "--retriever",
            tiny_model_path,
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    for name in ("scripted", "plain"):
        report = json.loads((out / name / "report.json").read_text())
        assert report["rows_used"] == 10
        assert (out / name / "report.md").is_file()
    scripted = json.loads((out / "scripted" / "report.json").read_text())
    assert scripted["counts"]["generated"]["masked_by_guard"] >= 1  # provenance was used
    assert scripted["false_negatives"]["raw"]["generated"]["identical"] == 1
    assert (out / "scripted" / "build_config.json").is_file()
    summary = (out / "summary.md").read_text()
    assert "| metric | scripted | plain |" in summary
    assert "surface probe AUC raw" in summary
