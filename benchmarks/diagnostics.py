"""Gap diagnostics of a real training set: mined vs naive-generated vs counterfactual-generated negatives.

Builds (or loads) SciFact training sets with ``negsynth_hf.build_dataset`` -- the same mined negatives, plus
generated ones from each strategy -- and writes ``negsynth_hf.diagnose`` reports (raw and gap-weighted)
per strategy, plus a side-by-side ``summary.md``::

    python benchmarks/diagnostics.py --collection scifact --max-queries 48 \\
        --output benchmarks/results/diagnostics/scifact

    # or diagnose builds saved earlier (BuiltDataset.save folders, or plain n-tuple datasets)
    python benchmarks/diagnostics.py --dataset naive=/path/to/build --dataset counterfactual=/path/to/build2 \\
        --output benchmarks/results/diagnostics/scifact

Builds are saved under ``--build-dir`` (default: the negsynth user cache, never the repository) so a rerun
only re-diagnoses; LLM responses are cached by the generator config as usual.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import reporting  # noqa: E402 - needs ROOT on sys.path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", default="scifact", help="BEIR collection under --data-dir (default: scifact).")
    p.add_argument(
        "--data-dir",
        default=None,
        help="Judged collections folder (default: $NEGSYNTH_DATA_DIR, else ../shared/data beside the checkout).",
    )
    p.add_argument("--split", default="train")
    p.add_argument("--max-queries", type=int, default=24, help="Queries sampled from the split (seeded).")
    p.add_argument(
        "--corpus-size",
        type=int,
        default=800,
        help="Mine from the sampled pairs' positives plus seeded random documents up to this many (0: whole corpus). "
        "Embedding all 5k SciFact documents takes ~30 min on a busy 2-core machine.",
    )
    p.add_argument("--num-mined", type=int, default=5)
    p.add_argument("--num-generated", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=["naive", "counterfactual"])
    p.add_argument("--generator-backend", default="embedded", choices=["embedded", "transformers", "openai"])
    p.add_argument("--generator-model", default=None, help="Model folder (transformers) or served name (openai).")
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--base-url", default=None)
    p.add_argument("--batch-size", type=int, default=8, help="Generator rows per generate() call.")
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--num-threads", type=int, default=None, help="torch threads for local generation.")
    p.add_argument("--retriever", default=None, help="SentenceTransformer path (default: embedded MiniLM).")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="Diagnose a saved dataset instead of building (BuiltDataset folder or load_from_disk dataset); repeatable.",
    )
    p.add_argument("--build-dir", default=None, help="Where builds are saved (default: <negsynth cache>/bench_builds).")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "diagnostics" / "scifact"))
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument("--absolute-margin", type=float, default=None)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_saved(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """(train, provenance or None, build config or {}) from a BuiltDataset folder or a saved Dataset."""
    from datasets import Dataset, DatasetDict, load_from_disk

    folder = Path(path)
    if (folder / "build_config.json").is_file():
        from negsynth_hf.artifacts import BuiltDataset

        result = BuiltDataset.load(folder)
        return result.train, result.provenance, {**result.config, "summary": result.summary.to_dict()}
    data = load_from_disk(str(folder))
    if isinstance(data, DatasetDict):
        return data["train"], data.get("provenance"), {}
    assert isinstance(data, Dataset)
    return data, None, {}


def build(args: argparse.Namespace, strategy: str, retriever: Any) -> Path:
    """Build (or reuse) the ``strategy`` training set; returns its folder."""
    from negsynth_hf.build import build_dataset
    from negsynth_hf.data import load_beir, mining_corpus, pairs_dataset
    from negsynth_hf.generators import GeneratorConfig
    from negsynth_hf.paths import cache_dir

    root = Path(args.build_dir) if args.build_dir else cache_dir("bench_builds")
    gen_name = (args.generator_model or args.generator_backend).rstrip("/").split("/")[-1]
    key = f"{args.collection}-{args.split}-q{args.max_queries}-c{args.corpus_size}-m{args.num_mined}-g{args.num_generated}-{strategy}-{gen_name}-s{args.seed}"
    folder = root / key
    if (folder / "build_config.json").is_file():
        print(f"[{strategy}] reusing build {folder}")
        return folder
    data_dir = reporting.data_dir(args.data_dir)
    collection = load_beir(data_dir / args.collection, splits=[args.split])
    pairs = pairs_dataset(collection, args.split, max_queries=args.max_queries, seed=args.seed)
    generator = GeneratorConfig(
        backend=args.generator_backend,
        model=args.generator_model,
        gguf_file=args.gguf_file,
        base_url=args.base_url,
        batch_size=args.batch_size,
        num_threads=args.num_threads,
    )
    start = time.perf_counter()
    result = build_dataset(
        pairs,
        corpus=mining_corpus(
            collection, args.split, set(pairs["query_id"]), corpus_size=args.corpus_size or None, seed=args.seed
        ),
        retriever=retriever,
        generator=generator,
        strategy=strategy,
        profile="generic",
        num_mined=args.num_mined,
        num_generated=args.num_generated,
        max_new_tokens=args.max_new_tokens,
        absolute_margin=args.absolute_margin,
        relative_margin=args.relative_margin,
        seed=args.seed,
        show_progress_bar=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    result.save(folder)
    print(f"[{strategy}] built {len(result.train)} rows in {time.perf_counter() - start:.0f} s -> {folder}")
    return folder


def summary_markdown(rows: dict[str, Any], command: str) -> str:
    """Side-by-side key numbers of the per-strategy reports (``DiagnosticsReport.to_dict()`` each)."""
    lines = [
        "# Gap diagnostics: mined vs generated negatives",
        "",
        f"Command: `{command}`",
        "",
        "Each column is one training set (same queries, same mined negatives, generated negatives from one "
        "strategy); full reports in the sub-folders. *raw* = what a plain InfoNCE/MNRL trainer sees (guard-rejected "
        "texts included, fillers skipped), *weighted* = under the gap-correction weights of the `labels` column.",
        "",
    ]
    body = [[label, *(cell(r) for r in rows.values())] for label, cell in summary_rows()]
    lines += reporting.markdown_table(["metric", *rows], body, "l" + "r" * len(rows))
    return "\n".join(lines) + "\n"


def summary_rows() -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """(label, cell of one report) per summary line, in the order the reports' sections come."""
    f = reporting.fmt
    out: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("rows / generated used (raw)", lambda r: f"{r['rows_used']} / {r['counts']['generated']['non_empty']}"),
        ("generated rejected by guard", lambda r: str(r["counts"]["generated"].get("masked_by_guard", 0))),
        ("generated fillers skipped", lambda r: str(r["counts"]["generated"]["empty"])),
    ]
    for name in ("positive", "mined", "generated"):
        out.append((f"mean sim(q, {name}) raw", lambda r, n=name: f(r["spectrum"]["raw"][n]["mean"])))
    out.append(("mean sim(q, generated) weighted", lambda r: f(r["spectrum"]["weighted"]["generated"]["mean"])))
    for feat in ("embedding", "surface"):
        for suffix, key in (("raw", "auc"), ("weighted", "auc_weighted"), ("refit weighted", "auc_weighted_refit")):
            out.append((f"{feat} probe AUC {suffix}", lambda r, p=feat, k=key: f(r["shortcut"]["probes"][p][k])))
    for dist in ("raw", "weighted"):
        out.append((f"MI(source; sim) bits {dist} (shuffled p95)", lambda r, d=dist: _mutual_info_cell(r, d)))
    for src in ("mined", "generated"):
        out.append((f"{src}: identical to positive / >= positive (raw)", lambda r, s=src: _identical_cell(r, s)))
        out.append((f"{src}: share within margin raw / weighted", lambda r, s=src: _margin_cell(r, s)))
    out.append(("generated hardness percentile mean raw", lambda r: f(r["hardness"]["raw"]["generated"]["mean"])))
    out.append(
        ("generated hardness percentile mean weighted", lambda r: f(r["hardness"]["weighted"]["generated"]["mean"]))
    )
    return out


def _mutual_info_cell(report: dict[str, Any], dist: str) -> str:
    mi = report["shortcut"]["mutual_information"]["sim_q_neg"][dist]
    return f"{reporting.fmt(mi['mi_bits'], 4)} ({reporting.fmt(mi['shuffled_p95_bits'], 4)})"


def _identical_cell(report: dict[str, Any], source: str) -> str:
    raw = report["false_negatives"]["raw"][source]
    return f"{raw['identical']:.0f} / {raw['at_or_above']:.0f}"


def _margin_cell(report: dict[str, Any], source: str) -> str:
    fn = report["false_negatives"]
    return f"{reporting.fmt(fn['raw'][source]['within_margin_share'])} / {reporting.fmt(fn['weighted'][source]['within_margin_share'])}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from sentence_transformers import SentenceTransformer

    from negsynth_hf.diagnostics import diagnose
    from negsynth_hf.paths import embedded_retriever_path

    torch.manual_seed(args.seed)
    retriever_path = args.retriever or str(embedded_retriever_path())
    retriever = SentenceTransformer(retriever_path)
    sources: dict[str, str] = {}
    for spec in args.dataset:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).name, spec
        sources[name] = path
    if not sources:
        for strategy in args.strategies:
            sources[strategy] = str(build(args, strategy, retriever))

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, path in sources.items():
        train, provenance, config = load_saved(path)
        start = time.perf_counter()
        report = diagnose(
            train,
            retriever,
            output_dir=out / name,
            provenance=provenance,
            absolute_margin=args.absolute_margin,
            relative_margin=args.relative_margin,
            max_rows=args.max_rows,
            seed=args.seed,
        )
        data = report.to_dict()
        results[name] = data
        if config:
            (out / name / "build_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        print(f"[{name}] diagnosed {report.rows_used} rows in {time.perf_counter() - start:.0f} s -> {out / name}")
    command = "python benchmarks/diagnostics.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "summary.md").write_text(summary_markdown(results, command), encoding="utf-8")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
