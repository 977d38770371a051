"""Load benchmark: a 10,000-row synthesis run against a fast loopback OpenAI-compatible server at concurrency 64.

The server (``tests/fault_server.py``, a scripted test double answering schema-valid JSON) runs in its OWN
process, so every figure below is the client's: ``Dataset.map(CounterfactualNegatives(GeneratorConfig(
backend="openai", max_concurrency=64, cache_dir=...)), batched=True)``, the path a user takes with vLLM/TGI.

Measured: wall time and rows/s, peak RSS (a sampling thread every 50 ms, plus ``ru_maxrss``), RSS before/after,
and threads, open file descriptors and sockets before the run, right after it (transform still alive, as during
a long map) and after dropping the transform + ``gc.collect()``; the server reports how many requests and
connections it saw and how many connections were still open.

Usage::

    python benchmarks/load_synthesis.py                   # 10,000 rows, concurrency 64, map batch 1000
    python benchmarks/load_synthesis.py --cache both        # with and without the on-disk response cache
    python benchmarks/load_synthesis.py --rows 2000 --batch-size 100 1000 --no-write

Writes ``benchmarks/results/load_synthesis.{md,json}`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def _fds() -> tuple[int, int]:
    names = os.listdir("/proc/self/fd")
    sockets = 0
    for name in names:
        try:
            sockets += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return len(names), sockets


def _snapshot(process) -> dict:
    fds, sockets = _fds()
    names = _threads()
    return {
        "threads": len(names),
        "thread_names": names,
        "fds": fds,
        "sockets": sockets,
        "rss_mib": round(process.memory_info().rss / 2**20, 1),
    }


class PeakRSS:
    """Samples RSS every ``interval`` seconds in a daemon thread (stopped before the 'after' snapshots)."""

    def __init__(self, process, interval: float = 0.05) -> None:
        self.process, self.interval = process, interval
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def start_server(delay: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fault_server.py"), "--delay", str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fault server did not start: {line!r}")
    return proc, int(line.split()[1])


def stop_server(proc: subprocess.Popen) -> dict:
    proc.stdin.close()  # the server exits when its stdin closes and prints what it saw
    out = proc.stdout.read()
    proc.wait(30)
    stats = {}
    for line in out.splitlines():
        if line.startswith("REQUESTS"):
            parts = line.split()
            stats = {k.lower(): int(v) for k, v in zip(parts[::2], parts[1::2], strict=True)}
    return stats


def _code_state() -> dict:
    """The commit measured, and which package files had uncommitted changes (others edit the tree concurrently)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
        dirty = subprocess.run(
            ["git", "status", "--short", "--", "negsynth_hf"], capture_output=True, text=True, cwd=ROOT
        ).stdout
    except OSError:
        return {}
    return {"commit": head.strip(), "uncommitted": [line[3:] for line in dirty.splitlines()]}


def run(args: argparse.Namespace) -> dict:
    import psutil
    from datasets import Dataset, disable_progress_bars

    from negsynth_hf.generators import GeneratorConfig
    from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

    disable_progress_bars()
    process = psutil.Process()
    server, port = start_server(args.delay)
    cache = Path(tempfile.mkdtemp(prefix="negsynth-load-cache-"))
    try:
        rows = {
            "anchor": [f"row-{i:06d}; does compound {i} lower blood pressure in adults" for i in range(args.rows)],
            "positive": [f"In a trial, compound {i} lowered pressure by {i % 9 + 2} mmHg." for i in range(args.rows)],
        }
        dataset = Dataset.from_dict(rows)
        config = GeneratorConfig(
            backend="openai",
            model="fault-model",
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key_env=None,
            max_concurrency=args.concurrency,
            timeout=60,
            cache_dir="" if args.no_cache else str(cache),
        )
        transform = CounterfactualNegatives(config, strategy=args.strategy, num_generated=2)
        gc.collect()
        before = _snapshot(process)
        with PeakRSS(process) as peak:
            start = time.perf_counter()
            out = dataset.map(transform, batched=True, batch_size=args.batch_size, load_from_cache_file=False)
            wall = time.perf_counter() - start
        right_after = _snapshot(process)
        failures = sum(json.loads(r)["failure_reason"] is not None for r in out[PROVENANCE_COLUMN])
        stats = dict(getattr(transform._live.get("generator"), "stats", {}) or {})
        del transform, out
        gc.collect()
        time.sleep(0.2)
        after_gc = _snapshot(process)
    finally:
        server_stats = stop_server(server)
    return {
        "rows": args.rows,
        "strategy": args.strategy,
        "concurrency": args.concurrency,
        "map_batch_size": args.batch_size,
        "response_cache": not args.no_cache,
        "server_delay_s": args.delay,
        "wall_s": round(wall, 2),
        "rows_per_s": round(args.rows / wall, 1),
        "failed_rows": failures,
        "peak_rss_mib": round(peak.peak / 2**20, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "before": before,
        "right_after": right_after,
        "after_gc": after_gc,
        "generator_stats": stats,
        "server": server_stats,
        "cache_entries": sum(1 for _ in cache.glob("??/*.json")),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "python": platform.python_version(),
        "code": _code_state(),
    }


def to_markdown(results: list[dict]) -> str:
    lines = [
        "# Load: synthesis against a loopback OpenAI-compatible server",
        "",
        '`python benchmarks/load_synthesis.py` — `Dataset.map(CounterfactualNegatives(GeneratorConfig(backend="openai", '
        "max_concurrency=64, cache_dir=...)), batched=True)`, naive strategy (one request per row), against "
        "`tests/fault_server.py` in its own process (a scripted test double, not a model), so the figures are the "
        "client's. Threads/fds/sockets: before the run, right after it (transform alive), after `del` + `gc.collect()`.",
        "",
        "| rows | cache | map batch | conc. | wall s | rows/s | failed | peak RSS MiB | RSS before -> after MiB "
        "| threads b/a/gc | fds b/a/gc | sockets b/a/gc | server conns total/open at end |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for r in results:
        b, a, g = r["before"], r["right_after"], r["after_gc"]
        s = r["server"]
        lines.append(
            f"| {r['rows']:,} | {'on' if r['response_cache'] else 'off'} | {r['map_batch_size']} | {r['concurrency']} | {r['wall_s']} | {r['rows_per_s']} "
            f"| {r['failed_rows']} | {r['peak_rss_mib']} | {b['rss_mib']} -> {g['rss_mib']} "
            f"| {b['threads']}/{a['threads']}/{g['threads']} | {b['fds']}/{a['fds']}/{g['fds']} "
            f"| {b['sockets']}/{a['sockets']}/{g['sockets']} "
            f"| {s.get('connections', '?')}/{s.get('open', '?')} |"
        )
    lines += [
        "",
        "Thread names after the run: " + ", ".join(f"`{n}`" for n in results[-1]["right_after"]["thread_names"]),
    ]
    code = results[-1].get("code") or {}
    if code:
        lines.append(
            f"Code measured: commit `{code.get('commit')}`"
            + (f", uncommitted changes in {', '.join(code['uncommitted'])}" if code.get("uncommitted") else "")
        )
    lines.append(
        f"Machine: {results[-1]['machine']}, Python {results[-1]['python']}; timings are noisy (shared cores)."
    )
    on = [r for r in results if r["response_cache"]]
    off = [r for r in results if not r["response_cache"]]
    if on and off:
        lines += [
            "",
            f"The response cache costs {on[0]['wall_s'] / off[0]['wall_s']:.1f}x wall time here: `ResponseCache.put` "
            "writes one file per answer with `fsync` (crash-safe resume). Both runs keep at most `max_concurrency` "
            "connections open at once (64 per map batch, per the server) and close them with each batch's event loop.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1000])
    parser.add_argument("--strategy", default="naive", choices=["naive", "counterfactual", "query_edit"])
    parser.add_argument("--delay", type=float, default=0.0, help="server-side seconds per answer")
    parser.add_argument(
        "--cache",
        choices=["on", "off", "both"],
        default="on",
        help="response cache on disk (one fsync'ed file per answer), off, or one run of each",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--render", action="store_true", help="only re-render the .md from the saved .json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((RESULTS / "load_synthesis.json").read_text(encoding="utf-8"))
        (RESULTS / "load_synthesis.md").write_text(to_markdown(results), encoding="utf-8")
        return 0
    results = []
    caches = {"on": [False], "off": [True], "both": [False, True]}[args.cache]
    for batch_size, no_cache in [(b, c) for c in caches for b in args.batch_size]:
        one = argparse.Namespace(**{**vars(args), "batch_size": batch_size, "no_cache": no_cache})
        result = run(one)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k not in ("before", "right_after", "after_gc")}))
        for phase in ("before", "right_after", "after_gc"):
            snap = {k: v for k, v in result[phase].items() if k != "thread_names"}
            print(f"  {phase:<12} {snap}")
    markdown = to_markdown(results)
    print(markdown)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "load_synthesis.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (RESULTS / "load_synthesis.md").write_text(markdown, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
