"""Markdown rendering of a :class:`DiagnosticsReport`: raw and gap-weighted numbers side by side."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from negsynth_hf.diagnostics.report import DiagnosticsReport


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _mass(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 else f"{x:.2f}"


def render_markdown(report: DiagnosticsReport) -> str:
    """The report as one Markdown page: overview, then one section per question, then the figures."""
    lines = [
        *_overview(report),
        *_spectrum_section(report),
        *_shortcut_section(report),
        *_false_negative_section(report),
        *_hardness_section(report),
    ]
    if report.figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}]({f})" for f in report.figures]
    lines += ["", f"_Computed in {report.seconds:.1f} s._", ""]
    return "\n".join(lines)


def _overview(report: DiagnosticsReport) -> list[str]:
    """Model, sample and the slot counts per source, with the report's notes."""
    s = report.settings
    lines = [
        "# Gap diagnostics",
        "",
        f"Model: `{report.model}`. Rows: {report.rows_used} of {report.rows_total} (seed {s['seed']}), "
        f"{report.negative_columns} negative columns. Raw = every non-empty negative counts once; "
        "weighted = each negative counts with its gap-correction weight from the `labels` column.",
        "",
        "| source | slots | used (raw view) | empty / filler (skipped) | weight 0 (raw only) | of which rejected by the guard |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in report.counts.items():
        lines.append(
            f"| {name} | {c['slots']} | {c['non_empty']} | {c['empty']} | {c['zero_weight']} | {c.get('masked_by_guard', 0)} |"
        )
    for note in report.notes:
        lines += ["", f"> {note}"]
    return lines


def _spectrum_section(report: DiagnosticsReport) -> list[str]:
    """Query-document similarity by source, raw and weighted."""
    lines = ["", "## Similarity spectrum", "", "Cosine similarity of query and document (model's own view).", ""]
    lines += [
        "| | n (raw) | mass (weighted) | mean raw | mean weighted | p05 / p50 / p95 raw | p05 / p50 / p95 weighted |"
    ]
    lines += ["|---|---:|---:|---:|---:|---|---|"]
    for name in ("positive", "mined", "generated"):
        r, w = report.spectrum.raw[name], report.spectrum.weighted[name]
        lines.append(
            f"| {name} | {r.n} | {_mass(w.weight_sum)} | {_f(r.mean)} | {_f(w.mean)} | "
            f"{_f(r.quantiles['p05'])} / {_f(r.quantiles['p50'])} / {_f(r.quantiles['p95'])} | "
            f"{_f(w.quantiles['p05'])} / {_f(w.quantiles['p50'])} / {_f(w.quantiles['p95'])} |"
        )
    return lines


def _shortcut_section(report: DiagnosticsReport) -> list[str]:
    """Source probes and mutual information: can the source be told apart?"""
    lines = [
        "",
        "## Shortcut strength",
        "",
        "Cross-fitted logistic-regression probe predicting generated vs mined (folds grouped by query row; "
        "0.5 = source invisible, 1.0 = trivially visible). *weighted* scores the same out-of-fold "
        "probabilities under the weights; *refit* trains a fresh probe on the weighted distribution.",
        "",
        "| features | dim | n gen / mined | AUC raw | AUC weighted | AUC refit on weighted |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for p in report.shortcut.probes.values():
        lines.append(
            f"| {p.features} | {p.dim} | {p.n_generated} / {p.n_mined} | {_f(p.auc)} | {_f(p.auc_weighted)} | {_f(p.auc_weighted_refit)} |"
        )
    lines += [
        "",
        "Mutual information between source and the query's view (binned similarity), in bits. "
        "Bins are equal-frequency on the raw pooled values and reused for the weighted view; *bias* is the "
        "Miller-Madow small-sample bias (what the plug-in estimate shows under independence), *shuffled* the "
        "mean / 95th percentile over source-shuffled baselines. H(source) bounds the MI.",
        "",
        "| view | dist | bins | n (n_eff) | MI | bias | MI - bias | shuffled mean / p95 | H(source) | MI / H |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for view, d in report.shortcut.mutual_information.items():
        for dist, m in d.items():
            lines.append(
                f"| `{view}` | {dist} | {m.bins} | {m.n} ({m.n_effective:.0f}) | {_f(m.mi_bits, 4)} | {_f(m.bias_bits, 4)} | "
                f"{_f(m.mi_corrected_bits, 4)} | {_f(m.shuffled_mean_bits, 4)} / {_f(m.shuffled_p95_bits, 4)} | "
                f"{_f(m.source_entropy_bits)} | {_f(m.normalized)} |"
            )
    return lines


def _false_negative_section(report: DiagnosticsReport) -> list[str]:
    """Negatives at or above the positive, or within the margin, and the riskiest examples."""
    fn = report.false_negatives
    margin = []
    if fn.absolute_margin is not None:
        margin.append(f"sim(q,neg) > sim(q,pos) - {fn.absolute_margin}")
    if fn.relative_margin is not None:
        margin.append(f"sim(q,neg) > sim(q,pos) - |sim(q,pos)| * {fn.relative_margin}")
    lines = [
        "",
        "## False-negative risk",
        "",
        "At or above: sim(q,neg) >= sim(q,pos). Within margin (sentence-transformers `mine_hard_negatives` "
        f"semantics): {' or '.join(margin) if margin else 'no margin set (same as at or above)'}. "
        "Weighted shares use weight mass.",
        "",
        "| source | n | identical to positive | at or above (raw) | within margin (raw) | mass | at or above (weighted) | within margin (weighted) |",
        "|---|---:|---:|---|---|---:|---|---|",
    ]
    for name in fn.raw:
        r, w = fn.raw[name], fn.weighted[name]
        lines.append(
            f"| {name} | {r.n} | {_mass(r.identical)} | {_mass(r.at_or_above)} ({_pct(r.at_or_above_share)}) | {_mass(r.within_margin)} ({_pct(r.within_margin_share)}) | "
            f"{_mass(w.mass)} | {_mass(w.at_or_above)} ({_pct(w.at_or_above_share)}) | {_mass(w.within_margin)} ({_pct(w.within_margin_share)}) |"
        )
    if fn.examples:
        lines += [
            "",
            f"Riskiest negatives ({len(fn.examples)} shown: copies of the positive first, then by sim(q,neg) - sim(q,pos); "
            "row = index in the input dataset):",
            "",
            "| row | column | source | weight | sim neg | sim pos | query | negative |",
            "|---:|---|---|---:|---:|---:|---|---|",
        ]
        for e in fn.examples:
            q = e.anchor.replace("|", "\\|")
            n = e.negative.replace("|", "\\|")
            lines.append(
                f"| {e.row} | {e.column} | {e.source} | {_f(e.weight, 2)} | {_f(e.sim_q_neg)} | {_f(e.sim_q_pos)} | {q} | {n} |"
            )
    return lines


def _hardness_section(report: DiagnosticsReport) -> list[str]:
    """Where each negative sits in its row's mined-negative spectrum."""
    h = report.hardness
    lines = [
        "",
        "## Hardness",
        "",
        "Percentile of each negative within its row's mined-negative similarity spectrum (generated: among all "
        "mined of the row; mined: among the OTHER mined, a leave-one-out reference near 0.5). 1.0 = harder than "
        "every mined negative of its query.",
        "",
        "| source | view | n | mean | p25 / p50 / p75 | above all mined | below all mined | no mined in row |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for name in h.raw:
        for view, summ in (("raw", h.raw[name]), ("weighted", h.weighted[name])):
            lines.append(
                f"| {name} | {view} | {summ.n} | {_f(summ.mean)} | {_f(summ.quantiles['p25'])} / {_f(summ.quantiles['p50'])} / "
                f"{_f(summ.quantiles['p75'])} | {_pct(h.share_above_all_mined[view][name])} | "
                f"{_pct(h.share_below_all_mined[view][name])} | {h.undefined[name]} |"
            )
    return lines
