"""Build a SciFact training set end to end with the embedded models: 200 train queries, SmolLM2 + MiniLM.

mine (MiniLM, ``mine_hard_negatives``) -> synthesize (embedded SmolLM2-135M, strategy ``query_edit``) ->
verify (false-negative guard) -> weight (cross-fitted source probe) -> assemble. Writes the wall time per
stage, the summary table and the probe AUC before/after weighting to
``benchmarks/results/build_smollm2_200.{md,json}`` and saves the built ``DatasetDict`` (configs ``train`` and
``provenance``) to ``outputs/scifact-200`` for diagnostics and training runs::

    nohup python benchmarks/build_smollm2_200.py > outputs/build_smollm2_200.log 2>&1 &

LLM responses go to the default response cache (``negsynth_hf.paths.cache_dir("responses")``), so an
interrupted run, rerun with the same arguments, resumes without repeating finished LLM calls.

Queries: the training part of ``split_train_validation`` (20% of SciFact's train queries held out for model
selection, seed 0), of which ``--num-queries`` are sampled (seed 0). Corpus: mining from all 5,183 SciFact
documents takes ~40 min of MiniLM encoding on the shared 2-core machine, so by default the corpus is every
train-split positive plus seeded random documents up to ``--corpus-size`` (``0`` = the whole corpus).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-queries", type=int, default=200)
    p.add_argument("--corpus-size", type=int, default=1000, help="0: the whole SciFact corpus.")
    p.add_argument("--num-mined", type=int, default=15)
    p.add_argument("--num-generated", type=int, default=2)
    p.add_argument("--strategy", default="query_edit", choices=["query_edit", "counterfactual", "naive"])
    p.add_argument(
        "--query-editor",
        default="rules",
        choices=["llm", "rules", "llm_then_rules"],
        help="query_edit stage 1: SmolLM2 almost never passes the one-place check, so rules by default.",
    )
    p.add_argument("--profile", default="scientific", help="Dataset profile (SciFact: claims vs paper abstracts).")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--max-attempts", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="Generator rows per generate() call.")
    p.add_argument("--map-batch-size", type=int, default=16)
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--output", default=str(ROOT / "outputs" / "scifact-200"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "build_smollm2_200"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.num_threads)
    from datasets import Dataset

    from benchmarks import reporting
    from negsynth_hf import __version__, build_dataset
    from negsynth_hf.data import document_text, load_beir, pairs_dataset, split_train_validation
    from negsynth_hf.generators import GeneratorConfig

    start = time.perf_counter()
    collection = load_beir(reporting.data_dir() / "scifact")
    train_ids, _ = split_train_validation(collection.split_query_ids("train"), validation_fraction=0.2, seed=0)
    pairs = pairs_dataset(collection, "train", query_ids=train_ids, max_queries=args.num_queries, seed=args.seed)
    titles = [collection.corpus[d]["title"] for d in pairs["positive_id"]]
    pairs = pairs.add_column("title", titles)

    if args.corpus_size:
        keep = {d for q in train_ids for d in collection.qrels["train"].get(q, {}) if d in collection.corpus}
        rest = sorted(set(collection.corpus) - keep)
        random.Random(args.seed).shuffle(rest)
        keep |= set(rest[: max(0, args.corpus_size - len(keep))])
        doc_ids = sorted(keep)
    else:
        doc_ids = sorted(collection.corpus)
    corpus = [t for t in (document_text(collection.corpus[d]) for d in doc_ids) if t.strip()]
    load_s = time.perf_counter() - start
    print(f"{len(pairs)} pairs, corpus of {len(corpus)} documents (load {load_s:.1f} s)", flush=True)

    generator = GeneratorConfig(
        backend="embedded",
        batch_size=args.batch_size,
        num_threads=args.num_threads,
        constrained=args.constrained,
    )
    result = build_dataset(
        Dataset.from_dict(pairs.to_dict()),
        corpus=corpus,
        generator=generator,
        strategy=args.strategy,
        query_editor=args.query_editor,
        profile=args.profile,
        num_mined=args.num_mined,
        num_generated=args.num_generated,
        max_new_tokens=args.max_new_tokens,
        max_attempts=args.max_attempts,
        title_column="title",
        map_batch_size=args.map_batch_size,
        seed=args.seed,
        show_progress_bar=True,
    )
    wall = time.perf_counter() - start
    result.save(args.output)

    prov = result.provenance
    gen = prov.filter(lambda r: r["source"] == "generated" and r["status"] != "filled")
    examples = [
        {k: gen[i][k] for k in ("row", "query_id", "status", "weight", "violated_requirement", "text", "original_text")}
        for i in range(min(5, len(gen)))
    ]
    for ex in examples:
        for key in ("text", "original_text"):
            if ex[key]:
                ex[key] = ex[key][:300]
    report = {
        "package_version": __version__,
        "args": vars(args),
        "num_pairs": len(pairs),
        "corpus_documents": len(corpus),
        "wall_time_s": round(wall, 1),
        "load_data_s": round(load_s, 1),
        "summary": result.summary.to_dict(),
        "config": {k: v for k, v in result.config.items() if k != "mining_log"},
        "output": args.output,
        "examples": examples,
        "torch_threads": torch.get_num_threads(),
    }
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    md = [
        "# build_dataset on SciFact: 200 train queries, embedded SmolLM2-135M + MiniLM (CPU)",
        "",
        f"Command: `python benchmarks/build_smollm2_200.py {' '.join(argv or sys.argv[1:])}`",
        "",
        f"- pairs: {len(pairs)}; corpus: {len(corpus)} SciFact documents; strategy `{args.strategy}` (query editor `{args.query_editor}`), "
        f"M={args.num_mined} mined + G={args.num_generated} generated per row; torch threads {args.num_threads}",
        f"- total wall time: {wall / 60:.1f} min (data loading {load_s:.1f} s)",
        f"- probe AUC before weighting: {_f(result.summary.weights['probe_auc_before'])}, "
        f"after: {_f(result.summary.weights['probe_auc_after'])}; effective generated share "
        f"{_f(result.summary.weights['effective_generated_share'])}",
        f"- saved to `{args.output}` (configs `train`, `provenance`; `BuiltDataset.load`)",
        "",
        result.to_markdown(),
        "## First generated negatives",
        "",
    ]
    for ex in examples:
        md.append(
            f"- row {ex['row']} ({ex['status']}, weight {ex['weight']:.3f}, edit {ex['violated_requirement']}): "
            f"{(ex['original_text'] or ex['text'])[:200]!r}"
        )
    results.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"done in {wall / 60:.1f} min; wrote {results}.md/.json and {args.output}", flush=True)
    return report


def _f(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
