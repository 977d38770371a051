"""Crash safety: SIGKILL a synthesis run mid-way, rerun it, get the dataset of an uninterrupted run; the response
cache survives partial writes (truncated, empty, garbage or mismatched entries are misses, never crashes)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset
from fault_server import FaultServer

from negsynth_hf.generators import (
    CachingGenerator,
    ChatRequest,
    GeneratorConfig,
    OpenAIChatGenerator,
    ResponseCache,
    request_key,
)
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

ROOT = Path(__file__).resolve().parent.parent
N = 40
G = 2

# The child process: a plain Dataset.map of the transform over N rows against the (slow) loopback server.
CHILD = """
import json, sys
from datasets import Dataset
from negsynth_hf.generators import GeneratorConfig
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

base_url, cache_dir, out_path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = {{
    "anchor": [f"row-{{i:03d}}; does compound {{i}} lower blood pressure" for i in range(n)],
    "positive": [f"Compound {{i}} lowered systolic pressure by {{i % 9 + 2}} mmHg in adults." for i in range(n)],
}}
config = GeneratorConfig(backend="openai", model="fault-model", base_url=base_url, api_key_env=None,
                         cache_dir=cache_dir, max_concurrency=2, timeout=10, max_retries=1)
transform = CounterfactualNegatives(config, strategy="naive", num_generated={G})
out = Dataset.from_dict(rows).map(transform, batched=True, batch_size=4, load_from_cache_file=False)
result = {{
    "generated": [[out[f"generated_{{k}}"][i] for k in range(1, {G} + 1)] for i in range(n)],
    "failure": [json.loads(r)["failure_reason"] for r in out[PROVENANCE_COLUMN]],
}}
with open(out_path, "w") as handle:
    json.dump(result, handle)
"""


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _child(tmp_path: Path, base_url: str, cache: Path, out: Path) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(G=G), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    log = open(tmp_path / f"{out.stem}.log", "wb")  # noqa: SIM115 - closed by the OS when the child ends
    return subprocess.Popen(
        [sys.executable, str(script), base_url, str(cache), str(out), str(N)], stdout=log, stderr=log, env=env
    )


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("??/*.json"))


def _reference(base_url: str, cache: Path) -> dict:
    config = GeneratorConfig(
        backend="openai", model="fault-model", base_url=base_url, api_key_env=None, cache_dir=str(cache)
    )
    rows = {
        "anchor": [f"row-{i:03d}; does compound {i} lower blood pressure" for i in range(N)],
        "positive": [f"Compound {i} lowered systolic pressure by {i % 9 + 2} mmHg in adults." for i in range(N)],
    }
    out = Dataset.from_dict(rows).map(
        CounterfactualNegatives(config, strategy="naive", num_generated=G), batched=True, batch_size=8
    )
    return {
        "generated": [[out[f"generated_{k}"][i] for k in range(1, G + 1)] for i in range(N)],
        "failure": [json.loads(r)["failure_reason"] for r in out[PROVENANCE_COLUMN]],
    }


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_uninterrupted_run(tmp_path):
    cache = tmp_path / "responses"
    with FaultServer(delay=0.12) as server:
        child = _child(tmp_path, server.base_url, cache, tmp_path / "killed.json")
        deadline = time.monotonic() + 120
        try:
            while len(_entries(cache)) < 8:  # some responses are cached, most are not
                assert child.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "child made no progress"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(30)
        assert child.returncode == -signal.SIGKILL
        assert not (tmp_path / "killed.json").exists()
        cached = _entries(cache)
        assert 8 <= len(cached) < N, len(cached)
        for path in cached:  # every entry that exists is complete (atomic write: temp file + os.replace)
            assert json.loads(path.read_text(encoding="utf-8"))["key"] == path.stem

        # plant damage a crash or a full disk could leave: a truncated entry, an empty one, a stray temp file
        truncated, emptied = cached[0], cached[1]
        truncated.write_text(truncated.read_text(encoding="utf-8")[:37], encoding="utf-8")
        emptied.write_bytes(b"")
        (cache / cached[2].parent.name / ".deadbeef-stray.tmp").write_text('{"key": "half a wri', encoding="utf-8")
        valid_before_rerun = len(cached) - 2

        server.reset_counts()
        rerun = _child(tmp_path, server.base_url, cache, tmp_path / "rerun.json")
        assert rerun.wait(180) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        # only rows without a valid cached answer reach the server (each naive row is one call)
        assert server.count() == N - valid_before_rerun
        log = (tmp_path / "rerun.log").read_text()
        assert "Traceback" not in log and "Ignoring unreadable response-cache entry" in log
    resumed = json.loads((tmp_path / "rerun.json").read_text())

    with FaultServer() as fresh:
        reference = _reference(fresh.base_url, tmp_path / "reference-cache")
    assert resumed["failure"] == [None] * N
    assert resumed == reference


# ---------------------------------------------------------------------------------------------- cache damage
def _req(content: str) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": content},), max_new_tokens=8, prompt_version="t")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_text(p.read_text(encoding="utf-8")[:20], encoding="utf-8"), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x80"), id="not-utf8"),
        pytest.param(lambda p: p.write_text('{"key": "other", "text": "x"}', encoding="utf-8"), id="wrong-key"),
        pytest.param(lambda p: p.write_text('["a", "list"]', encoding="utf-8"), id="not-an-object"),
        pytest.param(lambda p: p.write_text('{"key": null}', encoding="utf-8"), id="no-text"),
    ],
)
def test_damaged_cache_entry_is_a_counted_miss_and_is_rewritten(tmp_path, damage, caplog):
    with FaultServer() as server:
        inner = OpenAIChatGenerator(server.base_url, model="fault-model", api_key_env=None)
        gen = CachingGenerator(inner, tmp_path / "cache")
        first = gen.generate([_req("alpha"), _req("beta")])
        assert all(r.ok for r in first) and server.count() == 2
        entry = gen.cache.path(request_key(_req("alpha"), model_id=inner.model_id, extra=inner.cache_key_extra()))
        assert entry.is_file()
        damage(entry)
        again = CachingGenerator(inner, tmp_path / "cache")
        second = again.generate([_req("alpha"), _req("beta")])
        assert [r.text for r in second] == [r.text for r in first]
        assert server.count("alpha") == 2 and server.count("beta") == 1
        assert again.stats["corrupt"] == 1 and again.stats["hits"] == 1 and again.stats["misses"] == 1
        assert "Ignoring unreadable response-cache entry" in caplog.text
        # the regenerated answer replaced the damaged entry: a third run is all hits
        third = CachingGenerator(inner, tmp_path / "cache")
        assert [r.cached for r in third.generate([_req("alpha"), _req("beta")])] == [True, True]
        assert server.count() == 3


def test_interrupted_write_leaves_no_partial_entry(tmp_path, monkeypatch):
    """os.replace failing (a crash between write and rename, simulated by a mocked os.replace) leaves neither a
    partial entry nor a temp file behind."""
    from negsynth_hf.generators import ChatResponse

    cache = ResponseCache(tmp_path / "cache")

    def mocked_replace(src, dst):
        raise KeyboardInterrupt("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", mocked_replace)
    with pytest.raises(KeyboardInterrupt):
        cache.put("ab" * 32, ChatResponse(text="answer"))
    monkeypatch.undo()
    assert list((tmp_path / "cache").rglob("*")) == [tmp_path / "cache" / "ab"]  # the shard folder only
    assert cache.get("ab" * 32) is None


def test_cache_write_failure_does_not_lose_answers(tmp_path, monkeypatch):
    import tempfile

    with FaultServer() as server:
        gen = CachingGenerator(OpenAIChatGenerator(server.base_url, model="fault-model", api_key_env=None), tmp_path)

        def mocked_mkstemp(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device (mocked)")

        monkeypatch.setattr(tempfile, "mkstemp", mocked_mkstemp)
        out = gen.generate([_req("alpha"), _req("beta")])
        assert all(r.ok for r in out) and gen.stats["write_errors"] == 2
        monkeypatch.undo()
        assert all(not r.cached for r in gen.generate([_req("alpha"), _req("beta")]))  # nothing half-written
