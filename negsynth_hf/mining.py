"""Mined negatives for every row, through ``sentence_transformers.util.mine_hard_negatives``, without losing rows.

``mine_hard_negatives(output_format="n-tuple")`` drops every row that lacks ``num_negatives`` valid
negatives. We call it with ``output_format="labeled-list", output_scores=True`` instead (rows keep however
many negatives passed the filters) and re-attach the result to the input rows by ``(query, positive)``. Rows
it still leaves out (no valid negative at all) get an empty list; every shortfall is counted.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)


@dataclass
class MiningResult:
    """Per input row (same order): mined negative texts and their retriever similarity to the query.

    Attributes:
        negatives / scores: one list per input row, best first, at most ``num_negatives`` long.
        num_negatives: how many were asked for per row.
        rows_short: rows with fewer than ``num_negatives`` (including rows with none).
        rows_empty: rows with no mined negative at all.
        log: what ``mine_hard_negatives`` printed (its statistics table), when ``verbose``.
    """

    negatives: list[list[str]]
    scores: list[list[float]]
    num_negatives: int
    rows_short: int = 0
    rows_empty: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    log: str = ""


def mine_negatives(
    pairs: Any,
    *,
    model: Any,
    num_negatives: int,
    corpus: list[str] | None = None,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    sampling_strategy: Literal["random", "top"] = "top",
    batch_size: int = 32,
    cache_folder: str | None = None,
    verbose: bool = False,
) -> MiningResult:
    """Mine ``num_negatives`` per row of ``pairs`` (a ``datasets.Dataset``); arguments as in ``mine_hard_negatives``.

    ``use_faiss`` is always False (exact search; no extra dependency). Rows with duplicate
    ``(query, positive)`` get the same negatives; all positives of a query are excluded from its negatives.
    """
    from sentence_transformers.util import mine_hard_negatives

    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 to mine, got {num_negatives}.")
    for column in (anchor_column, positive_column):
        if column not in pairs.column_names:
            raise ValueError(f"pairs has no column {column!r}; columns: {pairs.column_names}.")
    settings = {
        "num_negatives": num_negatives,
        "range_min": range_min,
        "range_max": range_max,
        "max_score": max_score,
        "min_score": min_score,
        "absolute_margin": absolute_margin,
        "relative_margin": relative_margin,
        "sampling_strategy": sampling_strategy,
        "use_faiss": False,
    }
    slim = pairs.select_columns([anchor_column, positive_column])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer) if not verbose else contextlib.nullcontext():
        mined = mine_hard_negatives(
            slim,
            model,
            anchor_column_name=anchor_column,
            positive_column_name=positive_column,
            corpus=list(corpus) if corpus is not None else None,
            output_format="labeled-list",
            output_scores=True,
            batch_size=batch_size,
            use_faiss=False,
            verbose=True,
            cache_folder=cache_folder,
            **{k: v for k, v in settings.items() if k not in ("use_faiss",)},
        )
    found: dict[tuple[str, str], tuple[list[str], list[float]]] = {}
    for query, docs, scores in zip(mined[anchor_column], mined[positive_column], mined["scores"], strict=True):
        # labeled-list: docs = [positive, neg_1, ...], scores = [pos_score, neg_1_score, ...]
        found[(query, docs[0])] = (list(docs[1:]), [float(s) for s in scores[1:]])
    negatives: list[list[str]] = []
    scores_out: list[list[float]] = []
    short = empty = 0
    for query, positive in zip(pairs[anchor_column], pairs[positive_column], strict=True):
        negs, scs = found.get((query, positive), ([], []))
        negs, scs = negs[:num_negatives], scs[:num_negatives]
        short += len(negs) < num_negatives
        empty += not negs
        negatives.append(negs)
        scores_out.append(scs)
    return MiningResult(
        negatives=negatives,
        scores=scores_out,
        num_negatives=num_negatives,
        rows_short=short,
        rows_empty=empty,
        settings=settings,
        log=buffer.getvalue(),
    )
