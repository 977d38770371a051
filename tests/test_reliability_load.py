"""Load (short version; the 10,000-row run is benchmarks/load_synthesis.py): 300 rows through
``Dataset.map(CounterfactualNegatives)`` against the loopback server at concurrency 64, with bounded memory, the
concurrency bound respected, and no leaked threads or connections."""

from __future__ import annotations

import gc
import json
import threading
import time

import psutil
import pytest
from datasets import Dataset
from fault_server import FaultServer, open_fds, open_sockets

from negsynth_hf.generators import GeneratorConfig
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

ROWS = 300
CONCURRENCY = 64


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _rows(n: int) -> dict[str, list[str]]:
    return {
        "anchor": [f"row-{i:05d}; does compound {i} lower blood pressure in adults" for i in range(n)],
        "positive": [f"In a trial of adults, compound {i} lowered pressure by {i % 9 + 2} mmHg." for i in range(n)],
    }


def _run(server: FaultServer, cache_dir, batch_size: int, rows: int = ROWS) -> tuple[Dataset, CounterfactualNegatives]:
    config = GeneratorConfig(
        backend="openai",
        model="fault-model",
        base_url=server.base_url,
        api_key_env=None,
        cache_dir=str(cache_dir),
        max_concurrency=CONCURRENCY,
        timeout=30,
    )
    transform = CounterfactualNegatives(config, strategy="naive", num_generated=2)
    return Dataset.from_dict(_rows(rows)).map(transform, batched=True, batch_size=batch_size), transform


def _threads() -> int:
    """Live threads, not counting tqdm's global monitor thread (started by any long progress bar, on purpose)."""
    return sum(1 for t in threading.enumerate() if t.name != "tqdm_monitor")


def test_300_rows_at_concurrency_64_bounded_and_no_leaked_threads(tmp_path):
    process = psutil.Process()
    with FaultServer(delay=0.01) as server:
        gc.collect()
        threads_before = _threads()
        rss_before = process.memory_info().rss
        start = time.perf_counter()
        out, _ = _run(server, tmp_path / "cache", batch_size=ROWS)
        elapsed = time.perf_counter() - start
        gc.collect()
        rss_after = process.memory_info().rss
        threads_after = _threads()
    records = [json.loads(r) for r in out[PROVENANCE_COLUMN]]
    assert len(out) == ROWS and all(r["failure_reason"] is None for r in records)
    assert server.count() == ROWS
    assert 16 <= server.max_in_flight <= CONCURRENCY  # concurrency used, and bounded
    assert server.max_connections_open <= CONCURRENCY
    assert elapsed < 60, elapsed
    assert threads_after == threads_before, (threads_before, threads_after)
    assert rss_after - rss_before < 300 * 2**20, (rss_before, rss_after)


def test_map_batches_do_not_leak_connections_or_fds(tmp_path):
    """Each map batch runs its own event loop: its HTTP clients must be closed with it (fixed in 9532d8b)."""
    with FaultServer() as server:
        gc.collect()
        fds_before, sockets_before = open_fds(), open_sockets()
        # the transform stays referenced, as it does during a long map (and in build_dataset until it returns)
        out, transform = _run(server, tmp_path / "cache", batch_size=30, rows=120)  # 4 batches
        gc.collect()
        time.sleep(0.2)  # let the server notice closed connections
        assert len(out) == 120 and server.count() == 120 and "generator" in transform._live
        leaked_server_side = server.connections_open
        fds_after, sockets_after = open_fds(), open_sockets()
    assert leaked_server_side == 0
    assert sockets_after - sockets_before <= 0, (sockets_before, sockets_after)
    assert fds_after - fds_before <= 2, (fds_before, fds_after)
