"""What the benchmark scripts share to report results: file layout, JSON, mean ± std, Markdown tables, bar charts.

The scripts measure; this module only writes what they measured, so every result file is laid out, rounded
and serialized the same way (``benchmarks/results/<stem>.{json,md,png}``, NaN written as ``null``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT_KINDS = ("json", "md", "png")
#: The judged collections beside this checkout (``../shared/data``): these scripts' default when neither
#: ``--data-dir`` nor ``$NEGSYNTH_DATA_DIR`` names a folder (the library itself has no default).
CHECKOUT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The collections folder: ``explicit``, else ``$NEGSYNTH_DATA_DIR``, else :data:`CHECKOUT_DATA_DIR`."""
    from negsynth_hf.paths import shared_data_dir

    return shared_data_dir(explicit, default=CHECKOUT_DATA_DIR)


# --------------------------------------------------------------------------- files
def result_paths(results_dir: str | Path, stem: str) -> dict[str, Path]:
    """``{"json" | "md" | "png": <stem>.<kind>, "meta" | "per_query" | "significance": <stem>.<kind>.json}``."""
    folder = Path(results_dir)
    paths = {kind: folder / f"{stem}.{kind}" for kind in RESULT_KINDS}
    for extra in ("meta", "per_query", "significance"):
        paths[extra] = folder / f"{stem}.{extra}.json"
    return paths


#: provenance columns written next to each generated text (keyed by ids, never the corpus' own documents)
SLOT_COLUMNS = (
    "row", "query_id", "positive_id", "column", "status", "text", "original_text", "generator_model_id",
    "prompt_version", "strategy", "strategy_type", "violated_requirement", "explanation", "edited_query",
    "changed_span", "edit_kind", "edit_check", "flags", "sim_query", "sim_positive", "sim_query_positive",
    "hardness_percentile", "probe_p_generated", "guard_policy", "guard_decision", "guard_reason", "guard_in_band",
    "judge_p_relevant", "judge_p_original", "judge_p_requirement", "judge_method", "weight", "weight_reason",
    "row_failure_reason",
)  # fmt: skip


def write_generated_slots(path: Path, provenance: Any) -> list[dict[str, Any]]:
    """A build's generated slots as JSON lines (``load_dataset("json", data_files=...)`` reads them); returns them.

    Mined slots are left out: they are corpus documents, rebuilt from ``../shared/data`` by their ids. Scores are
    rounded to 6 decimals: a rebuild on another thread count moves them in the 7th, which is not a change to commit.
    """
    slots = [r for r in provenance.to_list() if r["source"] == "generated"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for slot in slots:
            record = {k: _rounded(slot.get(k)) for k in SLOT_COLUMNS}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return slots


def _rounded(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: NaN -> ``None`` (strict JSON has no NaN), anything else -> its ``str``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (a reader never sees half a file; a crash leaves the old one). The temporary
    file is unique per writer: two grid processes saving the same file must not rename each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=1, default=json_default) + "\n")
    os.replace(name, path)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON at ``path``, or ``default`` when there is no file yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


# --------------------------------------------------------------------------- numbers
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value: no spread measured, not an error)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for a missing one (``None`` or NaN)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --------------------------------------------------------------------------- markdown
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> list[str]:
    """Lines of a GitHub table; ``align`` per column: ``"l"`` (text) or ``"r"`` (numbers)."""
    rule = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule[a] for a in align) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# --------------------------------------------------------------------------- figures
def grouped_bars(
    groups: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    title: str,
    ylabel: str = "score",
) -> None:
    """One bar per (group, series) with its std as error bar: ``series[label] = (means, stds)`` over ``groups``.

    Raises ImportError without matplotlib (an optional dependency): callers decide whether that is fatal.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(series)
    xs = range(len(groups))
    for k, (label, (means, stds)) in enumerate(series.items()):
        ax.bar([x + (k - 1) * width for x in xs], list(means), width, yerr=list(stds), capsize=3, label=label)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(list(groups), rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(ncol=len(series), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
