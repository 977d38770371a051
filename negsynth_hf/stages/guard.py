"""Stage 3: embed every text once, then let the false-negative guard (:mod:`negsynth_hf.verify`) judge each
generated negative. The guard is reached through :func:`verify_generated` only, so its policy can change in
``verify.py`` without touching the build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from negsynth_hf.embeddings import embed_texts
from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedItem


@dataclass
class Embeddings:
    """Normalized query and document vectors of every text of the build, by text."""

    queries: dict[str, np.ndarray]
    documents: dict[str, np.ndarray]

    def sim(self, a: str, b: str) -> float:
        """Cosine of a query (or else document) ``a`` with document ``b``; NaN when either is unknown."""
        left = self.queries.get(a) if a in self.queries else self.documents.get(a)
        if left is None or b not in self.documents:
            return float("nan")
        return float(np.dot(left, self.documents[b]))

    def stack(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        table = self.queries if query else self.documents
        zeros = np.zeros(next(iter(self.documents.values())).shape[0], dtype=np.float32)
        return np.stack([table.get(t, zeros) for t in texts])


@dataclass
class Verdicts:
    """Per generated item (``GeneratedRows.items()`` order): valid or not, and the guard's full record."""

    valid: np.ndarray
    verification: Any  # negsynth_hf.verify.Verification, None when nothing was generated
    absolute_margin: float | None
    relative_margin: float | None


def embed(
    model: Any,
    rows: PairRows,
    mined: MinedRows,
    items: Sequence[GeneratedItem],
    *,
    batch_size: int,
    show_progress_bar: bool,
) -> Embeddings:
    """Queries, positives, mined and generated texts, reusing what mining already embedded."""
    queries = embed_texts(model, rows.anchors, query=True, batch_size=batch_size, known=mined.query_embeddings)
    docs = rows.positives + [t for row in mined.negatives for t in row] + [item.text for item in items]
    documents = embed_texts(
        model,
        docs,
        query=False,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        known=mined.document_embeddings,
    )
    return Embeddings(queries, documents)


def guard_margins(absolute_margin: float | None, relative_margin: float | None) -> tuple[float | None, float | None]:
    """The mining margins are the guard's; with neither set a negative must at least score below the positive."""
    if absolute_margin is None and relative_margin is None:
        return 0.0, None
    return absolute_margin, relative_margin


def verify_generated(
    rows: PairRows,
    items: Sequence[GeneratedItem],
    emb: Embeddings,
    *,
    absolute_margin: float | None,
    relative_margin: float | None,
    judges: Sequence[Any],
    enabled: bool,
) -> Verdicts:
    """Judge every generated item; ``enabled=False`` (the naive baseline) keeps all, with their flags recorded."""
    from negsynth_hf.verify import verify_negatives

    guard_abs, guard_rel = guard_margins(absolute_margin, relative_margin)
    if not items:
        return Verdicts(np.zeros(0, dtype=bool), None, guard_abs, guard_rel)
    queries = [rows.anchors[item.row] for item in items]
    positives = [rows.positives[item.row] for item in items]
    texts = [item.text for item in items]
    verification = verify_negatives(
        queries,
        positives,
        texts,
        embeddings=(emb.stack(queries, query=True), emb.stack(positives), emb.stack(texts)),
        absolute_margin=guard_abs,
        relative_margin=guard_rel,
        judges=judges if enabled else (),
    )
    valid = verification.valid if enabled else np.ones(len(items), dtype=bool)
    return Verdicts(valid, verification, guard_abs, guard_rel)
