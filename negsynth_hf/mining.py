"""Mined negatives for every row, through ``sentence_transformers.util.mine_hard_negatives``, without losing rows.

``mine_hard_negatives(output_format="n-tuple")`` drops every row that lacks ``num_negatives`` valid
negatives. We call it with ``output_format="labeled-list", output_scores=True`` instead (rows keep however
many negatives passed the filters) and re-attach the result to the input rows by ``(query, positive)``. Rows
it still leaves out (no valid negative at all) get an empty list; every shortfall is counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

#: similarity scores held at once while mining (queries x documents, float32): 2**26 is 256 MiB, so a million
#: documents are scored 67 queries at a time instead of ``mine_hard_negatives``' default 16,384 (64 GiB)
SCORE_CHUNK_ELEMENTS = 2**26


def score_chunk_queries(num_documents: int, *, budget: int = SCORE_CHUNK_ELEMENTS) -> int:
    """Queries scored per chunk so that one chunk's ``queries x documents`` matrix stays within ``budget``."""
    return max(1, min(16_384, budget // max(1, num_documents)))


def faiss_installed() -> bool:
    """Whether ``faiss`` (``pip install faiss-cpu``) can be imported: mining then searches with it."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


@dataclass
class MiningResult:
    """Per input row (same order): mined negative texts and their retriever similarity to the query.

    Attributes:
        negatives / scores: one list per input row, best first, at most ``num_negatives`` long.
        num_negatives: how many were asked for per row.
        rows_short: rows with fewer than ``num_negatives`` (including rows with none).
        rows_empty: rows with no mined negative at all.
        known_positives_excluded: ``known_positives`` texts that would have been among a row's mined
            negatives without the exclusion (false negatives kept out); ``None`` without ``known_positives``.
        log: what ``mine_hard_negatives`` printed (its statistics table), when ``verbose``.
    """

    negatives: list[list[str]]
    scores: list[list[float]]
    num_negatives: int
    rows_short: int = 0
    rows_empty: int = 0
    known_positives_excluded: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    query_embeddings: dict[str, Any] = field(default_factory=dict)
    document_embeddings: dict[str, Any] = field(default_factory=dict)


def mine_negatives(
    pairs: Any,
    *,
    model: Any,
    num_negatives: int,
    corpus: list[str] | None = None,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    known_positives: Sequence[Sequence[str]] | None = None,
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
    use_faiss: bool | None = None,
    score_budget: int = SCORE_CHUNK_ELEMENTS,
) -> MiningResult:
    """Mine ``num_negatives`` per row of ``pairs`` (a ``datasets.Dataset``); arguments as in ``mine_hard_negatives``.

    The search is exact either way: ``use_faiss`` (``None``: when :func:`faiss_installed`) searches a flat
    inner-product index, several times faster on large corpora; without it, queries are scored against the
    corpus in chunks of at most ``score_budget`` scores (never the full ``queries x documents`` matrix). Rows
    with duplicate ``(query, positive)`` get the same negatives; all positives of a query are excluded from its
    negatives.

    ``known_positives`` (one list of texts per row, e.g. every judged-relevant document of the query) are kept
    out of that row's negatives too. They are not passed as extra positive pairs: ``mine_hard_negatives``
    applies its margins against the *weakest* positive of a query, and a weakly relevant document would then
    veto most negatives. Instead each row mines ``k`` more candidates (``k`` = the most known positives any row
    has) and drops its known positives from its own list, so the margins stay relative to the row's positive
    and, with ``sampling_strategy="top"``, the result is exactly the top ``num_negatives`` non-relevant ones.
    """
    from sentence_transformers.util import mine_hard_negatives

    _check_inputs(pairs, num_negatives, (anchor_column, positive_column))
    use_faiss = faiss_installed() if use_faiss is None else use_faiss
    settings = {
        "num_negatives": num_negatives,
        "range_min": range_min,
        "range_max": range_max,
        "max_score": max_score,
        "min_score": min_score,
        "absolute_margin": absolute_margin,
        "relative_margin": relative_margin,
        "sampling_strategy": sampling_strategy,
        "use_faiss": use_faiss,
    }
    extra = _extra_candidates(pairs[positive_column], known_positives, num_negatives, range_min, range_max)
    buffer = io.StringIO()
    # mine_hard_negatives only returns texts; with a cache folder it also saves the embeddings it computed,
    # which we read back so later stages never re-embed the corpus (a temporary folder when caching is off)
    tmp = None if cache_folder else tempfile.TemporaryDirectory(prefix="negsynth-mine-")
    folder = cache_folder or tmp.name  # type: ignore[union-attr]
    docs = list(dict.fromkeys((list(corpus) if corpus is not None else []) + list(pairs[positive_column])))
    with contextlib.redirect_stdout(buffer) if not verbose else contextlib.nullcontext():
        mined = mine_hard_negatives(
            pairs.select_columns([anchor_column, positive_column]),
            model,
            anchor_column_name=anchor_column,
            positive_column_name=positive_column,
            corpus=list(corpus) if corpus is not None else None,
            output_format="labeled-list",
            output_scores=True,
            batch_size=batch_size,
            use_faiss=use_faiss,
            # without faiss, the queries scored at once against the whole corpus; faiss tiles its own search
            faiss_batch_size=16_384 if use_faiss else score_chunk_queries(len(docs), budget=score_budget),
            verbose=True,
            cache_folder=folder,
            **{k: v for k, v in settings.items() if k not in ("use_faiss", "num_negatives")},
            num_negatives=num_negatives + extra,
        )
    found = _by_pair(mined[anchor_column], mined[positive_column], mined["scores"])
    result = _per_row(pairs[anchor_column], pairs[positive_column], found, known_positives, num_negatives)
    queries = list(dict.fromkeys(pairs[anchor_column]))
    result.query_embeddings = _read_cached(folder, "query", model, queries)
    result.document_embeddings = _read_cached(folder, "corpus", model, docs)
    if tmp is not None:
        tmp.cleanup()
    result.settings = settings
    result.log = buffer.getvalue()
    return result


def _check_inputs(pairs: Any, num_negatives: int, columns: Sequence[str]) -> None:
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 to mine, got {num_negatives}.")
    for column in columns:
        if column not in pairs.column_names:
            raise ValueError(f"pairs has no column {column!r}; columns: {pairs.column_names}.")


def _extra_candidates(
    positives: Sequence[str],
    known_positives: Sequence[Sequence[str]] | None,
    num_negatives: int,
    range_min: int,
    range_max: int | None,
) -> int:
    """How many more candidates to mine per row so that dropping known positives still leaves enough."""
    if known_positives is None:
        return 0
    if len(known_positives) != len(positives):
        raise ValueError(
            f"known_positives has {len(known_positives)} rows but pairs has {len(positives)}; give one list per row."
        )
    extra = max((len(set(k) - {p}) for k, p in zip(known_positives, positives, strict=True)), default=0)
    if range_max is not None:  # mine_hard_negatives needs num_negatives <= range_max - range_min
        extra = max(0, min(extra, range_max - range_min - num_negatives))
    return extra


def _by_pair(
    queries: Sequence[str], docs: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]
) -> dict[tuple[str, str], tuple[list[str], list[float]]]:
    """``(query, positive) -> (negatives, scores)`` from the labeled-list output."""
    found: dict[tuple[str, str], tuple[list[str], list[float]]] = {}
    for query, row_docs, row_scores in zip(queries, docs, scores, strict=True):
        # labeled-list: docs = [positive, neg_1, ...], scores = [pos_score, neg_1_score, ...]
        found[(query, row_docs[0])] = (list(row_docs[1:]), [float(s) for s in row_scores[1:]])
    return found


def _per_row(
    queries: Sequence[str],
    positives: Sequence[str],
    found: dict[tuple[str, str], tuple[list[str], list[float]]],
    known_positives: Sequence[Sequence[str]] | None,
    num_negatives: int,
) -> MiningResult:
    """Re-attach the mined lists to the input rows, without each row's known positives, and count shortfalls."""
    result = MiningResult(negatives=[], scores=[], num_negatives=num_negatives)
    excluded = 0
    for i, (query, positive) in enumerate(zip(queries, positives, strict=True)):
        negs, scs = found.get((query, positive), ([], []))
        if known_positives is not None and known_positives[i]:
            skip = set(known_positives[i])
            excluded += sum(t in skip for t in negs[:num_negatives])  # what the row would have got otherwise
            kept = [(t, sc) for t, sc in zip(negs, scs, strict=True) if t not in skip]
            negs, scs = [t for t, _ in kept], [sc for _, sc in kept]
        negs, scs = negs[:num_negatives], scs[:num_negatives]
        result.rows_short += len(negs) < num_negatives
        result.rows_empty += not negs
        result.negatives.append(negs)
        result.scores.append(scs)
    result.known_positives_excluded = excluded if known_positives is not None else None
    return result


def _read_cached(folder: str, kind: str, model: Any, texts: list[str]) -> dict[str, Any]:
    """Embeddings ``mine_hard_negatives`` cached for ``texts`` (its own file-name recipe), or ``{}`` if absent.

    The recipe is an implementation detail of sentence-transformers: if it ever changes, the file is not
    found (or has the wrong shape) and callers simply embed again.
    """
    import numpy as np

    model_name = getattr(getattr(model, "model_card_data", None), "base_model", None) or ""
    digest = hashlib.sha256(repr((model_name, None, None, texts)).encode(), usedforsecurity=False).hexdigest()
    path = os.path.join(folder, f"{kind}_embeddings_{digest}.npy")
    if not os.path.isfile(path):
        return {}
    emb = np.load(path)
    if emb.shape[0] != len(texts):
        return {}
    return dict(zip(texts, emb.astype(np.float32), strict=True))
