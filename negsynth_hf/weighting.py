"""Gap-correction weights for generated negatives: source-probe importance weights and hardness percentiles.

Source shortcut: a cross-fitted logistic probe (:func:`negsynth_hf.probe.cross_fitted_probe`) predicts
"generated vs mined" from what a retriever can exploit (its own document embedding plus
:func:`negsynth_hf.probe.surface_features`). ``groups`` = the dataset row, so all negatives of a query share a
fold and the probe never scores a negative of a query it was fitted on. Its out-of-fold odds give
:func:`negsynth_hf.probe.importance_weights` (``p(mined|x) / p(generated|x) * n_gen / n_mined``, clipped to
``[0, 1]``): a generated negative the probe cannot tell from corpus text keeps weight ~1, one that is trivially
synthetic goes to ~0. We report the probe AUC before weighting and the weighted AUC after. With perfect
separation weighting cannot lower the AUC (ranking is unchanged among the remaining mass) but drives the
generated weights to ~0, so the effective generated share is reported next to it.

Hardness: where a generated negative's similarity to its query sits within that row's mined negatives
(percentile: 100 = harder than every mined one). Recorded per negative; it never changes a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from negsynth_hf.probe import cross_fitted_probe, importance_weights, surface_features, weighted_auc


@dataclass
class SourceWeights:
    """Result of :func:`source_weights` over the items given to it (mined and generated, same order).

    Attributes:
        weights: 1 for mined items; the clipped importance weight (or 1 when ``enabled`` is False) for generated.
        proba_generated: the probe's out-of-fold ``p(generated | x)`` (0.5 where it could not be fitted).
        auc_before: unweighted out-of-fold probe AUC over distinct texts (0.5 = source invisible); ``nan`` if not fitted.
        auc_after: the same probabilities' AUC with items weighted by ``weights``.
        effective_generated_share: ``sum(weights of generated) / n_generated``.
    """

    weights: np.ndarray
    proba_generated: np.ndarray
    auc_before: float
    auc_after: float
    effective_generated_share: float
    n_generated: int
    n_mined: int
    n_splits: int
    enabled: bool = True
    n_unique: int = 0

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "auc_before": self.auc_before,
            "auc_after": self.auc_after,
            "effective_generated_share": self.effective_generated_share,
            "n_generated": self.n_generated,
            "n_mined": self.n_mined,
            "n_splits": self.n_splits,
            "enabled": self.enabled,
            "n_unique": self.n_unique,
        }


def probe_features(texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
    """Retriever document embeddings (if given) stacked with surface features."""
    surface = surface_features(list(texts))
    if embeddings is None:
        return surface
    return np.hstack([np.asarray(embeddings, dtype=np.float64), surface])


def source_weights(
    texts: Sequence[str],
    is_generated: Sequence[bool] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    enabled: bool = True,
    n_splits: int = 5,
    seed: int = 0,
) -> SourceWeights:
    """Fit the cross-fitted source probe and turn it into importance weights.

    Args:
        texts: the negatives (give only ones that take part in training: mined, and generated that passed
            the false-negative guard).
        is_generated: source flag per text.
        groups: the dataset row of each text (a query's negatives share a fold).
        embeddings: the retriever's normalized document embeddings of ``texts`` (recommended).
        enabled: False still measures the probe AUC but leaves every weight at 1 (ablation).
    """
    y = np.asarray(is_generated).astype(bool)
    if len(texts) != y.shape[0] or len(groups) != y.shape[0]:
        raise ValueError(f"texts ({len(texts)}), is_generated ({y.shape[0]}) and groups ({len(groups)}) must align.")
    if y.shape[0] == 0:
        return SourceWeights(np.ones(0), np.full(0, 0.5), float("nan"), float("nan"), float("nan"), 0, 0, 0, enabled)
    # Each distinct text enters the probe once: a hub document mined for many queries would otherwise sit in
    # training and test folds at once, be memorised, and inflate the AUC. Duplicates share its probability.
    keys: dict[tuple[str, bool], int] = {}
    inverse = np.empty(y.shape[0], dtype=np.int64)
    first: list[int] = []
    for i, (text, gen) in enumerate(zip(texts, y.tolist(), strict=True)):
        j = keys.setdefault((text, gen), len(first))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    idx = np.asarray(first, dtype=np.int64)
    y_u = y[idx]
    groups_u = np.asarray(groups)[idx]
    feats = probe_features([texts[i] for i in idx], None if embeddings is None else np.asarray(embeddings)[idx])
    # StratifiedGroupKFold needs at least n_splits groups: cap it (fewer than 2 groups -> probe not fitted)
    n_splits = max(1, min(n_splits, len(set(groups_u.tolist()))))
    probe = cross_fitted_probe(feats, y_u, n_splits=n_splits, seed=seed, groups=groups_u)
    weights_u = importance_weights(probe, y_u) if enabled else np.ones(y_u.shape[0])
    weights = weights_u[inverse]
    n_gen = int(y.sum())
    share = float(weights[y].sum() / n_gen) if n_gen else float("nan")
    auc_after = weighted_auc(y_u, probe.proba_generated, weights_u) if probe.n_splits else float("nan")
    return SourceWeights(
        weights=weights,
        proba_generated=probe.proba_generated[inverse],
        auc_before=probe.auc,
        auc_after=auc_after,
        effective_generated_share=share,
        n_generated=n_gen,
        n_mined=int((~y).sum()),
        n_splits=probe.n_splits,
        enabled=enabled,
        n_unique=int(idx.shape[0]),
    )


def hardness_percentile(score: float, mined_scores: Sequence[float]) -> float:
    """Percentile (0-100) of ``score`` among one row's mined-negative query similarities (ties count half).

    100 means the generated negative is closer to the query than every mined one; ``nan`` without mined ones.
    """
    mined = np.asarray([s for s in mined_scores if np.isfinite(s)], dtype=np.float64)
    if mined.size == 0 or not np.isfinite(score):
        return float("nan")
    below = float((mined < score).sum()) + 0.5 * float((mined == score).sum())
    return 100.0 * below / mined.size
