"""PNG figures of a diagnostics report. matplotlib is the optional ``plots`` extra, imported lazily (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from negsynth_hf.diagnostics.report import DiagnosticsReport

PLOTS_HINT = "Figures skipped: matplotlib is not installed. Install it with `pip install 'negsynth-hf[plots]'`."
COLORS = {"positive": "#2ca02c", "mined": "#1f77b4", "generated": "#d62728"}


def _pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_figures(report: DiagnosticsReport, output_dir: str | Path) -> tuple[list[str], str | None]:
    """Draw the figures into ``output_dir``; returns (file names, message if skipped)."""
    plt = _pyplot()
    if plt is None:
        return [], PLOTS_HINT
    if report.table is None or report.positive_sims is None:
        return [], "Figures skipped: the report holds no per-negative arrays (loaded from JSON?)."
    out = Path(output_dir)
    names = []
    for name, draw in (("spectrum.png", _spectrum), ("margin.png", _margin), ("hardness.png", _hardness)):
        fig = draw(plt, report)
        if fig is None:
            continue
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names, None


def _title(report: DiagnosticsReport) -> str:
    model = "/".join(report.model.rstrip("/").split("/")[-2:])
    return f"{model}, {report.rows_used} queries"


def _hist_panels(plt, report, values_by_source, edges, xlabel, title, *, vlines=()):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)
    for ax, weighted in zip(axes, (False, True), strict=True):
        for name, (vals, w) in values_by_source.items():
            if vals.size == 0:
                continue
            ww = w if weighted else np.ones_like(vals)
            if ww.sum() <= 0:
                continue
            mass = ww.sum()
            label = f"{name} (n={vals.size})" if not weighted else f"{name} (mass={mass:.0f})"
            ax.hist(
                np.clip(vals, edges[0], edges[-1]),
                bins=edges,
                weights=ww / mass,
                histtype="step",
                linewidth=1.8,
                color=COLORS[name],
                label=label,
            )
        for x, label in vlines:
            ax.axvline(x, color="gray", linestyle="--" if x == 0 else ":", linewidth=1)
            ax.text(x, ax.get_ylim()[1] * 0.95, f" {label}", color="gray", fontsize=8, va="top")
        ax.set_title("gap-weighted" if weighted else "raw")
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("share of items (weighted: of weight mass)")
    fig.suptitle(f"{title} ({_title(report)})")
    return fig


def _spectrum(plt, report: DiagnosticsReport):
    t = report.table
    valid = t.valid
    data = {"positive": (report.positive_sims, np.ones_like(report.positive_sims))}
    for name, flag in (("mined", False), ("generated", True)):
        sel = valid & (t.is_generated == flag)
        data[name] = (t.sim[sel], t.weight[sel])
    edges = np.asarray(report.spectrum.bin_edges)
    return _hist_panels(plt, report, data, edges, "cosine similarity to the query", "Similarity spectrum by source")


def _margin(plt, report: DiagnosticsReport):
    t = report.table
    valid = t.valid
    data = {}
    for name, flag in (("mined", False), ("generated", True)):
        sel = valid & (t.is_generated == flag)
        data[name] = (t.sim[sel] - t.sim_pos[sel], t.weight[sel])
    all_vals = np.concatenate([v for v, _ in data.values()]) if data else np.zeros(0)
    if all_vals.size == 0:
        return None
    lo, hi = float(min(all_vals.min(), -0.05)), float(max(all_vals.max(), 0.05))
    edges = np.linspace(lo, hi, 41)
    vlines = [(0.0, "= positive")]
    if report.false_negatives.absolute_margin is not None:
        vlines.append((-report.false_negatives.absolute_margin, "abs. margin"))
    return _hist_panels(
        plt,
        report,
        data,
        edges,
        "sim(q, neg) - sim(q, pos)   (> 0: scores above the positive)",
        "False-negative risk",
        vlines=vlines,
    )


def _hardness(plt, report: DiagnosticsReport):
    from negsynth_hf.diagnostics.spectrum import row_percentiles

    t = report.table
    if not (t.valid & t.is_generated).any():
        return None
    pct_raw, _ = row_percentiles(t, weighted=False)
    pct_w, _ = row_percentiles(t, weighted=True)
    edges = np.linspace(0, 1, 11)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, weighted, pct in zip(axes, (False, True), (pct_raw, pct_w), strict=True):
        for name, flag in (("mined", False), ("generated", True)):
            sel = t.valid & (t.is_generated == flag) & np.isfinite(pct)
            if weighted:
                sel &= t.weight > 0
            if not sel.any():
                continue
            w = t.weight[sel] if weighted else np.ones(int(sel.sum()))
            size = f"mass={w.sum():.0f}" if weighted else f"n={int(sel.sum())}"
            label = f"{name}{' (leave-one-out)' if not flag else ''} ({size})"
            ax.hist(
                pct[sel],
                bins=edges,
                weights=w / w.sum(),
                histtype="step",
                linewidth=1.8,
                color=COLORS[name],
                label=label,
            )
        ax.set_title("gap-weighted" if weighted else "raw")
        ax.set_xlabel("percentile within the row's mined-negative similarities")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("share of negatives")
    fig.suptitle(f"Hardness relative to mined negatives ({_title(report)})")
    return fig
