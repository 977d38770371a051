"""One table over the collections that ``quality.py`` has scored: nDCG@10 per variant, with significance marks.

Reads ``benchmarks/results/quality_<collection>.{json,meta.json,significance.json}`` (nothing is re-run) and
writes ``benchmarks/results/quality_summary.md``, the table the README shows::

    python benchmarks/quality_summary.py                       # scifact, cranfield, cisi (those present)
    python benchmarks/quality_summary.py --collections cisi

Each cell: mean ± sample std over seeds, then the marks of the paired randomization tests (seeds averaged
per query, over the test queries): ``▲m`` / ``▼m`` = significantly above / below mined-only at p < 0.05,
``▲n`` / ``▼n`` the same against naive. The p-values themselves are in the table under it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import reporting  # noqa: E402
from benchmarks.quality import VARIANTS, aggregate, candidate_tag  # noqa: E402

COLLECTIONS = ("scifact", "cranfield", "cisi")
METRIC = "ndcg@10"
ALPHA = 0.05


def load(results_dir: Path, collection: str, tag: str = "") -> dict[str, Any] | None:
    """The collection's records (current settings only), meta and tests; ``None`` if it was never scored."""
    paths = reporting.result_paths(results_dir, f"quality_{collection}{tag}")
    meta = reporting.read_json(paths["meta"], None)
    if not meta or "n_train_queries" not in meta:  # never scored, or a pre-#15 result file
        return None
    key = meta.get("settings_key")
    records = [r for r in reporting.read_json(paths["json"], []) if r.get("settings_key") == key]
    if not records:
        return None
    tests = [t for t in reporting.read_json(paths["significance"], []) or [] if t["metric"] == METRIC]
    cost = {"test_runs": len(records), "test_seconds": sum(r.get("wall_seconds") or 0.0 for r in records)}
    cost.update(selection_cost(results_dir, meta))
    return {"meta": meta, "rows": {r["variant"]: r for r in aggregate(records)}, "tests": tests, "cost": cost}


def selection_cost(results_dir: Path, meta: dict[str, Any]) -> dict[str, float]:
    """Runs and run seconds of the validation candidates behind ``meta``'s chosen setting."""
    runs, seconds = 0, 0.0
    stem = f"quality_{meta['collection']}"
    selection = meta.get("selection") or {}
    for candidate in selection.get("candidates", []):
        tag = candidate_tag("", candidate["steps"], candidate["learning_rate"], selection.get("eval_corpus_size"))
        paths = reporting.result_paths(results_dir / "quality_validation", stem + tag)
        key = (reporting.read_json(paths["meta"], {}) or {}).get("settings_key")
        records = [r for r in reporting.read_json(paths["json"], []) or [] if r.get("settings_key") == key]
        runs, seconds = runs + len(records), seconds + sum(r.get("wall_seconds") or 0.0 for r in records)
    return {"selection_runs": runs, "selection_seconds": seconds}


def test_for(tests: list[dict[str, Any]], a: str, b: str) -> tuple[float, float] | None:
    """(delta a - b, p) of the paired test of ``a`` against ``b``, in either stored direction."""
    found = _find(tests, a, b)
    return None if found is None else (found[0]["delta"] * found[1], found[0]["p_value"])


def interval_for(tests: list[dict[str, Any]], a: str, b: str) -> tuple[float, float] | None:
    """The 95% interval of a - b (``None`` for records written before intervals were stored)."""
    found = _find(tests, a, b)
    if found is None or found[0].get("ci_low") is None:
        return None
    (t, sign) = found
    low, high = sorted((t["ci_low"] * sign, t["ci_high"] * sign))
    return low, high


def _find(tests: list[dict[str, Any]], a: str, b: str) -> tuple[dict[str, Any], int] | None:
    for t in tests:
        if (t["a"], t["b"]) == (a, b):
            return t, 1
        if (t["a"], t["b"]) == (b, a):
            return t, -1
    return None


def marks(tests: list[dict[str, Any]], variant: str) -> str:
    out = []
    for baseline, letter in (("mined", "m"), ("naive", "n")):
        found = test_for(tests, variant, baseline) if variant != baseline else None
        if found and found[1] < ALPHA:
            out.append(("▲" if found[0] > 0 else "▼") + letter)
    return " ".join(out)


def comparison_cell(tests: list[dict[str, Any]], a: str, b: str) -> str:
    found = test_for(tests, a, b)
    if found is None:
        return "—"
    interval = interval_for(tests, a, b)
    ci = f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
    p = "p < 0.001" if found[1] < 0.001 else f"p {found[1]:.3f}"
    return f"{found[0]:+.4f}{ci} ({p}){'*' if found[1] < ALPHA else ''}"


def summary_markdown(scored: dict[str, dict[str, Any]]) -> str:
    names = list(scored)
    lines = ["# Retrieval quality: nDCG@10 on the full test corpora", ""]
    for name, s in scored.items():
        m = s["meta"]
        seeds = ", ".join(map(str, m.get("seeds", [])))
        done = sorted({seed for v, row in s["rows"].items() if v != "base" for seed in row["seeds"]})
        if done != m.get("seeds"):  # a grid still running: say how far it got
            seeds = f"{seeds} ({', '.join(map(str, done)) or 'none'} so far)"
        steps = m.get("selection", {}).get("chosen", {})
        chosen = f"; chosen on validation: {steps['steps']} steps, lr {steps['learning_rate']:g}" if steps else ""
        c = s["cost"]
        lines.append(
            f"- **{name}**: {m['n_train_queries']} training queries ({m['n_train_rows']} rows), "
            f"{m['n_test_queries']} test queries over {m['test_corpus_size']:,} documents, seeds {seeds}{chosen}. "
            f"Grid: {c['selection_runs']} validation + {c['test_runs']} test runs, "
            f"{(c['selection_seconds'] + c['test_seconds']) / 3600:.1f} h of run time on {m.get('device', '?')}."
        )
    lines += ["", "Mean ± std over seeds; ▲m/▼m: significantly above/below mined-only, ▲n/▼n: naive (p < 0.05).", ""]
    body = []
    for variant in VARIANTS:
        if not any(variant in s["rows"] for s in scored.values()):
            continue
        cells = []
        for s in scored.values():
            row = s["rows"].get(variant)
            if row is None:
                cells.append("—")
                continue
            text = reporting.fmt_mean_std(row[METRIC], row[f"{METRIC}_std"])
            if variant == "base" or row["n"] == 1:  # base is deterministic; one seed has no spread to show
                text = f"{row[METRIC]:.4f}" + ("" if variant == "base" else " (1 seed)")
            cells.append(f"{text} {marks(s['tests'], variant)}".strip())
        body.append([variant, *cells])
    lines += reporting.markdown_table(["variant", *names], body, "l" + "r" * len(names))
    lines += ["", "Paired tests on nDCG@10: Δ = a − b [95% t-interval], seeds averaged per query; p two-sided:", ""]
    pairs = (
        ("full", "mined"), ("full", "naive"), ("naive", "mined"), ("mined", "base"), ("full", "mined_hardness"),
        ("counterfactual", "mined"), ("counterfactual_weighted", "counterfactual"), ("full", "full_checks"),
        ("full_checks", "mined"), ("counterfactual_checks_weighted", "counterfactual_checks"),
    )  # fmt: skip
    body = []
    for a, b in pairs:
        body.append([f"{a} − {b}", *(comparison_cell(s["tests"], a, b) for s in scored.values())])
    lines += reporting.markdown_table(["comparison", *names], body, "l" + "r" * len(names))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    p.add_argument("--results-dir", default=str(reporting.RESULTS_DIR))
    p.add_argument("--tag", default="")
    p.add_argument("--output", default=None, help="Default: <results-dir>/quality_summary<tag>.md")
    args = p.parse_args(argv)
    results = Path(args.results_dir)
    scored = {c: s for c in args.collections if (s := load(results, c, args.tag)) is not None}
    if not scored:
        raise SystemExit(f"no scored collection among {args.collections} in {results}: run benchmarks/quality.py")
    text = summary_markdown(scored)
    out = Path(args.output) if args.output else results / f"quality_summary{args.tag}.md"
    out.write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    main()
