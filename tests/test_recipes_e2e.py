"""The four recipes end to end under ``accelerate launch --cpu --num_processes 1`` with the smoke config.

Real subprocesses, real CISI data from ../shared/data, the smoke config's mined-only build; only the model is
swapped for the tiny in-code BERT (``--base_model``) to keep the run to a couple of minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def launch(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "recipes/accelerate_configs/cpu.yaml", "--cpu", "--num_processes", "1",
        f"recipes/{script}.py", "--config", "recipes/smoke/config.yaml", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
def test_smoke_recipes_end_to_end(tmp_path, tiny_model_path, recipe_env):
    env = recipe_env
    run_dir = tmp_path / "run"
    common = ["--run_dir", str(run_dir), "--base_model", tiny_model_path, "--base_model_id", "test-org/tiny-bert"]

    out = launch("build_dataset", *common, env=env).stdout
    assert "[build] saved 24 rows" in out
    info = json.loads((run_dir / "dataset" / "recipe_info.json").read_text())
    assert info["source"]["dataset"] == "cisi" and len(info["validation_query_ids"]) == 4
    assert not set(info["validation_query_ids"]) & set(info["train_query_ids"])

    known = json.loads((run_dir / "dataset" / "known_positives.json").read_text())
    assert len(known) == 24 and all(known)  # CISI's judged-relevant texts per row, kept for batching

    out = launch("train", *common, env=env).stdout
    assert "batches: no known positive of a query in its batch" in out
    summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["loss_name"] == "CausalNegLoss"
    assert summary["validation_after"]  # evaluator on held-out training queries ran
    assert (run_dir / "model" / "adapter" / "adapter_config.json").is_file()

    out = launch("evaluate", *common, env=env).stdout
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "trained"]
    assert results["num_queries"] == 10 and results["corpus_size"] >= 300
    assert "| trained |" in out

    launch("publish", *common, "--dataset_repo_id", "me/cisi-smoke", "--model_repo_id", "me/tiny-smoke", env=env)
    staging = run_dir / "publish"
    plan = json.loads((staging / "upload_plan.json").read_text())
    assert [(t["repo_id"], t["repo_type"]) for t in plan["targets"]] == [
        ("me/cisi-smoke", "dataset"),
        ("me/tiny-smoke", "model"),
        ("me/tiny-smoke-lora", "model"),
    ]
    dataset_folder = Path(plan["targets"][0]["folder"])
    assert (dataset_folder / "n-tuple").is_dir() and (staging / "model" / "model.safetensors").is_file()
    assert not list(dataset_folder.rglob("known_positives*"))  # a local training aid, not a published config
    adapter_config = json.loads((staging / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "test-org/tiny-bert"

    from datasets import load_dataset

    assert len(load_dataset(str(dataset_folder), "n-tuple", split="train")) == 24
