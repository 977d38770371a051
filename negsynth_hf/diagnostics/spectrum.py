"""Reading an n-tuple training dataset into per-negative arrays, and the per-source statistics built on them.

Everything here is computed twice: on the raw items (every non-empty negative counts once) and on the
gap-weighted distribution (each negative counts with its label weight, so weight-0 items vanish). The two
side by side show what the weights corrected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negsynth_hf import labels

SOURCES = ("mined", "generated")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class NegativeTable:
    """One entry per negative slot of the rows looked at, flattened (row-major, column order).

    ``row`` is the index in the ORIGINAL dataset, ``column`` the 1-based ``negative_<column>`` number.
    Empty slots (masked fill, text ``""``) are kept here (``empty``) so they can be counted, and are
    excluded from every statistic.
    """

    row: np.ndarray
    column: np.ndarray
    is_generated: np.ndarray
    weight: np.ndarray
    empty: np.ndarray
    text: list[str]
    sim: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sim_pos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    embedding: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return ~self.empty


def negative_columns(column_names: Sequence[str]) -> list[str]:
    """``negative_1..negative_N`` in numeric order; raises if the layout is not the training n-tuple."""
    found = labels.negative_columns(column_names)
    missing = {"anchor", "positive"} - set(column_names)
    if missing:
        raise ValueError(
            f"diagnose expects the training n-tuple layout (anchor, positive, negative_1..negative_N[, labels]); "
            f"missing column(s) {sorted(missing)} in {list(column_names)}."
        )
    if not found:
        raise ValueError(f"No negative_<i> columns in {list(column_names)}: nothing to diagnose.")
    return found


def read_negatives(
    rows: dict[str, list[Any]],
    row_ids: Sequence[int],
    neg_cols: Sequence[str],
    *,
    labels_column: str | None,
    num_generated: int | None,
) -> NegativeTable:
    """Flatten the negative columns of a batch of rows, with sources and weights from the label column.

    Without a label column, every negative is mined with weight 1, unless ``num_generated=k`` says the
    trailing ``k`` columns are generated.
    """
    n_cols = len(neg_cols)
    n_rows = len(row_ids)
    if labels_column is not None:
        labels = np.asarray(rows[labels_column], dtype=np.float64)
        if labels.ndim != 2 or labels.shape[1] != 2 * n_cols:
            raise ValueError(
                f"The {labels_column!r} column must hold [w_1..w_N, g_1..g_N] for N={n_cols} negative columns "
                f"(see negsynth_hf.labels), got shape {labels.shape}."
            )
        weights, is_gen = labels[:, :n_cols], labels[:, n_cols:] > 0.5
    else:
        weights = np.ones((n_rows, n_cols))
        is_gen = np.zeros((n_rows, n_cols), dtype=bool)
        if num_generated:
            if not 0 < num_generated <= n_cols:
                raise ValueError(f"num_generated={num_generated} but the dataset has {n_cols} negative columns.")
            is_gen[:, n_cols - num_generated :] = True
    texts = np.array([[rows[c][r] or "" for c in neg_cols] for r in range(n_rows)], dtype=object).reshape(
        n_rows, n_cols
    )
    empty = np.vectorize(lambda t: not str(t).strip(), otypes=[bool])(texts) if texts.size else np.zeros_like(is_gen)
    return NegativeTable(
        row=np.repeat(np.asarray(row_ids, dtype=np.int64), n_cols),
        column=np.tile(np.arange(1, n_cols + 1), n_rows),
        is_generated=is_gen.reshape(-1),
        weight=weights.reshape(-1),
        empty=np.asarray(empty, dtype=bool).reshape(-1),
        text=[str(t) for t in texts.reshape(-1)],
    )


@dataclass
class SourceSummary:
    """Distribution of one value for one source: counts, mean, std and quantiles (``p05``..``p95``).

    In the weighted view ``n`` counts items with weight > 0 and ``weight_sum`` is their total weight (the
    effective mass the loss sees); statistics use the weights.
    """

    n: int
    weight_sum: float
    mean: float
    std: float
    quantiles: dict[str, float]


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles of the weighted empirical distribution (midpoint interpolation of the weighted CDF)."""
    keep = weights > 0
    v, w = values[keep], weights[keep]
    if v.size == 0:
        return [float("nan")] * len(qs)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return [float(np.interp(q, cdf, v)) for q in qs]


def summarize(values: np.ndarray, weights: np.ndarray | None = None) -> SourceSummary:
    """Summary of ``values`` (unweighted when ``weights`` is None)."""
    values = np.asarray(values, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = (w > 0) & np.isfinite(values)
    v, w = values[keep], w[keep]
    if v.size == 0:
        nan = float("nan")
        return SourceSummary(0, 0.0, nan, nan, {f"p{int(q * 100):02d}": nan for q in QUANTILES})
    mean = float(np.average(v, weights=w))
    std = float(np.sqrt(np.average((v - mean) ** 2, weights=w)))
    qs = weighted_quantiles(v, w, QUANTILES)
    return SourceSummary(
        int(v.size), float(w.sum()), mean, std, {f"p{int(q * 100):02d}": x for q, x in zip(QUANTILES, qs, strict=True)}
    )


def histogram(values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray) -> list[float]:
    """Counts (or weight mass) per bin, values outside the edges clipped into the end bins."""
    v = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(v, bins=edges, weights=weights)
    return [float(c) for c in counts]


def row_percentiles(table: NegativeTable, *, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where each negative sits in its row's mined-negative similarity spectrum, in ``[0, 1]``.

    Generated negatives are placed among all the row's mined negatives; mined ones among the row's OTHER
    mined negatives (leave-one-out: a reference that averages ~0.5). Ties count half. In the weighted
    view the mined spectrum is weighted by the mined weights. Returns ``(percentile, defined)``:
    ``defined`` is False where the row has no (other) usable mined negative.
    """
    n = table.row.size
    pct = np.full(n, np.nan)
    usable = table.valid & ((table.weight > 0) if weighted else True)
    mined = usable & ~table.is_generated
    for r in np.unique(table.row):
        idx = np.flatnonzero(table.row == r)
        m_idx = idx[mined[idx]]
        if m_idx.size == 0:
            continue
        m_sim = table.sim[m_idx]
        m_w = table.weight[m_idx] if weighted else np.ones(m_idx.size)
        for i in idx[usable[idx]]:
            others = m_idx != i
            if not others.any():
                continue
            s, w = m_sim[others], m_w[others]
            below = w[s < table.sim[i]].sum() + 0.5 * w[s == table.sim[i]].sum()
            pct[i] = below / w.sum()
    return pct, np.isfinite(pct)
