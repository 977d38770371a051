"""Render the retrieval-quality tables of README.md and benchmarks/README.md from ``benchmarks/results/``.

The tables are never typed by hand: this script reads what ``benchmarks/quality.py`` wrote
(``results/quality_<collection>.json``: one record per variant and seed; ``.meta.json``: the settings;
``.significance.json``: the paired tests) and rewrites the block between ``<!-- results:start -->`` and
``<!-- results:end -->`` in each document; the guard policies' precision and recall on the labelled negatives
(``results/guard_eval.json``, written by ``benchmarks/guard_eval.py``) go between ``<!-- guard:start -->`` and
``<!-- guard:end -->`` in README.md::

    python benchmarks/render_tables.py           # rewrite the blocks
    python benchmarks/render_tables.py --check   # exit 1 if a document differs from what would be written

README.md gets the headline table (base, mined, mined_hardness, naive and full, and the paired tests
full - mined, full - naive, mined - base); benchmarks/README.md gets every variant and every stored comparison.
Only records of each collection's current settings are read (``settings_key`` of its meta file), and nothing
here imports ``negsynth_hf``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks import reporting  # noqa: E402 - needs ROOT on sys.path
from benchmarks.quality import COMPARISONS, VARIANTS  # noqa: E402
from benchmarks.quality_summary import ALPHA, METRIC, comparison_cell, load, marks, test_for  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"
GUARD_START, GUARD_END = "<!-- guard:start -->", "<!-- guard:end -->"
GUARD_POLICIES = ("off", "margin", "checks", "contrast")
COLLECTIONS: dict[str, str] = {"scifact": "SciFact", "cranfield": "Cranfield", "cisi": "CISI"}
HEADLINE_VARIANTS = ("base", "mined", "mined_hardness", "naive", "full")
HEADLINE_COMPARISONS = (("full", "mined"), ("full", "naive"), ("mined", "base"))
_GUARD = re.compile(r"recommended (\w+)")


@dataclass(frozen=True)
class Target:
    """A document and which rendering goes between its markers."""

    path: Path
    kind: str  # "headline" | "ladder" | "guard"

    @property
    def markers(self) -> tuple[str, str]:
        return (GUARD_START, GUARD_END) if self.kind == "guard" else (START, END)


def default_targets(root: Path = ROOT) -> list[Target]:
    return [
        Target(root / "README.md", "headline"),
        Target(root / "README.md", "guard"),
        Target(root / "benchmarks" / "README.md", "ladder"),
    ]


# --------------------------------------------------------------------------- cells
def score_cell(variant: str, row: dict[str, Any] | None) -> str:
    """``mean ± std (n seeds)``; the untrained base model is deterministic, so it has one number."""
    if row is None:
        return "—"
    if variant == "base":
        return f"{row[METRIC]:.4f}"
    seeds = f"{row['n']} seed" + ("s" if row["n"] != 1 else "")
    if row["n"] == 1:
        return f"{row[METRIC]:.4f} ({seeds})"
    return f"{reporting.fmt_mean_std(row[METRIC], row[f'{METRIC}_std'])} ({seeds})"


def setup_line(name: str, scored: dict[str, Any]) -> str:
    """What one collection's figures are: queries, documents, seeds, the chosen steps and learning rate."""
    m = scored["meta"]
    chosen = (m.get("selection") or {}).get("chosen") or {}
    picked = f"; {chosen['steps']} steps, lr {chosen['learning_rate']:g}" if chosen else ""
    return (
        f"- **{name}**: {m['n_train_queries']} training / {m['n_test_queries']} test queries, "
        f"{m['test_corpus_size']:,} documents{picked}."
    )


def guard_note(scored: dict[str, dict[str, Any]]) -> str:
    """Which guard policy made the generated negatives of ``full``, as each meta file records it."""
    policies = {}
    for name, s in scored.items():
        found = _GUARD.search(s["meta"].get("description", ""))
        policies.setdefault(found.group(1) if found else "unrecorded", []).append(name)
    if len(policies) == 1:
        return f"the `{next(iter(policies))}` guard"
    return "the guard policy " + "; ".join(f"`{p}` ({', '.join(names)})" for p, names in policies.items())


# --------------------------------------------------------------------------- tables
def headline(scored: dict[str, dict[str, Any]]) -> list[str]:
    """One row per collection: the five headline variants, then the three paired tests."""
    variants = [v for v in HEADLINE_VARIANTS if any(v in s["rows"] for s in scored.values())]
    lines = [f"nDCG@10, mean ± sample std over training seeds. `full`: `CausalNegLoss` on the negatives kept by "
             f"{guard_note(scored)}; other variants: [benchmarks/README.md](benchmarks/README.md#retrieval-quality).",
             ""]  # fmt: skip
    body = [[COLLECTIONS.get(c, c), *(score_cell(v, s["rows"].get(v)) for v in variants)] for c, s in scored.items()]
    lines += reporting.markdown_table(["collection", *variants], body, "l" + "r" * len(variants))
    lines += ["", _tests_caption(), ""]
    header = [f"{a} − {b}" for a, b in HEADLINE_COMPARISONS]
    body = [
        [COLLECTIONS.get(c, c), *(comparison_cell(s["tests"], a, b) for a, b in HEADLINE_COMPARISONS)]
        for c, s in scored.items()
    ]
    lines += reporting.markdown_table(["collection", *header], body, "l" + "r" * len(header))
    lines += ["", *(setup_line(COLLECTIONS.get(c, c), s) for c, s in scored.items())]
    return lines + ["", "In short: " + "; ".join(verdict(scored, a, b) for a, b in HEADLINE_COMPARISONS) + "."]


def verdict(scored: dict[str, dict[str, Any]], a: str, b: str) -> str:
    """Where ``a`` differs significantly from ``b``, in words (read from the same tests as the table)."""
    by_sign: dict[str, list[str]] = {"higher": [], "lower": []}
    for c, s in scored.items():
        found = test_for(s["tests"], a, b)
        if found is not None and found[1] < ALPHA:
            by_sign["higher" if found[0] > 0 else "lower"].append(COLLECTIONS.get(c, c))
    parts = [f"significantly {sign} on {', '.join(names)}" for sign, names in by_sign.items() if names]
    return f"`{a}` vs `{b}`: " + (" and ".join(parts) if parts else "no significant difference on any collection")


def ladder(scored: dict[str, dict[str, Any]]) -> list[str]:
    """Every variant (rows) by collection (columns), then every stored comparison."""
    present = {v for s in scored.values() for v in s["rows"]}
    variants = [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))
    names = [COLLECTIONS.get(c, c) for c in scored]
    lines = [*(setup_line(COLLECTIONS.get(c, c), s) for c, s in scored.items()), ""]
    lines += [f"nDCG@10, mean ± sample std over training seeds; ▲m/▼m: significantly above/below `mined`, ▲n/▼n: "
              f"above/below `naive` (p < {ALPHA}).", ""]  # fmt: skip
    body = []
    for v in variants:
        cells = [f"{score_cell(v, s['rows'].get(v))} {marks(s['tests'], v)}".strip() for s in scored.values()]
        body.append([f"`{v}`", *cells])
    lines += reporting.markdown_table(["variant", *names], body, "l" + "r" * len(names))
    stored = {(t["a"], t["b"]) for s in scored.values() for t in s["tests"]}
    pairs = [p for p in COMPARISONS if p in stored or p[::-1] in stored]
    lines += ["", _tests_caption(), ""]
    body = [[f"{a} − {b}", *(comparison_cell(s["tests"], a, b) for s in scored.values())] for a, b in pairs]
    return lines + reporting.markdown_table(["comparison", *names], body, "l" + "r" * len(names))


def _tests_caption() -> str:
    return (
        "Δ = a − b over the test queries (seeds averaged per query) [95% paired t-interval] (two-sided p, SciPy's "
        f"paired permutation test, 10,000 seeded permutations); * p < {ALPHA}."
    )


def guard_table(guard_eval: dict[str, Any]) -> list[str]:
    """Precision / recall of each guard policy on the evaluation half of the labelled negatives."""
    lines = [
        "Precision / recall of each policy on labelled generated negatives (evaluation half; "
        "[labels](benchmarks/data/labels/README.md)): precision is the share of kept texts that are true "
        "counterfactuals, recall the share of true ones kept.",
        "",
        "| collection | labelled (true) | " + " | ".join(f"`{p}`" for p in GUARD_POLICIES) + " |",
        "| --- | ---: |" + " ---: |" * len(GUARD_POLICIES),
    ]
    for key, name in COLLECTIONS.items():
        policies = guard_eval["collections"].get(key, {}).get("policies", {})
        rows = [policies.get(p, {}).get("eval") for p in GUARD_POLICIES]
        if not any(rows):
            continue
        first = next(r for r in rows if r)
        cells = [f"{r['precision']:.2f} / {r['recall']:.2f}" if r else "—" for r in rows]
        lines.append(f"| {name} | {first['n_labelled']} ({first['n_true']}) | " + " | ".join(cells) + " |")
    return lines


RENDERERS = {"headline": headline, "ladder": ladder, "guard": guard_table}


# --------------------------------------------------------------------------- documents
def scored_collections(results_dir: Path, collections: Sequence[str] = tuple(COLLECTIONS)) -> dict[str, Any]:
    scored = {c: s for c in collections if (s := load(results_dir, c)) is not None}
    if not scored:
        raise SystemExit(f"no scored collection among {list(collections)} in {results_dir}: run benchmarks/quality.py")
    return scored


def replace_block(text: str, block: str, path: Path, markers: tuple[str, str] = (START, END)) -> str:
    """``text`` with the lines between the markers replaced by ``block`` (markers kept)."""
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: add a line {first} and, below it, a line {last} where the table goes.")
    head = text[: start + len(first)]
    return f"{head}\n{block.rstrip()}\n{text[end:]}"


def render(targets: Sequence[Target], results_dir: Path) -> dict[Path, tuple[str, str]]:
    """Per document: (current text, text with the freshly rendered blocks)."""
    scored = scored_collections(results_dir)
    out: dict[Path, tuple[str, str]] = {}
    for target in targets:
        current, fresh = out.get(target.path) or (target.path.read_text(encoding="utf-8"),) * 2
        data = scored
        if target.kind == "guard" and (data := reporting.read_json(results_dir / "guard_eval.json")) is None:
            raise SystemExit(f"no guard_eval.json in {results_dir}: run benchmarks/guard_eval.py")
        block = "\n".join(RENDERERS[target.kind](data))
        out[target.path] = (current, replace_block(fresh, block, target.path, target.markers))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="Write nothing; exit 1 if a document is out of date.")
    p.add_argument("--results-dir", type=Path, default=reporting.RESULTS_DIR)
    p.add_argument(
        "--document",
        nargs=2,
        action="append",
        metavar=("PATH", "KIND"),
        help="A document and its table kind (headline or ladder); default: README.md headline, "
        "benchmarks/README.md ladder.",
    )
    args = p.parse_args(argv)
    targets = [Target(Path(path), kind) for path, kind in args.document] if args.document else default_targets()
    if unknown := [t.kind for t in targets if t.kind not in RENDERERS]:
        p.error(f"table kind must be one of {sorted(RENDERERS)}, got {unknown}")
    stale = []
    for path, (current, fresh) in render(targets, args.results_dir).items():
        if current == fresh:
            continue
        stale.append(path)
        if args.check:
            diff = difflib.unified_diff(current.splitlines(), fresh.splitlines(), str(path), "rendered", lineterm="")
            print("\n".join(list(diff)[:60]))
        else:
            path.write_text(fresh, encoding="utf-8")
            print(f"updated {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run `python benchmarks/render_tables.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
