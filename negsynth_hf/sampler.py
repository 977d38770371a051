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

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sentence_transformers.base.sampler import NoDuplicatesBatchSampler, _sample_value_str

_TEXT, _KNOWN = 0, 1


class KnownPositivesBatchSampler(NoDuplicatesBatchSampler):
    def __init__(self, dataset: Any, *, known_positives: Sequence[Sequence[str]], **kwargs: Any) -> None:
        """``NoDuplicatesBatchSampler`` that also keeps each row's known positives out of its batch.

        Args:
            dataset: the training dataset (as for ``NoDuplicatesBatchSampler``).
            known_positives: one list of texts per dataset row (same order): documents relevant to that row's
                query, which must not be an in-batch negative of it.
            **kwargs: ``NoDuplicatesBatchSampler``'s (``batch_size``, ``drop_last``, ``generator``, ``seed``,
                ...), except ``precompute_hashes``.
        """
        if kwargs.get("precompute_hashes"):
            raise ValueError("KnownPositivesBatchSampler compares texts; precompute_hashes=True is not supported.")
        super().__init__(dataset, **kwargs)
        if len(known_positives) != len(self.dataset):
            raise ValueError(
                f"known_positives has {len(known_positives)} rows but the dataset has {len(self.dataset)}; give "
                "one list of texts per training row, in the dataset's order."
            )
        # the parent's own string form of a value, so a known text matches the row value it is
        self.known = [frozenset(_sample_value_str(t) for t in texts) for texts in known_positives]

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

        return super()._iter_one_pass(values, overlap)
