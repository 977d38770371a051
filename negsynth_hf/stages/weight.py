"""Stage 4: gap-correction weights from the cross-fitted source probe (:mod:`negsynth_hf.weighting`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from negsynth_hf.stages.guard import Embeddings, Verdicts
from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedItem
from negsynth_hf.weighting import SourceWeights, source_weights


@dataclass
class Weights:
    """Each valid generated negative's (weight, p_generated) by ``(row, k)``; the probe; mined similarities."""

    generated: dict[tuple[int, int], tuple[float, float]]
    probe: SourceWeights
    mined_similarities: list[list[float]]
    enabled: bool

    def reason(self, p_generated: float) -> str:
        """Why a valid generated negative has its weight (goes to provenance)."""
        if not self.enabled:
            return "generated negative (source weights off)"
        if not self.probe.n_splits:
            return "generated negative (probe not fitted: too few items)"
        return f"source-probe importance weight (p_generated={p_generated:.3f})"


def fit_weights(
    rows: PairRows,
    mined: MinedRows,
    items: Sequence[GeneratedItem],
    verdicts: Verdicts,
    emb: Embeddings,
    *,
    enabled: bool,
    n_splits: int,
    seed: int,
) -> Weights:
    """Probe mined vs valid generated items (folds grouped by row); weights apply to generated items only."""
    probe_items = [(i, "mined", k, t) for i, row in enumerate(mined.negatives) for k, t in enumerate(row)]
    probe_items += [(it.row, "generated", it.k, it.text) for it, ok in zip(items, verdicts.valid, strict=True) if ok]
    texts = [t for *_, t in probe_items]
    probe = source_weights(
        texts,
        [src == "generated" for _, src, _, _ in probe_items],
        [i for i, *_ in probe_items],
        embeddings=np.stack([emb.documents[t] for t in texts]) if texts else None,
        enabled=enabled,
        n_splits=n_splits,
        seed=seed,
    )
    generated = {
        (i, k): (float(w), float(p))
        for (i, src, k, _), w, p in zip(probe_items, probe.weights, probe.proba_generated, strict=True)
        if src == "generated"
    }
    sims = [[emb.sim(rows.anchors[i], t) for t in row] for i, row in enumerate(mined.negatives)]
    return Weights(generated, probe, sims, enabled)
