"""How much the query's view of a negative (its similarity) reveals the negative's source.

The entropy term of the loss asks that similarity tells nothing about origin; this measures it on data:
a plug-in estimate of I(source; binned similarity) in bits, with the bins, the sample count, the
Miller-Madow small-sample bias and a shuffled-label baseline stated next to it, so a small positive value
can be told apart from estimator bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MutualInfoEstimate:
    """I(source; similarity bin) in bits.

    Attributes:
        view: which similarity was binned (``sim_q_neg`` or ``sim_q_neg - sim_q_pos``).
        bins: number of equal-frequency bins actually used (edges from the raw pooled values).
        n: items used; ``n_effective``: Kish effective sample size ``(sum w)^2 / sum w^2`` (= n unweighted).
        mi_bits: plug-in estimate; ``bias_bits``: Miller-Madow bias ``(bins-1)(2-1) / (2 n_eff ln 2)``, the
            expected plug-in value under independence; ``mi_corrected_bits`` = max(0, mi - bias).
        shuffled_mean_bits / shuffled_p95_bits: the estimate with source labels (and their weights)
            permuted ``n_shuffles`` times: what "no relation" looks like at this sample size.
        normalized: mi_bits / H(source) in [0, 1] (1 = similarity determines the source).
    """

    view: str
    bins: int
    n: int
    n_effective: float
    mi_bits: float
    bias_bits: float
    mi_corrected_bits: float
    shuffled_mean_bits: float
    shuffled_p95_bits: float
    n_shuffles: int
    source_entropy_bits: float
    normalized: float


def _plugin_mi_bits(bin_idx: np.ndarray, source: np.ndarray, w: np.ndarray, n_bins: int) -> float:
    joint = np.zeros((n_bins, 2))
    np.add.at(joint, (bin_idx, source.astype(int)), w)
    total = joint.sum()
    if total <= 0:
        return float("nan")
    p = joint / total
    pb, ps = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pb @ ps)[nz])).sum())


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-frequency bin edges (duplicates merged, so ties may leave fewer bins)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([values.min() - 0.5, values.max() + 0.5])
    return edges


def mutual_information(
    values: np.ndarray,
    is_generated: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    n_bins: int = 10,
    n_shuffles: int = 50,
    seed: int = 0,
    view: str = "sim_q_neg",
) -> MutualInfoEstimate:
    """Binned MI between source and ``values``; ``edges`` lets the weighted view reuse the raw bins."""
    values = np.asarray(values, dtype=np.float64)
    y = np.asarray(is_generated).astype(bool)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = (w > 0) & np.isfinite(values)
    values, y, w = values[keep], y[keep], w[keep]
    nan = float("nan")
    if values.size == 0 or y.all() or not y.any():
        return MutualInfoEstimate(view, 0, int(values.size), float(values.size), nan, nan, nan, nan, nan, 0, 0.0, nan)
    if edges is None:
        edges = quantile_edges(values, n_bins)
    n_used = edges.size - 1
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_used - 1)
    mi = _plugin_mi_bits(idx, y, w, n_used)
    n_eff = float(w.sum() ** 2 / (w**2).sum())
    bias = (n_used - 1) / (2.0 * n_eff * np.log(2))
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(n_shuffles):
        perm = rng.permutation(values.size)
        shuffled.append(_plugin_mi_bits(idx, y[perm], w[perm], n_used))
    p_gen = float(w[y].sum() / w.sum())
    h_s = float(-(p_gen * np.log2(p_gen) + (1 - p_gen) * np.log2(1 - p_gen)))
    return MutualInfoEstimate(
        view=view,
        bins=int(n_used),
        n=int(values.size),
        n_effective=n_eff,
        mi_bits=mi,
        bias_bits=float(bias),
        mi_corrected_bits=float(max(0.0, mi - bias)),
        shuffled_mean_bits=float(np.mean(shuffled)) if shuffled else nan,
        shuffled_p95_bits=float(np.quantile(shuffled, 0.95)) if shuffled else nan,
        n_shuffles=n_shuffles,
        source_entropy_bits=h_s,
        normalized=float(mi / h_s) if h_s > 0 else nan,
    )
