"""A batch sampler that keeps in-batch false negatives out: no row shares a batch with a text relevant to another
row's query.

With in-batch negatives every other row's positive and negatives are negatives of each query. On collections
with many judged-relevant documents per query that is a steady source of false negatives (the quality training
sets of CISI put 52 of 870 ordered (query, other row's positive) pairs in that state, see
``benchmarks/README.md``). ``NO_DUPLICATES`` only compares texts; this sampler also knows each row's
``known_positives`` (e.g. the ``known_positives`` column of :func:`negsynth_hf.data.pairs_dataset`) and defers
a row whose texts are relevant to a query already in the batch, or whose query has a relevant text in the batch,
exactly as sentence-transformers defers a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sentence_transformers.base.sampler import _EXCLUDE_DATASET_COLUMNS, NoDuplicatesBatchSampler, _sample_value_str

logger = logging.getLogger(__name__)
_TEXT, _KNOWN = 0, 1


class KnownPositivesBatchSampler(NoDuplicatesBatchSampler):
    def __init__(
        self, dataset: Any, *, known_positives: Sequence[Sequence[str]], fill_batches: bool = False, **kwargs: Any
    ) -> None:
        """``NoDuplicatesBatchSampler`` that also keeps each row's known positives out of its batch.

        Args:
            dataset: the training dataset (as for ``NoDuplicatesBatchSampler``).
            known_positives: one list of texts per dataset row (same order): documents relevant to that row's
                query, which must not be an in-batch negative of it.
            fill_batches: rows the rule leaves in partial batches are re-batched with the duplicate rule only,
                so every batch but the last is full; the rows that then share a batch with one of their known
                positives are counted (``relaxed_rows``) and logged. Needed with several processes:
                accelerate's sharding hands out a round of batches only when its last batch is full (a
                2-process run of 6 CISI queries trained 0 steps without it). False: partial batches, after the
                full ones.
            **kwargs: ``NoDuplicatesBatchSampler``'s (``batch_size``, ``drop_last``, ``generator``, ``seed``,
                ...), except ``precompute_hashes``. With ``drop_last`` (set under DDP) the rows of a dropped
                partial batch are counted (``dropped_rows``) and logged.
        """
        if kwargs.get("precompute_hashes"):
            raise ValueError("KnownPositivesBatchSampler compares texts; precompute_hashes=True is not supported.")
        # ``drop_last`` stays what the trainer asked for (accelerate's sharding reads it, and the parent's
        # __len__), but the parent's passes run without it (see _iter_one_pass): this class decides what happens
        # to the rows of partial batches (re-batched with fill_batches; dropped last and counted otherwise).
        super().__init__(dataset, **kwargs)
        if len(known_positives) != len(self.dataset):
            raise ValueError(
                f"known_positives has {len(known_positives)} rows but the dataset has {len(self.dataset)}; give "
                "one list of texts per training row, in the dataset's order."
            )
        # the parent's own string form of a value, so a known text matches the row value it is
        self.known = [frozenset(_sample_value_str(t) for t in texts) for texts in known_positives]
        self.fill_batches = fill_batches
        self.relaxed_rows = 0  # last epoch: rows batched with one of their known positives (fill_batches)
        self.dropped_rows = 0  # last epoch: rows of partial batches dropped under drop_last

    def __iter__(self) -> Iterator[list[int]]:
        # Full batches first, then the rows the rule could not fit into a full batch (common when queries share
        # many relevant documents): as partial batches, or with fill_batches re-batched by the duplicate rule.
        batches = list(super().__iter__())
        full = [batch for batch in batches if len(batch) == self.batch_size]
        partial = [batch for batch in batches if len(batch) != self.batch_size]
        texts = {index: self._texts(index) for batch in partial for index in batch}
        if self.fill_batches:
            partial = self._batch_without_duplicates([index for batch in partial for index in batch], texts)
        self.dropped_rows = 0
        if self.drop_last:
            kept = [batch for batch in partial if len(batch) == self.batch_size]
            self.dropped_rows = sum(map(len, partial)) - sum(map(len, kept))
            partial = kept
            if self.dropped_rows:
                logger.warning(
                    "KnownPositivesBatchSampler: drop_last dropped %d of %d rows this epoch (partial batches).",
                    self.dropped_rows,
                    len(self.dataset),
                )
        self.relaxed_rows = sum(self._conflicts(batch, texts) for batch in partial) if self.fill_batches else 0
        if self.relaxed_rows:
            logger.warning(
                "KnownPositivesBatchSampler: %d of %d rows share a batch with a text relevant to their query: "
                "too few rows free of each other's known positives for batch size %d.",
                self.relaxed_rows,
                len(self.dataset),
                self.batch_size,
            )
        yield from full + partial

    def _texts(self, index: int) -> set[str]:
        """A row's values as the parent compares them (its non-hash path)."""
        return {
            _sample_value_str(value)
            for key, value in self.dataset[index].items()
            if key not in _EXCLUDE_DATASET_COLUMNS
        }

    def _batch_without_duplicates(self, indices: list[int], texts: dict[int, set[str]]) -> list[list[int]]:
        """Greedy batches of ``indices`` (in order) with no text twice in a batch (the NO_DUPLICATES rule)."""
        batches: list[list[int]] = []
        pending = list(indices)
        while pending:
            batch: list[int] = []
            seen: set[str] = set()
            deferred = []
            for index in pending:
                if len(batch) < self.batch_size and texts[index].isdisjoint(seen):
                    batch.append(index)
                    seen |= texts[index]
                else:
                    deferred.append(index)
            batches.append(batch)
            pending = deferred
        return batches

    def _conflicts(self, batch: list[int], texts: dict[int, set[str]]) -> int:
        """Rows of ``batch`` with a known positive among the other rows' texts."""
        return sum(bool(self.known[index] & set().union(*(texts[j] for j in batch if j != index))) for index in batch)

    def _iter_one_pass(
        self, get_sample_values: Callable[[int], Any], has_overlap: Callable[[Any, Any], bool]
    ) -> Iterator[list[int]]:
        def values(index: int) -> set[tuple[int, str]]:
            texts = {(_TEXT, v) for v in get_sample_values(index)}
            return texts | {(_KNOWN, v) for v in self.known[index]}

        def overlap(sample: set[tuple[int, str]], batch: set[tuple[int, str]]) -> bool:
            # a duplicate text, a text relevant to a batch query, or a batch text relevant to this query;
            # two rows sharing a known positive is fine (neither uses it as a negative)
            for kind, value in sample:
                if (_TEXT, value) in batch or (kind == _TEXT and (_KNOWN, value) in batch):
                    return True
            return False

        saved, self.drop_last = self.drop_last, False  # keep partial batches: __iter__ handles their rows
        try:
            batches = list(super()._iter_one_pass(values, overlap))
        finally:
            self.drop_last = saved
        return iter(batches)
