"""Stage 0: the pairs and the corpus, checked once, as plain per-row lists (errors name the column and row)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairColumns:
    """Which columns of the pairs dataset hold what (``None``: no such column)."""

    anchor: str = "anchor"
    positive: str = "positive"
    query_id: str | None = "query_id"
    known_positives: str | None = "known_positives"
    title: str | None = None


@dataclass(frozen=True)
class PairRows:
    """The pairs as lists, one entry per row; ``known_positives`` is ``None`` when the column is absent."""

    pairs: Any  # the datasets.Dataset itself (mining and the map cache key read it)
    columns: PairColumns
    anchors: list[str]
    positives: list[str]
    query_ids: list[Any]
    positive_ids: list[Any]
    known_positives: list[list[str]] | None

    def __len__(self) -> int:
        return len(self.anchors)

    def known_positives_of(self, row: int) -> Sequence[str]:
        return self.known_positives[row] if self.known_positives else ()

    def titles(self) -> list[str]:
        """The title column (``""`` for a missing title); an error if the column was named but is absent."""
        name, names = self.columns.title, self.pairs.column_names
        if name not in names:
            raise ValueError(f"title_column {name!r} not in pairs; columns: {names}.")
        return [t or "" for t in self.pairs[name]]


def read_pairs(pairs: Any, columns: PairColumns) -> PairRows:
    """Check ``pairs`` (a non-empty ``datasets.Dataset`` with non-empty anchor/positive strings) and read it."""
    from datasets import Dataset

    if not isinstance(pairs, Dataset):
        raise ValueError(f"pairs must be a datasets.Dataset, got {type(pairs).__name__}.")
    names = pairs.column_names
    for column in (columns.anchor, columns.positive):
        if column not in names:
            raise ValueError(f"pairs has no column {column!r}; columns: {names}.")
    if len(pairs) == 0:
        raise ValueError("pairs is empty.")
    anchors, positives = list(pairs[columns.anchor]), list(pairs[columns.positive])
    for name, values in ((columns.anchor, anchors), (columns.positive, positives)):
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"row {i}: column {name!r} must be a non-empty string, got {v!r}.")
    n = len(pairs)
    known = None
    if columns.known_positives and columns.known_positives in names:
        known = _known_positives(pairs[columns.known_positives], columns.known_positives)
    return PairRows(
        pairs=pairs,
        columns=columns,
        anchors=anchors,
        positives=positives,
        query_ids=list(pairs[columns.query_id]) if columns.query_id and columns.query_id in names else [None] * n,
        positive_ids=list(pairs["positive_id"]) if "positive_id" in names else [None] * n,
        known_positives=known,
    )


def _known_positives(column: Sequence[Any], name: str) -> list[list[str]]:
    """The known-positives column as lists of strings (``None`` = no known positive); errors name the row."""
    out: list[list[str]] = []
    for i, value in enumerate(column):
        if value is None:
            out.append([])
            continue
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            raise ValueError(
                f"row {i}: column {name!r} must be a list of document texts (or None), got {value!r:.80}; set "
                "known_positives_column=None to build without it."
            )
        out.append(list(value))
    return out


def corpus_list(corpus: Any) -> list[str] | None:
    """The corpus as a list of non-empty strings (a list, or a Dataset's ``text``/only string column)."""
    if corpus is None:
        return None
    if isinstance(corpus, (list, tuple)):
        texts = list(corpus)
    else:  # a datasets.Dataset
        names = getattr(corpus, "column_names", None)
        if names is None:
            raise ValueError(f"corpus must be a list of strings, a Dataset or None, got {type(corpus).__name__}.")
        string_columns = [c for c in names if getattr(corpus.features[c], "dtype", None) in ("string", "large_string")]
        column = "text" if "text" in names else (string_columns[0] if len(string_columns) == 1 else None)
        if column is None:
            raise ValueError(f"corpus Dataset needs a 'text' column (or exactly one string column); has {names}.")
        texts = list(corpus[column])
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"corpus entry {bad[0]} is not a string ({type(texts[bad[0]]).__name__}).")
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        logger.warning("corpus: ignoring %d empty documents.", empty)
    return [t for t in texts if t.strip()]
