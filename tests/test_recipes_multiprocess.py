"""The build and train recipes as two gloo DDP processes on CPU.

``accelerate launch --cpu`` runs ONE process (its CPU multi-process path needs MPI), so this launches with
``torchrun --nproc_per_node 2`` and ``ACCELERATE_USE_CPU=1``, which is what accelerate's MULTI_CPU mode reads.

build: each rank mines and synthesizes its shard (tiny random chat LM, transformers backend; or the OpenAI client
against a loopback server that counts requests) and saves it; rank 0 assembles the full set from the shards, so
every LLM request is sent once across ranks, as many as one process sends.
train: two DDP processes with ``gather_across_devices``; only rank 0 writes the adapter and merged model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def launch(script: str, *args: str, env: dict[str, str], processes: int = 2) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    cmd = [
        *(launcher if processes > 1 else [sys.executable]),
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
    # the rows' LLM calls were the ranks' (their statistics summed), and the shard hand-over folder is gone
    assert counts["llm_calls"] > 0 and summary["generator_stats"]["misses"] > 0, summary
    assert not list(run_dir.glob(".*.shards"))

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


@pytest.mark.slow
def test_two_process_build_sends_each_llm_request_once(tmp_path, tiny_model_path, recipe_env):
    """Counted at a real loopback HTTP server: two ranks send exactly the requests one process sends (some of
    them refused, so those rows' replies fail validation), and both builds write the same dataset."""
    from fault_server import FaultServer
    from test_build_shards import refuse_some

    from negsynth_hf.artifacts import BuiltDataset

    built, calls = {}, {}
    with FaultServer() as server:
        server.rule = refuse_some
        generator = json.dumps({"backend": "openai", "model": "fault-model", "base_url": server.base_url,
                                "api_key_env": None})  # fmt: skip
        for processes in (1, 2):
            run_dir = tmp_path / f"run{processes}"
            env = {**recipe_env, "NEGSYNTH_CACHE": str(tmp_path / f"cache{processes}")}  # nothing answered yet
            server.reset_counts()
            launch(
                "build_dataset",
                "--run_dir", str(run_dir), "--base_model", tiny_model_path, "--base_model_id", "test-org/tiny-bert",
                "--generator", generator, "--num_generated", "1", "--strategy", "naive", "--max_train_queries", "6",
                "--build_options", "{relative_margin: null, max_attempts: 1}",
                env=env, processes=processes,
            )  # fmt: skip
            calls[processes] = (server.count(), sum(1 for seen in server.requests if seen.fault == "content"))
            built[processes] = BuiltDataset.load(run_dir / "dataset")
    (single, refused), (sharded, _) = calls[1], calls[2]
    assert 0 < refused < single  # some replies were rejected, some accepted
    assert sharded == single, calls
    assert built[2].train.to_list() == built[1].train.to_list()
    assert built[2].provenance.to_list() == built[1].provenance.to_list()
