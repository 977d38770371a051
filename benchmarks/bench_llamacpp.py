"""The llama.cpp backend against the transformers backend, and every strategy on real training rows (one run).

Part 1, backends: the same Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF and the same prompts (SciFact query-edit
passage prompts, no schema, greedy), through llama.cpp's server (``backend="llamacpp"``) and through
transformers (``TransformersGenerator(gguf_file=...)``, de-quantized to fp32): load time, prompt tokens/s and
decode tokens/s.

Part 2, strategies: ``counterfactual``, ``query_edit`` with the LLM editor, ``query_edit`` with rule edits and
``naive`` on N training rows of SciFact and Cranfield (Qwen through llama.cpp, K=2 negatives per row): the
first-attempt schema-valid rate per stage (and the rate finally accepted by validation), rows with >= 1
generated text, generated and prompt tokens per row, seconds per row, and how many texts pass today's
false-negative guard (MiniLM, 5% relative margin). Every result row is written, keyed by query and document
ids, to ``benchmarks/data/llamacpp/<collection>-<strategy>.jsonl``; the LLM responses go to the response cache
``benchmarks/data/llamacpp/responses`` (committed), so a rerun replays them and costs no LLM time.

    python benchmarks/bench_llamacpp.py                      # everything (hours of CPU at 32 rows)
    python benchmarks/bench_llamacpp.py --rows 8 --skip-backends
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks import reporting  # noqa: E402 - needs the checkout on sys.path
from negsynth_hf import paths  # noqa: E402
from negsynth_hf.data import load_beir, pairs_dataset  # noqa: E402
from negsynth_hf.generators import ChatRequest, GeneratorConfig  # noqa: E402
from negsynth_hf.synthesis import SynthesisInput, Synthesizer  # noqa: E402
from negsynth_hf.synthesis.profiles import get_profile  # noqa: E402
from negsynth_hf.synthesis.prompts import edited_passage_messages  # noqa: E402
from negsynth_hf.verification import GuardPolicy, apply_policy, candidates, find  # noqa: E402

DATA = ROOT / "data" / "llamacpp"
RESULTS = ROOT / "results"
MODEL = "qwen2.5-coder-1.5b-instruct"
PROFILES = {"scifact": "scientific", "cranfield": "scientific", "cisi": "generic"}
#: strategy label -> Synthesizer options
STRATEGIES: dict[str, dict[str, Any]] = {
    "counterfactual": {"strategy": "counterfactual", "max_candidates": 1},
    "query_edit_llm": {"strategy": "query_edit", "query_editor": "llm"},
    "query_edit_rules": {"strategy": "query_edit", "query_editor": "rules"},
    "naive": {"strategy": "naive"},
}


# --------------------------------------------------------------------------- part 1: backends


def _prompts(n: int) -> list[tuple[dict[str, str], ...]]:
    scifact = load_beir(reporting.data_dir() / "scifact")
    pairs = pairs_dataset(scifact, "train", max_queries=n)
    profile = get_profile("scientific")
    return [edited_passage_messages(q, title=None, profile=profile, max_chars=600) for q in pairs["anchor"]]


def bench_llamacpp_backend(prompts: list, max_new_tokens: int) -> dict[str, Any]:
    import httpx2 as httpx

    from negsynth_hf.generators.gguf_models import resolve_gguf
    from negsynth_hf.generators.llamacpp import LlamaCppServer, LlamaCppServerSpec

    resolve_gguf(MODEL)  # assembly is a one-time cost, not load time
    start = time.perf_counter()
    server = LlamaCppServer.start(LlamaCppServerSpec(MODEL, n_parallel=1, ctx_per_slot=4096))
    load_s = time.perf_counter() - start
    prompt_tps, decode_tps = [], []
    try:
        for messages in prompts:
            body = {"messages": list(messages), "max_tokens": max_new_tokens, "temperature": 0, "seed": 0}
            timings = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=600).json()["timings"]
            prompt_tps.append(timings["prompt_per_second"])
            decode_tps.append(timings["predicted_per_second"])
    finally:
        server.stop()
    return {
        "load_s": load_s,
        "prompt_tokens_per_s": float(np.median(prompt_tps)),
        "decode_tokens_per_s": float(np.median(decode_tps)),
    }


def bench_transformers_backend(prompts: list, max_new_tokens: int, threads: int) -> dict[str, Any]:
    from negsynth_hf.generators.gguf_models import resolve_gguf
    from negsynth_hf.generators.transformers_local import TransformersGenerator

    gguf = resolve_gguf(MODEL)
    gen = TransformersGenerator(
        str(gguf.parent), gguf_file=gguf.name, constrained=False, batch_size=1, num_threads=threads
    )
    start = time.perf_counter()
    gen._load()  # noqa: SLF001 - timing the load on its own
    load_s = time.perf_counter() - start
    prompt_tps, decode_tps = [], []
    for messages in prompts:
        one = ChatRequest(messages=messages, max_new_tokens=1, temperature=0)
        t0 = time.perf_counter()
        first = gen.generate([one])[0]
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = gen.generate([ChatRequest(messages=messages, max_new_tokens=max_new_tokens, temperature=0)])[0]
        total = time.perf_counter() - t0
        prompt_tps.append(first.prompt_tokens / prefill)
        decode_tps.append(max(full.completion_tokens - 1, 1) / max(total - prefill, 1e-6))
    return {
        "load_s": load_s,
        "prompt_tokens_per_s": float(np.median(prompt_tps)),
        "decode_tokens_per_s": float(np.median(decode_tps)),
    }


# --------------------------------------------------------------------------- part 2: strategies


def _rows(collection: str, n: int) -> tuple[Any, Any]:
    col = load_beir(reporting.data_dir() / collection)
    return col, pairs_dataset(col, "train", max_queries=n)


def _candidates(col: Any, pairs: Any, retriever: Any) -> list[tuple[str, ...]]:
    """The hardest mined non-relevant document of each row (what the counterfactual prompt may rewrite)."""
    from negsynth_hf.mining import mine_negatives

    corpus = [col.doc_text(d) for d in col.corpus]
    mined = mine_negatives(
        pairs,
        model=retriever,
        num_negatives=1,
        corpus=corpus,
        known_positives=pairs["known_positives"],
        relative_margin=0.05,
        cache_folder=str(paths.cache_dir("embeddings", "bench_llamacpp", col.name)),
    )
    return [tuple(t for t in row if t) for row in mined.negatives]


def run_strategy(
    collection: str, label: str, col: Any, pairs: Any, candidates: list, retriever: Any, seed: int, threads: int | None
) -> dict[str, Any]:
    generator = GeneratorConfig(model=MODEL, cache_dir=str(DATA / "responses"), num_threads=threads).build()
    options = dict(STRATEGIES[label])
    synth = Synthesizer(
        generator, profile=PROFILES[collection], num_negatives=2, seed=seed, max_passage_chars=1200, **options
    )
    titles = [col.corpus[d].get("title") or None for d in pairs["positive_id"]]
    use_candidates = options.get("max_candidates", 0) > 0
    items = [
        SynthesisInput(q, p, candidates=c if use_candidates else (), title=t)
        for q, p, c, t in zip(pairs["anchor"], pairs["positive"], candidates, titles, strict=True)
    ]
    start = time.perf_counter()
    results = synth.synthesize(items, show_progress_bar=True)
    seconds = time.perf_counter() - start
    _write_rows(collection, label, pairs, results)
    return _summarize(results, items, retriever, seconds)


def _write_rows(collection: str, label: str, pairs: Any, results: list) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    with (DATA / f"{collection}-{label}.jsonl").open("w", encoding="utf-8") as out:
        for qid, did, result in zip(pairs["query_id"], pairs["positive_id"], results, strict=True):
            out.write(json.dumps({"query_id": qid, "positive_id": did, **result.to_dict()}, ensure_ascii=False) + "\n")


def _summarize(results: list, items: list, retriever: Any, seconds: float) -> dict[str, Any]:
    stages: dict[str, list[int]] = {}
    for r in results:
        for stage, tries in r.stage_attempts.items():
            stages.setdefault(stage, []).extend(tries)
    texts = [(item, neg) for item, r in zip(items, results, strict=True) for neg in r.negatives]
    passed = 0
    if texts:
        queries, positives = [i.query for i, _ in texts], [i.positive for i, _ in texts]
        negatives = [n.text for _, n in texts]
        check = find(queries, positives, negatives, model=retriever, absolute_margin=None, relative_margin=0.05)
        cands = candidates(check, queries, positives, negatives, [n for _, n in texts])
        passed = sum(apply_policy(GuardPolicy(mode="margin"), cands, get_profile("generic")).valid)
    n = len(results)
    return {
        "rows": n,
        "stages": {
            s: {
                "calls": len(t),
                "first_attempt_valid": sum(a == 1 for a in t) / len(t),
                "accepted": sum(a > 0 for a in t) / len(t),
            }
            for s, t in stages.items()
        },
        "rows_with_text": sum(bool(r.negatives) for r in results),
        "texts": len(texts),
        "texts_passing_guard": passed,
        "completion_tokens_per_row": sum(r.completion_tokens for r in results) / n,
        "prompt_tokens_per_row": sum(r.prompt_tokens for r in results) / n,
        "seconds_per_row": seconds / n,
        "cached_share": sum(r.cached_calls for r in results) / max(sum(r.llm_calls for r in results), 1),
        "failures": sorted({(r.failure_reason or "")[:120] for r in results if r.failure_reason}),
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# llama.cpp backend and strategies (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 2-core CPU)", ""]
    if "backends" in report:
        lines += ["| backend | load s | prompt tok/s | decode tok/s |", "|---|---:|---:|---:|"]
        for name, b in report["backends"].items():
            lines.append(
                f"| {name} | {b['load_s']:.1f} | {b['prompt_tokens_per_s']:.1f} | {b['decode_tokens_per_s']:.1f} |"
            )
        if {"llamacpp", "transformers"} <= set(report["backends"]):
            ratio = (
                report["backends"]["llamacpp"]["decode_tokens_per_s"]
                / report["backends"]["transformers"]["decode_tokens_per_s"]
            )
            lines += [
                "",
                f"Decode speed-up llama.cpp / transformers: **{ratio:.1f}x** (same GGUF, same prompts, one run).",
                "",
            ]
    lines += [
        "| collection | strategy | rows | first-attempt valid (per stage) | rows with text | texts | pass guard | gen tok/row | prompt tok/row | s/row |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in report.get("strategies", {}).items():
        collection, label = key.split("/")
        stages = ", ".join(f"{k} {v['first_attempt_valid']:.0%} ({v['calls']})" for k, v in s["stages"].items()) or "-"
        lines.append(
            f"| {collection} | {label} | {s['rows']} | {stages} | {s['rows_with_text']} | {s['texts']} | "
            f"{s['texts_passing_guard']} | {s['completion_tokens_per_row']:.0f} | {s['prompt_tokens_per_row']:.0f} | "
            f"{s['seconds_per_row']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="training rows per collection")
    parser.add_argument("--collections", nargs="+", default=["scifact", "cranfield"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--skip-backends", action="store_true")
    parser.add_argument("--skip-strategies", action="store_true")
    parser.add_argument("--backend-prompts", type=int, default=3)
    parser.add_argument("--backend-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: all cores; 1 on a shared machine)"
    )
    parser.add_argument("--out", default=str(RESULTS / "llamacpp"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    report: dict[str, Any] = reporting.read_json(out.with_suffix(".json"), default={})
    if not args.skip_backends:
        prompts = _prompts(args.backend_prompts)
        report["backends"] = {
            "llamacpp": bench_llamacpp_backend(prompts, args.backend_tokens),
            "transformers": bench_transformers_backend(prompts, args.backend_tokens, threads=2),
        }
        _save(out, report)
    if not args.skip_strategies:
        from sentence_transformers import SentenceTransformer

        retriever = SentenceTransformer(str(paths.embedded_retriever_path()))
        report.setdefault("strategies", {})
        for collection in args.collections:
            col, pairs = _rows(collection, args.rows)
            needs = any(STRATEGIES[label].get("max_candidates", 0) for label in args.strategies)
            candidates = _candidates(col, pairs, retriever) if needs else [()] * len(pairs)
            for label in args.strategies:
                print(f"== {collection} / {label}", flush=True)
                report["strategies"][f"{collection}/{label}"] = run_strategy(
                    collection, label, col, pairs, candidates, retriever, args.seed, args.threads
                )
                _save(out, report)
    print(_markdown(report))


def _save(out: Path, report: dict[str, Any]) -> None:
    reporting.write_json(out.with_suffix(".json"), report)  # atomic: an interrupted run keeps the last good file
    out.with_suffix(".md").write_text(_markdown(report), encoding="utf-8")


if __name__ == "__main__":
    main()
