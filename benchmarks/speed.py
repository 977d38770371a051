"""Speed figures of the pipeline, from one run on this machine (ratios are the point; absolute times are noisy).

1. Loss step time: CausalNegLoss vs sentence-transformers' MNRL on the same embeddings, and peak memory of one
   training step with CachedCausalNegLoss vs CausalNegLoss -- both measured by ``benchmarks/bench_loss.py``
   (imported, not duplicated: ``bench_vs_mnrl`` and ``bench_memory``).
2. Transform throughput (rows/s of ``CounterfactualNegatives`` through ``Dataset.map``, strategy ``query_edit``):
   with a loopback OpenAI-compatible server (``tests/fault_server.py``; fixed per-request latency, so the
   figure measures the client and the pipeline, not a model) at several concurrencies, and with the embedded
   SmolLM2-135M in-process (response cache off in both).
3. ``build_dataset`` first run vs rerun on a warm cache (same arguments): LLM response cache + synthesis
   ``map`` cache + mining embeddings, with the loopback server (the rerun's server request count is recorded)
   and, with ``--embedded-rows``, with SmolLM2.

Run: ``python benchmarks/speed.py`` (a few minutes; writes ``benchmarks/results/speed.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-loss", action="store_true", help="Skip the bench_loss measurements.")
    p.add_argument("--rows", type=int, default=32, help="SciFact train rows for the loopback transform runs.")
    p.add_argument("--num-generated", type=int, default=2)
    p.add_argument("--latency", type=float, default=0.2, help="Loopback server seconds per request.")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--embedded-rows", type=int, default=8, help="Rows for the SmolLM2 runs (0 skips them).")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default=str(RESULTS / "speed"))
    p.add_argument("--report-only", action="store_true", help="Rewrite the .md from the saved .json and stop.")
    return p.parse_args(argv)


def scifact_pairs(n: int):
    from benchmarks import reporting
    from negsynth_hf.data import load_beir, pairs_dataset

    collection = load_beir(reporting.data_dir() / "scifact", splits=["train"])
    pairs = pairs_dataset(collection, "train", max_queries=n, seed=0)
    corpus = None  # mine among the positives: the rerun figure is about the LLM and map caches
    return pairs.add_column("title", [collection.corpus[d]["title"] for d in pairs["positive_id"]]), corpus


def transform_rows_per_s(
    pairs, generator, num_generated: int, max_new_tokens: int, query_editor: str = "llm"
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from negsynth_hf.transform import CounterfactualNegatives

    transform = CounterfactualNegatives(
        generator,
        strategy="query_edit",
        num_generated=num_generated,
        max_new_tokens=max_new_tokens,
        max_attempts=1,
        title_column="title",
        query_editor=query_editor,
    )
    ds = pairs.select_columns(["anchor", "positive", "title"])
    start = time.perf_counter()
    out = ds.map(transform, batched=True, batch_size=16, load_from_cache_file=False, desc="transform")
    seconds = time.perf_counter() - start
    produced = sum(1 for c in out.column_names if c.startswith("generated_") for t in out[c] if t)
    tqdm.write(f"  {len(ds)} rows in {seconds:.1f} s ({produced} negatives)")
    return {"rows": len(ds), "seconds": round(seconds, 2), "rows_per_s": len(ds) / seconds, "negatives": produced}


def loopback_config(base_url: str, concurrency: int, cache_dir: str = ""):
    from negsynth_hf.generators import GeneratorConfig

    return GeneratorConfig(
        backend="openai",
        model="fault-model",
        base_url=base_url,
        api_key_env=None,
        max_concurrency=concurrency,
        cache_dir=cache_dir,
    )


def bench_transform(args: argparse.Namespace, pairs) -> dict[str, Any]:
    from fault_server import FaultServer

    from negsynth_hf.generators import GeneratorConfig

    out: dict[str, Any] = {"loopback": {}, "latency_s": args.latency, "num_generated": args.num_generated}
    with FaultServer(delay=args.latency) as server:
        for c in args.concurrency:
            print(f"[transform] loopback, concurrency {c}", flush=True)
            out["loopback"][str(c)] = transform_rows_per_s(
                pairs, loopback_config(server.base_url, c), args.num_generated, args.max_new_tokens
            )
    if args.embedded_rows:
        print(f"[transform] embedded SmolLM2, {args.embedded_rows} rows", flush=True)
        gen = GeneratorConfig(backend="embedded", cache_dir="", constrained=False, num_threads=args.threads)
        # SmolLM2 cannot make the one-detail edit (results/synthesis_smollm2.md): rule-made edits, LLM passages
        out["embedded"] = transform_rows_per_s(
            pairs.select(range(min(args.embedded_rows, len(pairs)))),
            gen,
            args.num_generated,
            args.max_new_tokens,
            query_editor="rules",
        )
    return out


def bench_rerun(args: argparse.Namespace, pairs, corpus) -> dict[str, Any]:
    from fault_server import FaultServer

    from negsynth_hf import build_dataset
    from negsynth_hf.generators import GeneratorConfig

    def two_runs(generator_factory, rows, cache_root: Path, server=None, query_editor="llm") -> dict[str, Any]:
        times, requests = [], []
        for _ in range(2):
            before = len(server.requests) if server is not None else 0
            start = time.perf_counter()
            build_dataset(
                rows,
                corpus=corpus,
                generator=generator_factory(),
                strategy="query_edit",
                num_mined=3,
                num_generated=args.num_generated,
                max_new_tokens=args.max_new_tokens,
                max_attempts=1,
                title_column="title",
                query_editor=query_editor,
                cache_dir=str(cache_root / "build"),
                show_progress_bar=False,
            )
            times.append(time.perf_counter() - start)
            requests.append(len(server.requests) - before if server is not None else None)
        return {
            "rows": len(rows),
            "first_s": round(times[0], 2),
            "rerun_s": round(times[1], 2),
            "speedup": times[0] / times[1],
            "server_requests": requests,
        }

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="negsynth-speed-") as tmp, FaultServer(delay=args.latency) as server:
        print("[rerun] loopback", flush=True)
        root = Path(tmp) / "loopback"
        out["loopback"] = two_runs(
            lambda: loopback_config(server.base_url, max(args.concurrency), str(root / "responses")),
            pairs,
            root,
            server,
        )
        if args.embedded_rows:
            print("[rerun] embedded SmolLM2", flush=True)
            root = Path(tmp) / "embedded"
            rows = pairs.select(range(min(args.embedded_rows, len(pairs))))
            out["embedded"] = two_runs(
                lambda: GeneratorConfig(
                    backend="embedded",
                    cache_dir=str(root / "responses"),
                    constrained=False,
                    num_threads=args.threads,
                ),
                rows,
                root,
                query_editor="rules",
            )
    return out


def bench_losses() -> dict[str, Any]:
    import bench_loss
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as bench_loss does: per-thread CPU time on a shared machine
    try:
        print("[loss] CausalNegLoss vs MNRL", flush=True)
        vs = bench_loss.bench_vs_mnrl()
        print("[loss] peak memory cached vs plain", flush=True)
        mem = bench_loss.bench_memory()
    finally:
        torch.set_num_threads(threads)
    return {"vs_mnrl": vs, "memory": mem}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Speed (one run; ratios matter, absolute times are noisy on a shared 2-core CPU)",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}, 1-minute load average at start "
        f"{report['load_start']}, at end {report['load_end']}.",
        "",
    ]
    loss = report.get("loss")
    if loss:
        vs, mem = loss["vs_mnrl"], loss["memory"]
        shape = vs["shape"]
        lines += [
            "## Loss (from `benchmarks/bench_loss.py`)",
            "",
            "| measurement | value |",
            "| --- | ---: |",
            f"| CausalNegLoss fwd+bwd (B={shape['B']}, {shape['negatives']} negatives, D={shape['D']}) | "
            f"{vs['causal_neg_ms']:.2f} ms |",
            f"| MNRL fwd+bwd, same embeddings | {vs['mnrl_ms']:.2f} ms |",
            f"| **ratio CausalNegLoss / MNRL** | **{vs['ratio']:.2f}x** (median-based {vs['ratio_median']:.2f}x) |",
            f"| step peak memory, plain CausalNegLoss, batch {mem['batch']} | {mem['plain']['step_peak_mb']:.0f} MB |",
            f"| step peak memory, CachedCausalNegLoss (mini-batch {mem['mini_batch_size']}) | "
            f"{mem['cached']['step_peak_mb']:.0f} MB |",
            f"| **memory ratio cached / plain** | **{mem['ratio']:.2f}x** |",
            "",
            f"Memory model: {mem['model']}; metric: {mem['metric']}.",
            "",
        ]
    tr = report.get("transform")
    if tr:
        lines += [
            f"## Transform throughput (`CounterfactualNegatives`, `query_edit`, G={tr['num_generated']}, cache off)",
            "",
            "| generator | concurrency | rows | seconds | rows/s | negatives written |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        # query editor: the loopback server answers the LLM edit stage; SmolLM2 gets rule-made edits
        base = tr["loopback"].get(str(min(int(c) for c in tr["loopback"]))) if tr["loopback"] else None
        for c, r in tr["loopback"].items():
            speed = f" ({r['rows_per_s'] / base['rows_per_s']:.1f}x of C={min(int(k) for k in tr['loopback'])})"
            lines.append(
                f"| loopback server, {tr['latency_s']} s/request, LLM edits | {c} | {r['rows']} | {r['seconds']:.1f} | "
                f"{r['rows_per_s']:.2f}{speed if base else ''} | {r['negatives']} |"
            )
        if "embedded" in tr:
            r = tr["embedded"]
            lines.append(
                f"| embedded SmolLM2-135M (in-process), rule edits | - | {r['rows']} | {r['seconds']:.1f} | {r['rows_per_s']:.3f} "
                f"| {r['negatives']} |"
            )
        lines.append("")
    rr = report.get("rerun")
    if rr:
        lines += [
            "## `build_dataset` rerun on a warm cache",
            "",
            "| generator | rows | first run s | rerun s | speed-up | LLM server requests (first, rerun) |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, r in rr.items():
            reqs = ", ".join("-" if x is None else str(x) for x in r["server_requests"])
            lines.append(
                f"| {name} | {r['rows']} | {r['first_s']:.1f} | {r['rerun_s']:.1f} | **{r['speedup']:.1f}x** | {reqs} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.output)
    if args.report_only:
        report = json.loads(out.with_suffix(".json").read_text())
        out.with_suffix(".md").write_text(to_markdown(report))
        return report
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_start": round(os.getloadavg()[0], 1),
        "args": vars(args),
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["load_end"] = round(os.getloadavg()[0], 1)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        out.with_suffix(".md").write_text(to_markdown(report))

    if not args.skip_loss:
        report["loss"] = bench_losses()
        save()
    pairs, corpus = scifact_pairs(args.rows)
    report["transform"] = bench_transform(args, pairs)
    save()
    report["rerun"] = bench_rerun(args, pairs, corpus)
    save()
    print(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
