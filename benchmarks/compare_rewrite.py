"""The rewrite strategy against query_edit on SciFact training rows, with the default generator.

```bash
python benchmarks/compare_rewrite.py --rows 20 --threads 1
# -> benchmarks/results/rewrite_vs_query_edit.{json,md}; LLM responses: benchmarks/data/qwen/responses/
```

Both strategies run through :class:`~negsynth_hf.synthesis.Synthesizer` on the first ``--rows`` training pairs of
``benchmarks/quality.py`` (same pairs, profile, seed, attempts and response cache, so query_edit replays the
grid's committed replies and only its new re-asks reach the LLM). Per strategy it prints: negatives kept of those
asked for, one reason per missing negative, generated tokens per kept negative (cached replies count with the
tokens they took when they were generated), and the raw source-probe AUC (``negsynth_hf.weighting.source_weights``,
no weighting) of the kept negatives against MiniLM-mined negatives of the same rows, with retriever embeddings
plus surface features and with surface features alone. The JSON holds the edits per row (ids, spans,
replacements, edited queries), never the corpus texts.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks import quality, reporting  # noqa: E402 - needs ROOT on sys.path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collection", default="scifact")
    p.add_argument("--rows", type=int, default=20, help="The first N training pairs of benchmarks/quality.py.")
    p.add_argument("--strategies", nargs="+", default=["rewrite", "query_edit"])
    p.add_argument("--chunk", type=int, default=5, help="Rows per synthesis call (results are saved after each).")
    p.add_argument("--num-generated", type=int, default=2)
    p.add_argument("--num-mined", type=int, default=3)
    p.add_argument("--mine-corpus-size", type=int, default=2000, help="Judged documents plus seeded random others.")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (one thread pool on a shared CPU).")
    p.add_argument("--parallel", type=int, default=4, help="llama.cpp slots decoded together.")
    p.add_argument("--generator-model", default=None, help="GGUF model (default: Qwen2.5-Coder-1.5B).")
    p.add_argument("--llm-cache-dir", default=str(ROOT / "benchmarks" / "data" / "qwen" / "responses"))
    p.add_argument("--out", default=str(reporting.RESULTS_DIR / "rewrite_vs_query_edit"))
    p.add_argument(
        "--baseline-slots",
        default=str(ROOT / "benchmarks" / "data" / "quality" / "scifact" / "counterfactual_guard_off.jsonl"),
        help="Generated slots of the quality grid's build (query_edit before per-slot re-asks), for comparison.",
    )
    return p.parse_args(argv)


def quality_args(args: argparse.Namespace) -> argparse.Namespace:
    """benchmarks/quality.py's arguments for this collection, with this run's generator settings."""
    qargs = quality.parse_args(["--collection", args.collection])
    qargs.generator_threads, qargs.generator_parallel = args.threads, args.parallel
    qargs.generator_model, qargs.llm_cache_dir = args.generator_model, args.llm_cache_dir
    return qargs


def synthesize(
    strategy: str, generator: Any, items: list[Any], settings: dict[str, Any], args: argparse.Namespace
) -> tuple[list[Any], float]:
    from negsynth_hf.synthesis import Synthesizer

    qargs = quality_args(args)
    synth = Synthesizer(
        generator,
        strategy=strategy,
        profile=settings["profile"],
        num_negatives=args.num_generated,
        max_attempts=qargs.max_attempts,
        max_new_tokens=settings["max_new_tokens"],
        seed=0,
    )
    start = time.perf_counter()
    results = synth.synthesize(items, show_progress_bar=True)
    return results, time.perf_counter() - start


def summary(strategy: str, results: list[Any], seconds: float, k: int) -> dict[str, Any]:
    kept = sum(len(r.negatives) for r in results)
    tokens = sum(r.completion_tokens for r in results)
    reasons = collections.Counter(_reason_kind(u) for r in results for u in r.unfilled)
    return {
        "strategy": strategy,
        "prompt_version": results[0].prompt_version if results else None,
        "rows": len(results),
        "asked": k * len(results),
        "kept": kept,
        "rows_with_all": sum(len(r.negatives) == k for r in results),
        "rows_with_none": sum(not r.negatives for r in results),
        "unfilled": sum(len(r.unfilled) for r in results),
        "unfilled_reasons": dict(reasons.most_common()),
        "completion_tokens": tokens,
        "tokens_per_kept": tokens / kept if kept else float("nan"),
        "llm_calls": sum(r.llm_calls for r in results),
        "cached_calls": sum(r.cached_calls for r in results),
        "seconds": seconds,
    }


def _reason_kind(reason: str) -> str:
    """A reason without its quoted specifics, so equal causes count together."""
    words = [w for w in reason.split() if not any(c in w for c in "'\"0123456789")]
    return " ".join(words[:10])


def rows_record(pairs: Any, results: list[Any]) -> list[dict[str, Any]]:
    """Per row: ids, what each negative changed, and why any slot stayed empty (no corpus text)."""
    out = []
    for i, r in enumerate(results):
        out.append(
            {
                "query_id": pairs["query_id"][i],
                "positive_id": pairs["positive_id"][i],
                "negatives": [
                    {
                        "strategy_type": n.strategy_type,
                        "edits": [list(e) for e in n.edits] or None,
                        "edited_query": n.edited_query,
                        "rule_edit": n.rule_edit,
                        "flags": list(n.flags),
                    }
                    for n in r.negatives
                ],
                "unfilled": r.unfilled,
                "completion_tokens": r.completion_tokens,
            }
        )
    return out


def mined_negatives(collection: Any, pairs: Any, train_ids: list[str], retriever: Any, args) -> list[list[str]]:
    """MiniLM's top non-relevant corpus documents per row (the probe's corpus side, as the build mines them)."""
    from negsynth_hf.data import mining_corpus
    from negsynth_hf.mining import mine_negatives

    corpus = mining_corpus(collection, "train", train_ids, corpus_size=args.mine_corpus_size, seed=0)
    known = list(pairs["known_positives"])
    mined = mine_negatives(
        pairs, model=retriever, num_negatives=args.num_mined, corpus=corpus, known_positives=known, relative_margin=0.05
    )
    return mined.negatives


def probe_aucs(
    generated: list[list[str]], mined: list[list[str]], positives: list[str], queries: list[str], model: Any
) -> dict[str, Any]:
    """Raw source-probe AUC (embeddings + surface, and surface only) and how many generated texts the retriever
    scores at or above their own positive."""
    import numpy as np

    from negsynth_hf.weighting import source_weights

    texts, is_gen, groups = [], [], []
    for row, (gen, min_) in enumerate(zip(generated, mined, strict=True)):
        for text, flag in [(t, True) for t in gen] + [(t, False) for t in min_]:
            texts.append(text)
            is_gen.append(flag)
            groups.append(row)
    emb = model.encode(texts, normalize_embeddings=True, batch_size=32)
    with_emb = source_weights(texts, is_gen, groups, embeddings=emb, enabled=False)
    surface = source_weights(texts, is_gen, groups, enabled=False)
    q = model.encode(queries, normalize_embeddings=True)
    p = model.encode(positives, normalize_embeddings=True)
    above = 0
    for i, (flag, row) in enumerate(zip(is_gen, groups, strict=True)):
        if flag and float(emb[i] @ q[row]) >= float(p[row] @ q[row]):
            above += 1
    return {
        "probe_auc_embedding_surface": float(with_emb.auc_before),
        "probe_auc_surface": float(surface.auc_before),
        "n_generated": int(np.sum(is_gen)),
        "n_mined": int(len(is_gen) - np.sum(is_gen)),
        "generated_at_or_above_positive": above,
    }


def baseline_written(path: Path, query_ids: list[str], k: int) -> dict[str, Any] | None:
    """How many generated slots of these rows the quality grid's build filled with a written text (``None`` when
    its rows are not these queries)."""
    if not path.is_file():
        return None
    slots = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    mine = [s for s in slots if s["row"] < len(query_ids)]
    if any(s["query_id"] != query_ids[s["row"]] for s in mine):
        return None
    written = sum(s["status"] != "filled" for s in mine)
    return {"file": str(path.relative_to(ROOT)), "asked": len(query_ids) * k, "written": written}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# rewrite vs query_edit ({report['collection']}, {report['rows']} training rows, K={report['k']})",
        "",
        f"Generator: `{report['model_id']}` on llama.cpp ({report['threads']} thread). Command: `{report['command']}`",
        "",
        "| strategy | kept / asked | rows with K | rows with none | tokens per kept negative | LLM calls "
        "(cached) | probe AUC emb+surface | probe AUC surface | generated >= positive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["strategies"]:
        lines.append(
            f"| {s['strategy']} ({s['prompt_version']}) | {s['kept']} / {s['asked']} | {s['rows_with_all']} | "
            f"{s['rows_with_none']} | {s['tokens_per_kept']:.0f} | {s['llm_calls']} ({s['cached_calls']}) | "
            f"{s.get('probe_auc_embedding_surface', float('nan')):.3f} | {s.get('probe_auc_surface', float('nan')):.3f} | "
            f"{s.get('generated_at_or_above_positive', '-')} of {s['kept']} |"
        )
    for s in report["strategies"]:
        base = s.get("baseline_written")
        if base:
            lines += [
                "",
                f"Before per-slot re-asks, the quality grid's build wrote {base['written']} of {base['asked']} "
                f"query_edit negatives for these {s['rows']} rows (`{base['file']}`).",
            ]
    lines += ["", "Unfilled negatives by reason:", ""]
    for s in report["strategies"]:
        for reason, n in s["unfilled_reasons"].items():
            lines.append(f"- {s['strategy']}: {n} x `{reason}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from datasets import Dataset

    from negsynth_hf.data import load_beir
    from negsynth_hf.synthesis import SynthesisInput
    from negsynth_hf.training import load_model

    args = parse_args(argv)
    qargs = quality_args(args)
    settings = quality.resolve_settings(qargs)
    collection = load_beir(quality.collection_folder(args.collection))
    pairs, train_ids, _ = quality.training_pairs(collection, qargs, settings)
    pairs = pairs.select(range(min(args.rows, len(pairs))))
    items = [
        SynthesisInput(query=q, positive=p, positive_id=str(d))
        for q, p, d in zip(pairs["anchor"], pairs["positive"], pairs["positive_id"], strict=True)
    ]
    retriever = load_model("embedded", max_seq_length=128)
    mined = mined_negatives(collection, Dataset.from_dict(pairs.to_dict()), train_ids, retriever, args)
    generator = quality.generator_config(qargs).build()
    report: dict[str, Any] = {
        "collection": args.collection,
        "rows": len(items),
        "k": args.num_generated,
        "threads": args.threads,
        "model_id": str(generator.model_id),
        "command": "python benchmarks/compare_rewrite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "strategies": [],
        "per_row": {},
    }
    out = Path(args.out)
    queries, positives = list(pairs["anchor"]), list(pairs["positive"])
    results: dict[str, list[Any]] = {s: [] for s in args.strategies}
    seconds = dict.fromkeys(args.strategies, 0.0)
    # chunk by chunk, every strategy on the same rows, saving after each: a run cut short compares equal rows
    for start in range(0, len(items), args.chunk):
        for strategy in args.strategies:
            chunk, took = synthesize(strategy, generator, items[start : start + args.chunk], settings, args)
            results[strategy] += chunk
            seconds[strategy] += took
            done = len(results[strategy])
            entry = summary(strategy, results[strategy], seconds[strategy], args.num_generated)
            texts = [[n.text for n in r.negatives] for r in results[strategy]]
            entry.update(probe_aucs(texts, mined[:done], positives[:done], queries[:done], retriever))
            if strategy == "query_edit":
                ids = list(pairs["query_id"][:done])
                entry["baseline_written"] = baseline_written(Path(args.baseline_slots), ids, args.num_generated)
            report["strategies"] = [s for s in report["strategies"] if s["strategy"] != strategy] + [entry]
            report["per_row"][strategy] = rows_record(pairs, results[strategy])
            reporting.write_json(out.with_suffix(".json"), report)
            out.with_suffix(".md").write_text(to_markdown(report), encoding="utf-8")
            print(json.dumps(entry), flush=True)
    print(to_markdown(report), flush=True)
    return report


if __name__ == "__main__":
    main()
