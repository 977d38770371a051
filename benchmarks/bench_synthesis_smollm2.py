"""Synthesis with the embedded SmolLM2-135M on real SciFact (claim, cited abstract) pairs, per strategy.

Reports, for counterfactual, query_edit and naive: share of rows with >= 1 negative (and >= 1 negative
carrying no degenerate flag), mean negatives per row, share of negatives that a simple check flags as
answering the query (embedded MiniLM: cos(query, negative) >= cos(query, positive)), tokens/s and
wall time, plus three real examples per strategy. Writes benchmarks/results/synthesis_smollm2.{md,json}.

Run: python benchmarks/bench_synthesis_smollm2.py [--rows 20] [--threads 1]
Generation is unconstrained (outlines-constrained decoding ran at <1 token/s on this shared 2-core
machine); every reply is still parsed, repaired and validated by the pipeline. Token budgets are small
(CPU time): K=2 per strategy, one attempt for naive and counterfactual, two for query_edit.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks import reporting
from negsynth_hf.synthesis import SynthesisInput, SynthesisResult, Synthesizer

DEGENERATE = {
    "very_short",
    "equals_positive",
    "near_duplicate_of_positive",
    "looks_like_refusal",
    "copies_candidate_verbatim",
    "repetitive",
}
RESULTS = Path(__file__).parent / "results"


def load_scifact_pairs(n: int) -> list[SynthesisInput]:
    """The first ``n`` train claims (by qrels order) with their first cited abstract and its title."""
    root = reporting.data_dir() / "scifact"
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    wanted: dict[str, str] = {}
    with open(root / "qrels" / "train.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0 and row["query-id"] in queries and row["query-id"] not in wanted:
                wanted[row["query-id"]] = row["corpus-id"]
            if len(wanted) >= n:
                break
    docs = {}
    needed = set(wanted.values())
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in needed:
                docs[row["_id"]] = row
    return [
        SynthesisInput(queries[q], docs[d]["text"], title=docs[d].get("title") or None)
        for q, d in wanted.items()
        if d in docs
    ]


def answers_query_share(encoder, items: list[SynthesisInput], results: list[SynthesisResult]) -> tuple[float, int]:
    """Share of negatives at least as similar to the query as the positive is (a false-negative proxy)."""
    triples = [(it.query, it.positive, n.text) for it, r in zip(items, results, strict=True) for n in r.negatives]
    if not triples:
        return 0.0, 0
    q, p, g = (
        encoder.encode(list(col), normalize_embeddings=True, convert_to_tensor=True)
        for col in zip(*triples, strict=True)
    )
    flagged = ((q * g).sum(-1) >= (q * p).sum(-1)).sum().item()
    return flagged / len(triples), len(triples)


def summarize(name, items, results, wall, encoder) -> dict:
    n = len(results)
    share_answering, n_negs = answers_query_share(encoder, items, results)
    tokens = sum(r.completion_tokens for r in results)
    failures: dict[str, int] = {}
    for r in results:
        if r.failure_reason:
            key = r.failure_reason.split(" after ")[0][:90]
            failures[key] = failures.get(key, 0) + 1
    examples = []
    for it, r in zip(items, results, strict=True):
        for neg in r.negatives[:1]:
            examples.append(
                {
                    "query": it.query,
                    "edited_query": neg.edited_query,
                    "strategy_type": neg.strategy_type,
                    "violated_requirement": neg.violated_requirement,
                    "text": neg.text[:600],
                    "flags": list(neg.flags),
                }
            )
        if len(examples) == 3:
            break
    return {
        "strategy": name,
        "rows": n,
        "rows_with_negative": sum(bool(r.negatives) for r in results) / n,
        "rows_with_unflagged_negative": sum(any(not DEGENERATE & set(x.flags) for x in r.negatives) for r in results)
        / n,
        "mean_negatives_per_row": n_negs / n,
        "negatives": n_negs,
        "share_answering_query_minilm": share_answering,
        "flag_counts": _flag_counts(results),
        "llm_calls": sum(r.llm_calls for r in results),
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "wall_s": wall,
        "failure_reasons": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        "examples": examples,
    }


def _flag_counts(results: list[SynthesisResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        for neg in r.negatives:
            for f in neg.flags:
                counts[f] = counts.get(f, 0) + 1
    return counts


def revalidate_query_edits(summary: dict, items: list[SynthesisInput]) -> None:
    """Re-apply the CURRENT one-place check to the edits a (possibly older) run accepted.

    The 20-row query_edit run predates the fix that rejects labels glued in front of the claim; this
    records which of its accepted edits the fixed check still accepts, without re-running the LLM.
    """
    from negsynth_hf.synthesis import diff_one_place

    kept_rows, kept = 0, 0
    for item, res in zip(items, summary["results"], strict=True):
        ok = 0
        for neg in res["negatives"]:
            try:
                diff_one_place(item.query, neg["edited_query"])
                ok += 1
            except ValueError:
                pass
        kept += ok
        kept_rows += ok > 0
    summary["revalidated_with_current_check"] = {
        "rows_with_negative": kept_rows / len(items),
        "negatives": kept,
        "of_negatives": sum(len(r["negatives"]) for r in summary["results"]),
    }


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Synthesis with the embedded SmolLM2-135M on SciFact",
        "",
        f"Up to {report['rows']} real SciFact train (claim, cited abstract) pairs, profile `scientific`, no mined candidates, "
        f"unconstrained decoding, temperature {report['settings']['temperature']}, "
        f"{report['settings']['threads']} torch thread(s), shared 2-core CPU (load average at start "
        f"{report['load_average_start']}). Generator `{report['model_id']}`.",
        "",
        "| strategy | rows | K | max_new_tokens | rows with >=1 negative | rows with >=1 unflagged | negatives/row "
        "| answering query (MiniLM) | LLM calls | tokens/s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["strategies"]:
        cfg = s["config"]
        lines.append(
            f"| {s['strategy']} | {s['rows']} | {cfg['num_negatives']} | {cfg['max_new_tokens']} | {s['rows_with_negative']:.0%} "
            f"| {s['rows_with_unflagged_negative']:.0%} | {s['mean_negatives_per_row']:.2f} "
            f"| {s['share_answering_query_minilm']:.0%} of {s['negatives']} | {s['llm_calls']} "
            f"| {s['tokens_per_s']:.1f} | {s['wall_s']:.0f} |"
        )
    lines += [
        "",
        "'Unflagged' = no very_short / equals_positive / near_duplicate_of_positive / looks_like_refusal / "
        "copies_candidate_verbatim flag. 'Answering query' = cos(query, negative) >= cos(query, positive) "
        "with the embedded all-MiniLM-L6-v2: a crude false-negative proxy.",
        "",
    ]
    for s in report["strategies"]:
        lines += [f"## {s['strategy']}", "", f"Failure reasons: `{json.dumps(s['failure_reasons'])}`", ""]
        if "revalidated_with_current_check" in s:
            rv = s["revalidated_with_current_check"]
            lines += [
                f"Re-checked with the current one-place edit check (rejects labels glued before the claim, "
                f"added after this run): {rv['negatives']} of {rv['of_negatives']} accepted edits survive; rows with "
                f">= 1 negative: {rv['rows_with_negative']:.0%}.",
                "",
            ]
        lines += [f"Flags: `{json.dumps(s['flag_counts'])}`", ""]
        if "current_flag_counts" in s:
            lines += [f"Flags recomputed with the current code: `{json.dumps(s['current_flag_counts'])}`", ""]
        for i, ex in enumerate(s["examples"], 1):
            lines.append(f"{i}. **Claim:** {ex['query']}")
            if ex["edited_query"]:
                lines.append(f"   **Edited claim:** {ex['edited_query']} ({ex['violated_requirement']})")
            elif ex["violated_requirement"]:
                lines.append(f"   **Violated:** {ex['violated_requirement']} ({ex['strategy_type']})")
            lines.append(f"   **Negative:** {ex['text']!s}".replace("\n", " "))
            lines.append(f"   **Flags:** {ex['flags']}")
        if not s["examples"]:
            lines.append("(no negative produced)")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--strategies", default="query_edit,naive,counterfactual")
    ap.add_argument("--out", default=str(RESULTS / "synthesis_smollm2"))
    ap.add_argument("--append", action="store_true", help="keep other strategies already in the output JSON")
    ap.add_argument(
        "--revalidate-only", action="store_true", help="re-check stored query edits with the current check; no LLM"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import os

    out = Path(args.out)
    if args.revalidate_only:
        report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        from negsynth_hf.synthesis import quality_flags

        for summary in report["strategies"]:
            items = load_scifact_pairs(summary["rows"])
            if summary["strategy"] == "query_edit":
                revalidate_query_edits(summary, items)
            counts: dict[str, int] = {}  # flags as the current code computes them (new flags included)
            for item, res in zip(items, summary["results"], strict=True):
                for neg in res["negatives"]:
                    for flag in quality_flags(neg["text"], query=item.query, positive=item.positive):
                        counts[flag] = counts.get(flag, 0) + 1
            summary["current_flag_counts"] = counts
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        write_markdown(report, out.with_suffix(".md"))
        return

    from sentence_transformers import SentenceTransformer

    from negsynth_hf.generators import default_generator
    from negsynth_hf.paths import embedded_retriever_path

    load = os.getloadavg()[0]
    items = load_scifact_pairs(args.rows)
    t0 = time.perf_counter()
    gen = default_generator(constrained=False, batch_size=args.batch_size, num_threads=args.threads)
    _ = gen.model  # load now, not inside the first timed strategy
    load_s = time.perf_counter() - t0
    encoder = SentenceTransformer(str(embedded_retriever_path()), device="cpu")
    # per-strategy budgets: short edits, passage-length answers, long analysis JSON
    settings = {
        "query_edit": {"num_negatives": 2, "max_new_tokens": 128, "max_attempts": 2},
        "naive": {"num_negatives": 2, "max_new_tokens": 160, "max_attempts": 1},
        "counterfactual": {"num_negatives": 2, "max_new_tokens": 320, "max_attempts": 1},
    }
    report = {
        "rows": len(items),
        "model_id": gen.model_id,
        "load_s": load_s,
        "load_average_start": round(load, 2),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "settings": {"temperature": 0.2, "threads": args.threads, "batch_size": args.batch_size, "constrained": False},
        "strategies": [],
    }
    if args.append and out.with_suffix(".json").is_file():
        previous = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        report["strategies"] = [s for s in previous["strategies"] if s["strategy"] not in args.strategies.split(",")]
    for name in args.strategies.split(","):
        synth = Synthesizer(gen, strategy=name, profile="scientific", max_passage_chars=1200, **settings[name])
        t = time.perf_counter()
        results = synth.synthesize(items)
        wall = time.perf_counter() - t
        summary = summarize(name, items, results, wall, encoder)
        summary["config"] = synth.config_dict()
        summary["results"] = [r.to_dict() for r in results]
        summary["load_average_start"] = round(os.getloadavg()[0], 2)
        report["strategies"].append(summary)
        print(
            f"{name}: {summary['rows_with_negative']:.0%} rows, {summary['tokens_per_s']:.1f} tok/s, {wall:.0f}s",
            flush=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        write_markdown(report, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
