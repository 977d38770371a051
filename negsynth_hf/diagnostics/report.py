"""``diagnose``: what a retriever sees in a hard-negative training set, per source, before and after weighting.

Users of synthetic negatives ask two questions the training loss cannot answer (ecosystem complaints 1-2):
did the generator write false negatives, and can the model tell generated text from corpus text? This
report answers both on the exact dataset the trainer will read, raw and under the gap-correction weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from negsynth_hf.diagnostics.mutual_info import MutualInfoEstimate, mutual_information, quantile_edges
from negsynth_hf.diagnostics.spectrum import (
    SOURCES,
    NegativeTable,
    SourceSummary,
    histogram,
    negative_columns,
    read_negatives,
    row_percentiles,
    summarize,
)
from negsynth_hf.embeddings import embed_rows
from negsynth_hf.labels import LABEL_COLUMN

if TYPE_CHECKING:
    from negsynth_hf.stages.assemble import SlotRecord

TRUNCATE = 160


# --------------------------------------------------------------------------- result objects


@dataclass
class SpectrumSection:
    """Query-negative cosine similarity by source, with the positive's similarity for reference.

    ``raw[name]`` / ``weighted[name]`` for name in ``positive``, ``mined``, ``generated``; ``histograms``
    holds counts (raw) and weight mass (weighted) over the shared ``bin_edges``.
    """

    raw: dict[str, SourceSummary]
    weighted: dict[str, SourceSummary]
    bin_edges: list[float]
    histograms: dict[str, dict[str, list[float]]]


@dataclass
class ProbeSummary:
    """Cross-fitted source probe (``negsynth_hf.probe``), folds grouped by query row.

    Attributes:
        auc: out-of-fold AUC on the raw items (0.5 = source invisible).
        auc_weighted: the same out-of-fold scores, AUC under the gap weights (did the weights hide what
            this probe sees?).
        auc_weighted_refit: a probe re-fitted with the weights as sample weights (can a fresh adversary
            still see the source in the weighted distribution?).
    """

    features: str
    dim: int
    auc: float
    auc_weighted: float
    auc_weighted_refit: float
    n_generated: int
    n_mined: int
    n_splits: int


@dataclass
class ShortcutSection:
    """Can the source be read off the documents (probes) or off the query's view (mutual information)?

    ``mutual_information[view]["raw" | "weighted"]``.
    """

    probes: dict[str, ProbeSummary]
    mutual_information: dict[str, dict[str, MutualInfoEstimate]]


@dataclass
class RiskExample:
    """A negative at or above the positive, or within the margin of it (``row`` indexes the input dataset)."""

    row: int
    column: str
    source: str
    weight: float
    sim_q_neg: float
    sim_q_pos: float
    at_or_above_positive: bool
    identical_to_positive: bool
    anchor: str
    positive: str
    negative: str


@dataclass
class RiskCounts:
    """``n`` items (weighted: ``mass`` = their weight sum); how many score >= the positive / within the margin.

    ``identical`` counts negatives whose text equals the row's positive (whitespace-normalized): certain
    false negatives whatever the encoder says.
    """

    n: int
    mass: float
    identical: float
    at_or_above: float
    at_or_above_share: float
    within_margin: float
    within_margin_share: float


@dataclass
class FalseNegativeSection:
    """False-negative risk with sentence-transformers' ``mine_hard_negatives`` margin semantics.

    A negative is within the margin when ``sim(q, neg) > sim(q, pos) - absolute_margin`` or
    ``sim(q, neg) > sim(q, pos) - |sim(q, pos)| * relative_margin`` (either set margin triggers); with no
    margin set, "within margin" equals "at or above". Weighted counts are weight mass.
    """

    absolute_margin: float | None
    relative_margin: float | None
    raw: dict[str, RiskCounts]
    weighted: dict[str, RiskCounts]
    examples: list[RiskExample]


@dataclass
class HardnessSection:
    """Per-source percentile of each negative within its row's mined-negative similarity spectrum.

    Generated negatives are placed among the row's mined ones; mined among the OTHER mined ones
    (leave-one-out reference, ~0.5 on average). 1.0 = harder than every mined negative of the row.
    ``share_above_all_mined`` / ``share_below_all_mined`` per source; ``undefined`` counts negatives whose
    row had no (other) mined negative.
    """

    raw: dict[str, SourceSummary]
    weighted: dict[str, SourceSummary]
    share_above_all_mined: dict[str, dict[str, float]]
    share_below_all_mined: dict[str, dict[str, float]]
    undefined: dict[str, int]


@dataclass
class DiagnosticsReport:
    """Everything ``diagnose`` found; ``to_dict()`` (JSON-safe), ``to_markdown()``, ``save(folder)``."""

    model: str
    rows_total: int
    rows_used: int
    negative_columns: int
    counts: dict[str, dict[str, int]]
    settings: dict[str, Any]
    spectrum: SpectrumSection
    shortcut: ShortcutSection
    false_negatives: FalseNegativeSection
    hardness: HardnessSection
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # per-negative arrays behind the numbers (for plots); not serialized
    table: NegativeTable | None = field(default=None, repr=False, compare=False)
    positive_sims: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (NaN becomes ``None``)."""
        data = asdict(self)
        data.pop("table", None)
        data.pop("positive_sims", None)
        return _json_safe(data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    def to_markdown(self) -> str:
        from negsynth_hf.diagnostics.markdown import render_markdown

        return render_markdown(self)

    def save(self, output_dir: str | Path, *, figures: bool = True) -> Path:
        """Write ``report.json``, ``report.md`` and (with matplotlib) the PNG figures to ``output_dir``."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if figures:
            from negsynth_hf.diagnostics.plots import write_figures

            self.figures, message = write_figures(self, out)
            if message and message not in self.notes:
                self.notes.append(message)
        (out / "report.json").write_text(self.to_json() + "\n", encoding="utf-8")
        (out / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _truncate(text: str, limit: int = TRUNCATE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- sections


def _by_source(
    values: np.ndarray, table: NegativeTable, mask: np.ndarray, *, weighted: bool
) -> dict[str, SourceSummary]:
    out = {}
    for name, flag in zip(SOURCES, (False, True), strict=True):
        sel = mask & (table.is_generated == flag)
        out[name] = summarize(values[sel], table.weight[sel] if weighted else None)
    return out


def _spectrum(table: NegativeTable, pos_sims: np.ndarray, n_bins: int) -> SpectrumSection:
    valid = table.valid
    all_vals = np.concatenate([table.sim[valid], pos_sims])
    lo, hi = (float(all_vals.min()), float(all_vals.max())) if all_vals.size else (-1.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    edges = np.linspace(lo, hi, n_bins + 1)
    raw = {"positive": summarize(pos_sims), **_by_source(table.sim, table, valid, weighted=False)}
    weighted = {"positive": summarize(pos_sims), **_by_source(table.sim, table, valid, weighted=True)}
    hists: dict[str, dict[str, list[float]]] = {"raw": {"positive": histogram(pos_sims, None, edges)}, "weighted": {}}
    hists["weighted"]["positive"] = hists["raw"]["positive"]
    for name, flag in zip(SOURCES, (False, True), strict=True):
        sel = valid & (table.is_generated == flag)
        hists["raw"][name] = histogram(table.sim[sel], None, edges)
        hists["weighted"][name] = histogram(table.sim[sel], table.weight[sel], edges)
    return SpectrumSection(raw, weighted, [float(e) for e in edges], hists)


def _probe(features: np.ndarray, name: str, table: NegativeTable, *, seed: int, n_splits: int) -> ProbeSummary:
    from negsynth_hf.probe import cross_fitted_probe, weighted_auc

    valid = table.valid
    X, y, w, groups = features[valid], table.is_generated[valid], table.weight[valid], table.row[valid]
    raw = cross_fitted_probe(X, y, n_splits=n_splits, seed=seed, groups=groups)
    auc_w = weighted_auc(y, raw.proba_generated, w) if raw.n_splits else float("nan")
    if raw.n_splits and np.any(w != 1.0):
        keep = w > 0
        refit = cross_fitted_probe(
            X[keep], y[keep], n_splits=n_splits, seed=seed, groups=groups[keep], sample_weight=w[keep]
        )
        auc_refit = refit.auc
    else:
        auc_refit = raw.auc
    return ProbeSummary(name, int(X.shape[1]), raw.auc, auc_w, auc_refit, raw.n_generated, raw.n_mined, raw.n_splits)


def _mutual_info(
    table: NegativeTable, *, n_bins: int, n_shuffles: int, seed: int
) -> dict[str, dict[str, MutualInfoEstimate]]:
    valid = table.valid
    views = {"sim_q_neg": table.sim, "sim_q_neg_minus_sim_q_pos": table.sim - table.sim_pos}
    out: dict[str, dict[str, MutualInfoEstimate]] = {}
    for view, values in views.items():
        v, y, w = values[valid], table.is_generated[valid], table.weight[valid]
        edges = quantile_edges(v, n_bins) if v.size else None
        out[view] = {
            "raw": mutual_information(v, y, edges=edges, n_shuffles=n_shuffles, seed=seed, view=view),
            "weighted": mutual_information(v, y, weights=w, edges=edges, n_shuffles=n_shuffles, seed=seed, view=view),
        }
    return out


def _risk_counts(at: np.ndarray, within: np.ndarray, same: np.ndarray, w: np.ndarray) -> RiskCounts:
    mass = float(w.sum())
    a, m = float((w * at).sum()), float((w * within).sum())
    nan = float("nan")
    return RiskCounts(
        int((w > 0).sum()), mass, float((w * same).sum()), a, a / mass if mass else nan, m, m / mass if mass else nan
    )


def _false_negatives(
    table: NegativeTable,
    anchors: dict[int, str],
    positives: dict[int, str],
    *,
    absolute_margin: float | None,
    relative_margin: float | None,
    max_examples: int,
) -> FalseNegativeSection:
    valid = table.valid
    norm = {r: " ".join(p.split()) for r, p in positives.items()}
    same = np.array(
        [valid[i] and " ".join(table.text[i].split()) == norm[int(table.row[i])] for i in range(table.row.size)],
        dtype=bool,
    )
    at = (table.sim >= table.sim_pos - 1e-6) | same  # tolerance: float noise on identical embeddings
    within = at.copy()
    if absolute_margin is not None:
        within |= table.sim > table.sim_pos - absolute_margin
    if relative_margin is not None:
        within |= table.sim > table.sim_pos - np.abs(table.sim_pos) * relative_margin
    raw, weighted = {}, {}
    for name, flag in zip(SOURCES, (False, True), strict=True):
        sel = valid & (table.is_generated == flag)
        raw[name] = _risk_counts(at[sel], within[sel], same[sel], np.ones(int(sel.sum())))
        weighted[name] = _risk_counts(at[sel], within[sel], same[sel], table.weight[sel])
    # copies of the positive first, then by how far the negative scores above the positive
    risky = np.flatnonzero(valid & within)
    order = np.lexsort((-(table.sim[risky] - table.sim_pos[risky]), ~same[risky]))
    risky = risky[order][:max_examples]
    examples = [
        RiskExample(
            row=int(table.row[i]),
            column=f"negative_{int(table.column[i])}",
            source="generated" if table.is_generated[i] else "mined",
            weight=float(table.weight[i]),
            sim_q_neg=float(table.sim[i]),
            sim_q_pos=float(table.sim_pos[i]),
            at_or_above_positive=bool(at[i]),
            identical_to_positive=bool(same[i]),
            anchor=_truncate(anchors[int(table.row[i])]),
            positive=_truncate(positives[int(table.row[i])]),
            negative=_truncate(table.text[i]),
        )
        for i in risky
    ]
    return FalseNegativeSection(absolute_margin, relative_margin, raw, weighted, examples)


def _hardness(table: NegativeTable) -> tuple[HardnessSection, np.ndarray, np.ndarray]:
    pct_raw, def_raw = row_percentiles(table, weighted=False)
    pct_w, def_w = row_percentiles(table, weighted=True)
    raw = _by_source(pct_raw, table, def_raw, weighted=False)
    weighted = _by_source(pct_w, table, def_w, weighted=True)
    above: dict[str, dict[str, float]] = {"raw": {}, "weighted": {}}
    below: dict[str, dict[str, float]] = {"raw": {}, "weighted": {}}
    undefined = {}
    for name, flag in zip(SOURCES, (False, True), strict=True):
        src = table.valid & (table.is_generated == flag)
        undefined[name] = int((src & ~def_raw).sum())
        for view, pct, ok, use_w in (("raw", pct_raw, def_raw, False), ("weighted", pct_w, def_w, True)):
            sel = src & ok
            w = table.weight[sel] if use_w else np.ones(int(sel.sum()))
            mass = w.sum()
            above[view][name] = float((w * (pct[sel] >= 1.0)).sum() / mass) if mass else float("nan")
            below[view][name] = float((w * (pct[sel] <= 0.0)).sum() / mass) if mass else float("nan")
    return HardnessSection(raw, weighted, above, below, undefined), pct_raw, pct_w


# --------------------------------------------------------------------------- entry point


def diagnose(
    dataset: Any,
    model: Any,
    *,
    output_dir: str | Path | None = None,
    num_generated: int | None = None,
    provenance: Any = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = 0.05,
    batch_size: int = 32,
    max_rows: int | None = 2000,
    seed: int = 0,
    n_bins: int = 10,
    hist_bins: int = 40,
    n_shuffles: int = 50,
    probe_splits: int = 5,
    max_examples: int = 20,
    figures: bool = True,
    show_progress_bar: bool = False,
) -> DiagnosticsReport:
    """Diagnose the generative-discriminative gap of a hard-negative training set.

    Args:
        dataset: a ``datasets.Dataset`` in the training n-tuple layout (``anchor``, ``positive``,
            ``negative_1..negative_N``, optional ``labels`` = ``[w_1..w_N, g_1..g_N]``, see
            ``negsynth_hf.labels``). Empty negative slots are counted and skipped.
        model: a ``SentenceTransformer`` (or a path to one): the retriever whose view is diagnosed.
        output_dir: if given, write ``report.json``, ``report.md`` and PNG figures there.
        num_generated: without a ``labels`` column, the trailing ``k`` negative columns are generated
            (default: all mined, weight 1).
        provenance: optional per-slot provenance of ``dataset`` (``build_dataset(...).provenance``: columns
            ``row``, ``column``, ``status``, ``original_text``). With it, ``filled`` slots (fillers holding
            another negative's text) are skipped like empty ones, and ``masked`` slots (generated negatives the
            false-negative guard rejected) show their REJECTED text in the raw view (weight 0 in the weighted
            view), so the raw view is what the generator wrote and the weighted one what training uses.
        absolute_margin / relative_margin: false-negative margins, as in
            ``sentence_transformers.util.mine_hard_negatives`` (``relative_margin=0.05`` is NV-Retriever's).
        max_rows: diagnose a seeded random sample of at most this many rows (``None``: all).
        n_bins: equal-frequency bins for the mutual-information estimate; hist_bins: histogram bins.
        n_shuffles: shuffled-label baselines for the MI estimate.
        figures: with ``output_dir``, also draw PNGs (needs matplotlib: ``pip install 'negsynth-hf[plots]'``).

    Returns:
        A :class:`DiagnosticsReport`.
    """
    start = time.perf_counter()
    model = _load_model(model)
    neg_cols = negative_columns(dataset.column_names)
    labels_column = _labels_column(dataset, num_generated)
    rows_total = len(dataset)
    row_ids = _sample_rows(rows_total, max_rows, seed)
    rows = _read_rows(dataset, row_ids, ["anchor", "positive", *neg_cols] + ([labels_column] if labels_column else []))
    table = read_negatives(rows, row_ids.tolist(), neg_cols, labels_column=labels_column, num_generated=num_generated)
    masked = apply_provenance(table, provenance) if provenance is not None else np.zeros(table.row.size, dtype=bool)
    anchors = [str(a) for a in rows["anchor"]]
    positives = [str(p) for p in rows["positive"]]
    pos_sims = _embed_into(
        table, model, anchors, positives, n_cols=len(neg_cols), batch_size=batch_size, progress=show_progress_bar
    )
    counts = _counts(table, masked)
    report = DiagnosticsReport(
        model=_model_name(model),
        rows_total=rows_total,
        rows_used=len(row_ids),
        negative_columns=len(neg_cols),
        counts=counts,
        settings={
            "absolute_margin": absolute_margin,
            "relative_margin": relative_margin,
            "max_rows": max_rows,
            "seed": seed,
            "mi_bins": n_bins,
            "hist_bins": hist_bins,
            "n_shuffles": n_shuffles,
            "probe_splits": probe_splits,
            "labels_column": labels_column,
            "num_generated": num_generated,
        },
        spectrum=_spectrum(table, pos_sims, hist_bins),
        shortcut=_shortcut(table, seed=seed, probe_splits=probe_splits, n_bins=n_bins, n_shuffles=n_shuffles),
        false_negatives=_false_negatives(
            table,
            dict(zip(row_ids.tolist(), anchors, strict=True)),
            dict(zip(row_ids.tolist(), positives, strict=True)),
            absolute_margin=absolute_margin,
            relative_margin=relative_margin,
            max_examples=max_examples,
        ),
        hardness=_hardness(table)[0],
        notes=_notes(counts, with_provenance=provenance is not None),
        table=table,
        positive_sims=pos_sims,
    )
    report.seconds = time.perf_counter() - start
    if output_dir is not None:
        report.save(output_dir, figures=figures)
    return report


def _load_model(model: Any) -> Any:
    """A ``SentenceTransformer`` as given, or loaded from a path."""
    if isinstance(model, (str, Path)):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(model))
    return model


def _labels_column(dataset: Any, num_generated: int | None) -> str | None:
    """``labels`` if the dataset has it; then the labels, not ``num_generated``, say which negatives are generated."""
    labels_column = LABEL_COLUMN if LABEL_COLUMN in dataset.column_names else None
    if labels_column is not None and num_generated is not None:
        raise ValueError(
            "Pass num_generated only for datasets without a 'labels' column: the labels already say which negatives are generated."
        )
    return labels_column


def _sample_rows(rows_total: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the rows diagnosed: all, or a seeded random sample of ``max_rows``."""
    if max_rows is not None and rows_total > max_rows:
        return np.sort(np.random.default_rng(seed).choice(rows_total, size=max_rows, replace=False))
    return np.arange(rows_total)


def _read_rows(dataset: Any, row_ids: np.ndarray, columns: list[str]) -> dict[str, list]:
    subset = dataset.select(row_ids.tolist()) if len(row_ids) != len(dataset) else dataset
    return subset.select_columns(columns).to_dict()


def _embed_into(
    table: NegativeTable,
    model: Any,
    anchors: list[str],
    positives: list[str],
    *,
    n_cols: int,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Fill ``table.sim``/``sim_pos``/``embedding`` with the model's view; returns each row's sim(q, pos).

    Positives and negatives are embedded in one call (documents), queries in another, so an asymmetric
    encoder applies its query and document prompts as it would at retrieval time.
    """
    q_emb = embed_rows(model, anchors, query=True, batch_size=batch_size, show_progress_bar=progress)
    valid_idx = np.flatnonzero(table.valid)
    doc_texts = positives + [table.text[i] for i in valid_idx]
    d_emb = embed_rows(model, doc_texts, query=False, batch_size=batch_size, show_progress_bar=progress)
    p_emb, n_emb = d_emb[: len(positives)], d_emb[len(positives) :]
    pos_sims = np.einsum("ij,ij->i", q_emb, p_emb).astype(np.float64)
    local_row = np.repeat(np.arange(len(anchors)), n_cols)  # the table is row-major: n_cols slots per row
    table.sim = np.full(table.row.size, np.nan)
    table.sim[valid_idx] = np.einsum("ij,ij->i", q_emb[local_row[valid_idx]], n_emb)
    table.sim_pos = pos_sims[local_row]
    table.embedding = np.zeros((table.row.size, d_emb.shape[1]), dtype=np.float32)
    table.embedding[valid_idx] = n_emb
    return pos_sims


def _counts(table: NegativeTable, masked: np.ndarray) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name, flag in zip(SOURCES, (False, True), strict=True):
        src = table.is_generated == flag
        counts[name] = {
            "slots": int(src.sum()),
            "non_empty": int((src & table.valid).sum()),
            "empty": int((src & table.empty).sum()),
            "zero_weight": int((src & table.valid & (table.weight <= 0)).sum()),
            "masked_by_guard": int((src & masked).sum()),
        }
    return counts


def _notes(counts: dict[str, dict[str, int]], *, with_provenance: bool) -> list[str]:
    """Warnings for views that may mislead: fillers counted as negatives, or no generated source at all."""
    notes: list[str] = []
    zero_with_text = sum(c["zero_weight"] for c in counts.values())
    if not with_provenance and zero_with_text:
        notes.append(
            f"{zero_with_text} weight-0 slots hold text and are counted in the raw view. If they are fillers "
            "(build_dataset puts another negative's text in masked/filled slots), pass provenance= to skip "
            "fillers and see the rejected generated texts instead."
        )
    if counts["generated"]["non_empty"] == 0:
        notes.append(
            "No generated negatives found (no 'labels' column and no num_generated, or none flagged): "
            "source probes and mutual information need both sources and are undefined."
        )
    return notes


def _shortcut(table: NegativeTable, *, seed: int, probe_splits: int, n_bins: int, n_shuffles: int) -> ShortcutSection:
    from negsynth_hf.probe import surface_features

    return ShortcutSection(
        probes={
            "embedding": _probe(table.embedding, "embedding", table, seed=seed, n_splits=probe_splits),
            "surface": _probe(surface_features(table.text), "surface", table, seed=seed, n_splits=probe_splits),
        },
        mutual_information=_mutual_info(table, n_bins=n_bins, n_shuffles=n_shuffles, seed=seed),
    )


def apply_provenance(table: NegativeTable, provenance: Any) -> np.ndarray:
    """Skip ``filled`` slots and restore the rejected text of ``masked`` ones; returns the masked mask."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(table.row, table.column, strict=True))}
    masked = np.zeros(table.row.size, dtype=bool)
    for slot in slot_records(provenance):
        i = index.get((int(slot.row), int(str(slot.column).rsplit("_", 1)[-1])))
        if i is None:
            continue  # row not in the sample
        if slot.status == "filled":
            table.empty[i] = True
        elif slot.status == "masked" and slot.original_text:
            table.text[i] = str(slot.original_text)
            table.empty[i] = not str(slot.original_text).strip()
            masked[i] = True
    return masked


def slot_records(provenance: Any) -> Iterator[SlotRecord]:
    """The provenance config's rows as typed records, reading only the fields the diagnostics use."""
    from negsynth_hf.stages.assemble import SlotRecord  # lazy: the build stages are not needed to diagnose

    names = set(provenance.column_names)
    need = {"row", "column", "status"}
    if not need <= names:
        raise ValueError(
            f"provenance needs columns {sorted(need)} (build_dataset's provenance config); has {sorted(names)}."
        )
    cols = ["row", "column", "status"] + (["original_text"] if "original_text" in names else [])
    prov = provenance.select_columns(cols).to_dict()
    for values in zip(*(prov[c] for c in cols), strict=True):
        yield SlotRecord(**dict(zip(cols, values, strict=True)))


def _model_name(model: Any) -> str:
    card = getattr(model, "model_card_data", None)
    name = getattr(card, "base_model", None) or getattr(model, "name_or_path", None)
    if not name:
        try:
            name = model[0].auto_model.config._name_or_path  # SentenceTransformer -> Transformer module
        except Exception:  # noqa: BLE001 - best effort label only
            name = type(model).__name__
    return str(name)
