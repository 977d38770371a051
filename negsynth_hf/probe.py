"""The source probe: can a simple classifier tell generated negatives from mined ones?

If it can, a retriever can too, and it will learn "synthetic vs corpus" instead of relevance (the
paper's source-dependent shortcut). The probe is cross-fitted (every item is scored by a model that never
saw it), so its out-of-fold probabilities can be turned into importance weights without leaking labels.
Used by the transform (gap-correction weights) and by ``diagnose`` (shortcut strength).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SURFACE_FEATURE_NAMES = (
    "log_chars",
    "log_words",
    "mean_word_len",
    "punct_ratio",
    "digit_ratio",
    "upper_ratio",
    "type_token_ratio",
    "sentences",
)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENT = re.compile(r"[.!?]+(?:\s|$)")


def surface_features(texts: Sequence[str]) -> np.ndarray:
    """Length, punctuation and vocabulary features a retriever can pick up (``SURFACE_FEATURE_NAMES``)."""
    out = np.zeros((len(texts), len(SURFACE_FEATURE_NAMES)), dtype=np.float64)
    for i, text in enumerate(texts):
        text = text or ""
        words = _WORD.findall(text)
        n_chars = max(len(text), 1)
        out[i] = (
            np.log1p(len(text)),
            np.log1p(len(words)),
            float(np.mean([len(w) for w in words])) if words else 0.0,
            sum(not c.isalnum() and not c.isspace() for c in text) / n_chars,
            sum(c.isdigit() for c in text) / n_chars,
            sum(c.isupper() for c in text) / n_chars,
            len({w.lower() for w in words}) / max(len(words), 1),
            len(_SENT.findall(text)),
        )
    return out


@dataclass
class ProbeResult:
    """Out-of-fold result of the source probe.

    Attributes:
        auc: ROC AUC of the out-of-fold probabilities (0.5 = source invisible, 1.0 = trivially visible);
            ``nan`` when it could not be fitted (one class only, or too few items).
        proba_generated: out-of-fold ``p(generated | x)`` per item (prior 0.5 where not fitted).
        n_generated / n_mined: class counts; n_splits: folds actually used.
    """

    auc: float
    proba_generated: np.ndarray
    n_generated: int
    n_mined: int
    n_splits: int

    def to_dict(self) -> dict[str, float | int]:
        return {"auc": self.auc, "n_generated": self.n_generated, "n_mined": self.n_mined, "n_splits": self.n_splits}


def weighted_auc(is_generated: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC of ``score`` for ``is_generated``, items weighted by ``weights``; ``nan`` with one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_generated).astype(int)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    keep = np.ones_like(y, dtype=bool) if w is None else w > 0
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    return float(roc_auc_score(y[keep], np.asarray(score)[keep], sample_weight=None if w is None else w[keep]))


def cross_fitted_probe(
    features: np.ndarray,
    is_generated: Sequence[bool] | np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    groups: Sequence[int] | np.ndarray | None = None,
    C: float = 1.0,
) -> ProbeResult:
    """Standardized logistic regression, cross-fitted over ``n_splits`` stratified folds.

    Args:
        features: ``(n, d)`` features (embeddings, :func:`surface_features`, or both stacked).
        is_generated: ``n`` source labels.
        sample_weight: optional per-item weights for fitting and for the AUC (the "after weighting" view).
        groups: optional group ids (e.g. the query row): items of one group share a fold, so a probe
            never scores a negative of a query it was trained on.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(is_generated).astype(int)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (n, d) with n = len(is_generated) = {y.shape[0]}, got {X.shape}.")
    n_gen, n_mined = int(y.sum()), int((1 - y).sum())
    proba = np.full(y.shape[0], 0.5)
    splits = min(n_splits, n_gen, n_mined)
    if groups is not None:
        # StratifiedGroupKFold needs at least one group per fold in each class
        g = np.asarray(groups)
        splits = min(splits, len(np.unique(g[y == 1])), len(np.unique(g[y == 0])))
    if splits < 2:
        return ProbeResult(float("nan"), proba, n_gen, n_mined, 0)
    if groups is not None:
        folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed).split(X, y, groups)
    else:
        folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed).split(X, y)
    for train_idx, test_idx in folds:
        if len(np.unique(y[train_idx])) < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
        fit_kwargs = {}
        if sample_weight is not None:
            fit_kwargs["logisticregression__sample_weight"] = np.asarray(sample_weight)[train_idx]
        model.fit(X[train_idx], y[train_idx], **fit_kwargs)
        proba[test_idx] = model.predict_proba(X[test_idx])[:, 1]
    return ProbeResult(weighted_auc(y, proba, sample_weight), proba, n_gen, n_mined, splits)


def importance_weights(probe: ProbeResult, is_generated: np.ndarray, *, eps: float = 1e-3) -> np.ndarray:
    """``w = p(mined|x) / p(generated|x) * n_generated / n_mined``, clipped to ``[0, 1]``; mined items get 1.

    Under the probe, this reweights the generated group toward the mined distribution: negatives that are
    trivially recognisable as synthetic count less, ones that look like corpus text count fully.
    """
    y = np.asarray(is_generated).astype(bool)
    weights = np.ones(y.shape[0])
    if probe.n_splits == 0 or probe.n_mined == 0:
        return weights
    p = np.clip(probe.proba_generated, eps, 1 - eps)
    prior_ratio = probe.n_generated / probe.n_mined
    weights[y] = np.clip((1 - p[y]) / p[y] * prior_ratio, 0.0, 1.0)
    return weights
