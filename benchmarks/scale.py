"""Scale: ``build_dataset`` at 1k, 10k and 100k pairs over corpora of 10x as many documents, measured per stage.

Each build mines ``M=3`` and generates ``G=2`` negatives per row (the ``counterfactual`` strategy: an analysis
and a generation request per row) with

- a tiny encoder built in code (:func:`negsynth_hf.testing.build_tiny_sentence_transformer`: a 2-layer BERT,
  hidden 32, random init, the MiniLM tokenizer, max 64 tokens), so mining and embedding cost what the
  bookkeeping around a model costs, not what a real model costs;
- a loopback OpenAI-compatible server (``tests/fault_server.py``: a scripted test double, not a model) that
  answers every request with a schema-valid reply after a fixed delay, so the synthesis figures are our client's,
  response cache's and bookkeeping's.

Synthetic text: a vocabulary of 20,000 whole-word entries of the MiniLM tokenizer, drawn with Zipf(1.1)
frequencies; document lengths are lognormal (median 60 words, sigma 0.6, 8..400 words), query lengths
lognormal (median 9 words, sigma 0.4, 3..30 words). Each query is made from words of its positive document plus
Zipf noise, so mining has real neighbours to find. Everything is seeded.

Per size and run kind, one build runs in its own process (so peak RSS is that build's):

- ``build``: cold caches (embeddings, synthesis ``map`` output, LLM responses);
- ``rerun``: the same build again, every cache warm (must make 0 LLM calls);
- ``killed`` + ``resume``: a fresh cache; the build is SIGKILLed once the server has answered 90% of the
  requests the cold build made, then run again (it must repeat at most the requests in flight at the kill).

Writes ``benchmarks/results/scale.{json,md,png}`` (results are merged by (pairs, kind), so sizes can be run one
at a time: ``python benchmarks/scale.py --sizes 100000``).

Usage::

    python benchmarks/scale.py                          # 1k, 10k, 100k; every run kind
    python benchmarks/scale.py --sizes 1000 10000 --kinds build rerun
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

NUM_MINED, NUM_GENERATED = 3, 2
STAGES = ("load_retriever", "mine", "synthesize", "embed", "verify", "weight", "assemble", "save")
KINDS = ("build", "rerun", "killed", "resume")


# ---------------------------------------------------------------------------------------------- synthetic data
def synthetic_data(pairs: int, documents: int, *, seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """``pairs`` (anchor, positive, query_id) rows and a corpus of ``documents`` texts (positives included)."""
    import numpy as np

    from negsynth_hf.paths import embedded_retriever_path

    rng = np.random.default_rng(seed)
    vocab_file = Path(embedded_retriever_path()) / "vocab.txt"
    words = [w for w in vocab_file.read_text(encoding="utf-8").split() if w.isalpha() and len(w) > 2][:20_000]
    words_arr = np.array(words, dtype=object)
    ranks = np.arange(1, len(words) + 1)
    probs = ranks**-1.1 / np.sum(ranks**-1.1)

    doc_len = np.clip(rng.lognormal(np.log(60), 0.6, documents).astype(int), 8, 400)
    tokens = rng.choice(len(words), size=int(doc_len.sum()), p=probs)
    bounds = np.concatenate([[0], np.cumsum(doc_len)])
    corpus = [" ".join(words_arr[tokens[a:b]]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    pos_idx = rng.choice(documents, size=pairs, replace=False)
    q_len = np.clip(rng.lognormal(np.log(9), 0.4, pairs).astype(int), 3, 30)
    anchors = []
    for i, (d, n) in enumerate(zip(pos_idx, q_len, strict=True)):
        doc = tokens[bounds[d] : bounds[d + 1]]
        own = rng.choice(doc, size=max(1, int(n) * 2 // 3))
        noise = rng.choice(len(words), size=int(n) - len(own), p=probs)
        anchors.append(f"q{i} " + " ".join(words_arr[np.concatenate([own, noise])]))
    rows = {
        "anchor": anchors,
        "positive": [corpus[d] for d in pos_idx],
        "query_id": [f"q{i}" for i in range(pairs)],
    }
    return rows, corpus


# ---------------------------------------------------------------------------------------------- one build (child)
def child(args: argparse.Namespace) -> int:
    """One build in this process; writes its figures to ``args.out`` (JSON)."""
    from datasets import Dataset, disable_progress_bars

    from negsynth_hf.build import build_dataset
    from negsynth_hf.generators import GeneratorConfig

    disable_progress_bars()
    work = Path(args.work)
    start = time.perf_counter()
    rows, corpus = synthetic_data(args.pairs, args.pairs * 10, seed=0)
    pairs = Dataset.from_dict(rows)
    data_s = time.perf_counter() - start
    generator = GeneratorConfig(
        backend="openai",
        model="scale-stub",
        base_url=f"http://127.0.0.1:{args.port}/v1",
        api_key_env=None,
        max_concurrency=args.concurrency,
        timeout=120,
        cache_dir=str(work / "responses"),
    )
    import psutil

    from benchmarks.load_synthesis import PeakRSS

    with PeakRSS(psutil.Process(), interval=0.2) as peak:
        start = time.perf_counter()
        result = build_dataset(
            pairs,
            corpus=corpus,
            retriever=str(work.parent / "encoder" / "st"),
            generator=generator,
            strategy="counterfactual",
            num_mined=NUM_MINED,
            num_generated=NUM_GENERATED,
            # a random-init encoder scores every document alike, so the default relative margin would reject
            # every candidate; no margin, and the 30 best candidates per query (what margins would fetch)
            relative_margin=None,
            range_max=30,
            map_batch_size=args.map_batch_size,
            encode_batch_size=256,
            show_progress_bar=False,
            cache_dir=str(work / "build-cache"),
        )
        built_s = time.perf_counter() - start
        save_start = time.perf_counter()
        out_dir = work / "dataset"
        shutil.rmtree(out_dir, ignore_errors=True)
        result.save_to_disk(out_dir)
        save_s = time.perf_counter() - save_start
    timings = {k: round(v, 2) for k, v in result.summary.timings.items()}
    timings["save"] = round(save_s, 2)
    record = {
        "seconds": {"total": round(built_s + save_s, 2), **timings},
        "data_s": round(data_s, 2),
        "peak_rss_mb": round(max(peak.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 1e6, 1),
        "use_faiss": bool(result.config["mining"]["use_faiss"]),
        "rows_train": len(result.train),
        "rows_provenance": len(result.provenance),
        "counts": {k: v for k, v in result.summary.counts.items() if isinstance(v, int)},
        "generator_stats": result.summary.generator_stats,
    }
    Path(args.out).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------- parent
def _cache_usage(folder: Path) -> tuple[int, float, float]:
    """Files, MB of content and MB of disk blocks (a small file still takes a whole block) under ``folder``."""
    stats = [p.stat() for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return len(stats), round(sum(s.st_size for s in stats) / 1e6, 2), round(sum(s.st_blocks for s in stats) / 2e3, 2)


def _child_env() -> dict[str, str]:
    """This environment with the repository first on the path (optional packages such as faiss stay visible)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def run_one(
    server: Any, args: argparse.Namespace, pairs: int, work: Path, *, kill_after: int | None = None
) -> dict[str, Any]:
    """One child build against ``server``; SIGKILLed once the server saw ``kill_after`` requests (if given)."""
    out = work / "record.json"
    out.unlink(missing_ok=True)
    log = open(work / "child.log", "a", encoding="utf-8")  # noqa: SIM115 - closed below
    cmd = [
        sys.executable, __file__, "--child", "--pairs", str(pairs), "--work", str(work), "--port",
        str(server.port), "--out", str(out), "--concurrency", str(args.concurrency),
        "--map-batch-size", str(args.map_batch_size),
    ]  # fmt: skip
    seen = [0]
    server.on_request = lambda _: seen.__setitem__(0, seen[0] + 1)  # called under the server's lock
    server.reset_counts()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
    killed = False
    while proc.poll() is None:
        time.sleep(0.05)
        server.reset_counts()  # the server keeps every request body; we only need the count
        if kill_after is not None and seen[0] >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
    wall = time.perf_counter() - start
    log.close()
    requests = seen[0]
    files, mb, disk_mb = _cache_usage(work / "responses")
    record: dict[str, Any] = {
        "llm_requests": requests, "wall_s": round(wall, 2), "cache_files": files, "cache_mb": mb,
        "cache_disk_mb": disk_mb,
    }  # fmt: skip
    if killed:
        return {**record, "killed": True}
    if proc.returncode != 0:
        raise RuntimeError(f"build of {pairs} pairs failed (exit {proc.returncode}); see {work / 'child.log'}")
    child_record = json.loads(out.read_text(encoding="utf-8"))
    synth = child_record["seconds"].get("synthesize") or 0.0
    record["requests_per_s"] = round(requests / synth, 1) if requests and synth else 0.0
    return {**child_record, **record}


def measure_size(server: Any, args: argparse.Namespace, pairs: int, base: Path) -> list[dict[str, Any]]:
    """Every asked-for run kind at one size; ``killed``/``resume`` use their own fresh cache."""
    records = []
    common = {"pairs": pairs, "documents": pairs * 10, "server_delay_s": args.delay, "concurrency": args.concurrency}
    cold = base / f"n{pairs}-cold"
    resumed = base / f"n{pairs}-resume"
    cold_requests = None
    for kind in args.kinds:
        if kind == "build":
            shutil.rmtree(cold, ignore_errors=True)
            cold.mkdir(parents=True)
        folder = resumed if kind in ("killed", "resume") else cold
        if kind == "killed":
            shutil.rmtree(resumed, ignore_errors=True)
            resumed.mkdir(parents=True)
            reused = args.reuse_embeddings and (cold / "build-cache" / "embeddings").exists()
            if reused:  # the kill comes during synthesis; embedding the corpus again would only cost time
                shutil.copytree(cold / "build-cache" / "embeddings", resumed / "build-cache" / "embeddings")
            expected = cold_requests or pairs * 2  # counterfactual: analysis + generation per row
            record = run_one(server, args, pairs, folder, kill_after=int(expected * 0.9))
            record["kill_at_requests"] = int(expected * 0.9)
            record["embeddings_reused"] = bool(reused)
        else:
            record = run_one(server, args, pairs, folder)
        if kind == "build":
            cold_requests = record["llm_requests"]
        if kind == "resume" and records and records[-1]["kind"] == "killed":
            done_before = records[-1]["llm_requests"]
            expected = cold_requests or pairs * 2
            record["repeated_requests"] = done_before + record["llm_requests"] - expected
            record["in_flight_bound"] = args.concurrency  # requests in flight at once (one map batch, async)
        records.append({**common, "kind": kind, **record})
        print(json.dumps(records[-1]), flush=True)
        save_records(records[-1:], write=not args.no_write)
    return records


# ---------------------------------------------------------------------------------------------- results
def _load() -> dict[str, Any]:
    path = RESULTS / "scale.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"records": []}


def save_records(new: list[dict[str, Any]], *, write: bool) -> None:
    """Merge ``new`` into scale.json by (pairs, kind) and render scale.md/png (``new`` empty: render only)."""
    if not write:
        return
    saved = _load()
    keep = {(r["pairs"], r["kind"]): r for r in saved["records"]}
    for r in new:
        keep[(r["pairs"], r["kind"])] = {**r, "code": _code_state()}
    records = sorted(keep.values(), key=lambda r: (r["pairs"], KINDS.index(r["kind"])))
    meta = {
        "command": "python benchmarks/scale.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n", "utf-8")
    (RESULTS / "scale.md").write_text(to_markdown(records, meta), encoding="utf-8")
    plot(records)


def _code_state() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
        dirty = subprocess.run(
            ["git", "status", "--short", "--", "negsynth_hf"], capture_output=True, text=True, cwd=ROOT
        ).stdout
    except OSError:
        return {}
    return {"commit": head.strip(), "uncommitted": [line[3:] for line in dirty.splitlines()]}


def to_markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = (
        "| pairs | documents | run | total s | "
        + " | ".join(STAGES)
        + " | s/1k rows | peak RSS MB | LLM requests | req/s | cache files | cache MB (on disk) |"
    )
    lines = [
        "# Scale: `build_dataset` at 1k, 10k and 100k pairs",
        "",
        f"`{meta['command']}` — M={NUM_MINED} mined + G={NUM_GENERATED} generated per row (counterfactual: 2 "
        "requests per row), a tiny random-init encoder built in code, a loopback OpenAI-compatible stub server "
        "(`tests/fault_server.py`, schema-valid replies after a fixed delay). Each build runs in its own process; "
        "seconds per stage from `BuildSummary.timings` plus `save_to_disk`.",
        "",
        head,
        "|" + "---:|" * 2 + "---|" + "---:|" * (len(STAGES) + 7),
    ]
    for r in records:
        if r.get("killed"):
            lines.append(
                f"| {r['pairs']:,} | {r['documents']:,} | killed at {r['kill_at_requests']:,} req | {r['wall_s']} "
                + "| " * len(STAGES)
                + f"| | | {r['llm_requests']:,} | | {r['cache_files']:,} | {_cache_mb(r)} |"
            )
            continue
        s = r["seconds"]
        stages = " | ".join(str(s.get(k, "")) for k in STAGES)
        per_k = round(s["total"] / r["pairs"] * 1000, 2)
        lines.append(
            f"| {r['pairs']:,} | {r['documents']:,} | {r['kind']} | {s['total']} | {stages} | {per_k} "
            f"| {r['peak_rss_mb']} | {r['llm_requests']:,} | {r['requests_per_s']} | {r['cache_files']:,} "
            f"| {_cache_mb(r)} |"
        )
    lines += _growth(records)
    resumes = [r for r in records if r["kind"] == "resume" and "repeated_requests" in r]
    if resumes:
        lines += ["", "Killed at ~90% of the cold build's requests and resumed:", ""]
        for r in resumes:
            lines.append(
                f"- {r['pairs']:,} pairs: resume made {r['llm_requests']:,} requests; killed + resumed together "
                f"repeated {r['repeated_requests']} requests (bound: {r['in_flight_bound']} in flight)."
            )
    faiss = sorted({f"{r['pairs']:,}" for r in records if r.get("use_faiss")})
    lines += [
        "",
        "Mining searches exactly: a faiss flat inner-product index when `faiss-cpu` is installed (sizes "
        f"{', '.join(faiss) or 'none'} here), else the corpus is scored in chunks of at most 2**26 scores. "
        "Synthetic text: MiniLM whole-word vocabulary, Zipf(1.1) word frequencies, lognormal lengths (documents: "
        "median 60 words; queries: median 9, two thirds of their words from the positive). Cache MB: bytes of "
        "content (disk blocks in parentheses: one file per response takes at least one 4 KiB block).",
    ]
    commits = sorted({(r.get("code") or {}).get("commit") or "?" for r in records})
    lines += [
        "",
        f"Code measured: commit(s) {', '.join(f'`{c}`' for c in commits)} (per record in scale.json). "
        f"Machine: {meta['machine']}, Python {meta['python']}; timings are noisy (shared cores).",
        "",
        "![time and memory against size](scale.png)",
    ]
    return "\n".join(lines) + "\n"


def _cache_mb(r: dict[str, Any]) -> str:
    return f"{r['cache_mb']} ({r['cache_disk_mb']})" if "cache_disk_mb" in r else str(r["cache_mb"])


def _growth(records: list[dict[str, Any]]) -> list[str]:
    """Per stage, seconds per row of each cold build over the next smaller one's (1.0: linear in the rows)."""
    builds = sorted((r for r in records if r["kind"] == "build"), key=lambda r: r["pairs"])
    if len(builds) < 2:
        return []
    stages = ("total", *STAGES)
    lines = [
        "",
        "Seconds per row of each cold build over the next smaller one's (1.0 = linear in the rows; documents grow "
        "with the rows, so a stage that compares every query with every document is quadratic):",
        "",
        "| pairs | " + " | ".join(stages) + " | peak RSS per row |",
        "|---|" + "---:|" * (len(stages) + 1),
    ]
    for small, big in zip(builds, builds[1:], strict=False):
        cells = []
        for stage in stages:
            a, b = small["seconds"].get(stage), big["seconds"].get(stage)
            cells.append(f"{(b / big['pairs']) / (a / small['pairs']):.2f}" if a and b else "")
        rss = (big["peak_rss_mb"] / big["pairs"]) / (small["peak_rss_mb"] / small["pairs"])
        lines.append(f"| {small['pairs']:,} -> {big['pairs']:,} | " + " | ".join(cells) + f" | {rss:.2f} |")
    return lines


def plot(records: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in ("build", "rerun", "resume"):
        rs = sorted((r for r in records if r["kind"] == kind and not r.get("killed")), key=lambda r: r["pairs"])
        if not rs:
            continue
        x = [r["pairs"] for r in rs]
        ax_t.plot(x, [r["seconds"]["total"] for r in rs], marker="o", label=f"{kind}: total")
        ax_m.plot(x, [r["peak_rss_mb"] for r in rs], marker="o", label=kind)
        if kind == "build":
            for stage in ("mine", "synthesize", "embed", "weight", "assemble"):
                ax_t.plot(x, [r["seconds"].get(stage, 0) for r in rs], ls="--", marker=".", label=f"build: {stage}")
    for ax, label in ((ax_t, "seconds"), (ax_m, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pairs (documents = 10x)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--delay", type=float, default=0.05, help="server-side seconds per answer")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--map-batch-size", type=int, default=256)
    parser.add_argument(
        "--reuse-embeddings",
        action="store_true",
        help="the killed run starts with the cold build's mining embeddings (saves embedding the corpus twice)",
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--render", action="store_true", help="only re-render scale.md/png from scale.json")
    # child mode (one build; internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.render:
        save_records([], write=True)
        return 0
    import tempfile

    from fault_server import FaultServer

    from negsynth_hf.testing import build_tiny_sentence_transformer

    base = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="negsynth-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "encoder" / "st").exists():
        build_tiny_sentence_transformer(base / "encoder", hidden=32, max_seq_length=64)
    try:
        with FaultServer(delay=args.delay) as server:
            for pairs in args.sizes:
                measure_size(server, args, pairs, base)
                for kind_dir in base.glob(f"n{pairs}-*"):
                    shutil.rmtree(kind_dir / "dataset", ignore_errors=True)
    finally:
        if not args.work:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
