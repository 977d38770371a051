"""The build and train recipes as two gloo DDP processes on CPU.

``accelerate launch --cpu`` runs ONE process (its CPU multi-process path needs MPI), so this launches with
``torchrun --nproc_per_node 2`` and ``ACCELERATE_USE_CPU=1``, which is what accelerate's MULTI_CPU mode reads.

build: each rank synthesizes its shard (tiny random chat LM, transformers backend) into the shared response
cache; rank 0 assembles the full set from that cache, so its own build makes no new LLM call.
train: two DDP processes with ``gather_across_devices``; only rank 0 writes the adapter and merged model.
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
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        f"recipes/{script}.py", "--config", "recipes/smoke/config.yaml", *args,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env={**env, "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.mark.slow
def test_two_process_build_and_train(tmp_path, tiny_model_path, recipe_env):
    from test_generators_transformers import build_tiny_chat_lm

    lm = build_tiny_chat_lm(tmp_path / "lm")
    env = recipe_env
    run_dir = tmp_path / "run"
    common = ["--run_dir", str(run_dir), "--base_model", tiny_model_path, "--base_model_id", "test-org/tiny-bert"]
    generator = json.dumps({"backend": "transformers", "model": str(lm), "constrained": True, "batch_size": 4})
    launch(
        "build_dataset",
        *common,
        "--generator", generator, "--num_generated", "1", "--strategy", "naive", "--max_train_queries", "6",
        "--build_options", "{relative_margin: null, max_new_tokens: 160, max_attempts: 1}",
        env=env,
    )  # fmt: skip
    info = json.loads((run_dir / "dataset" / "recipe_info.json").read_text())
    assert info["num_processes"] == 2
    summary = json.loads((run_dir / "dataset" / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["rows_out"] == 12  # 6 queries x 2 positives
    # every request of the merged build was answered by a rank's shard build: cache hits only
    # (constrained decoding: the tiny random LM writes schema-valid JSON, which the response cache stores)
    assert counts["llm_calls"] == counts["llm_cached_calls"] > 0, counts  # llm_calls counts cached answers too
    assert summary["generator_stats"]["misses"] == 0 and summary["generator_stats"]["hits"] > 0

    launch(
        "train",
        *common,
        "--gather_across_devices",
        "true",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        env=env,
    )
    result = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert result["steps"] == 2 and result["loss_config"]["gather_across_devices"] is True
    assert (run_dir / "model" / "merged" / "model.safetensors").is_file()
