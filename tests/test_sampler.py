"""KnownPositivesBatchSampler: no row's known positive is an in-batch negative of it; nothing is lost."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from negsynth_hf.sampler import KnownPositivesBatchSampler


def _data(n: int = 12):
    rows = {"anchor": [f"query {i}" for i in range(n)], "positive": [f"doc {i}" for i in range(n)]}
    rows["negative_1"] = [f"neg {i}" for i in range(n)]
    # query 0 finds docs 1-3 relevant (another row's positive), query 4 finds neg 5 relevant (another row's
    # negative), queries 6 and 7 share a relevant document that no row holds (no conflict)
    known = [[f"doc {i}"] for i in range(n)]
    known[0] += ["doc 1", "doc 2", "doc 3"]
    known[4] += ["neg 5"]
    known[6] += ["shared"]
    known[7] += ["shared"]
    return Dataset.from_dict(rows), known


def _batches(sampler):
    return [list(batch) for batch in sampler]


def test_batches_never_hold_a_known_positive_of_a_batch_query():
    data, known = _data()
    for seed in range(20):
        sampler = KnownPositivesBatchSampler(
            data, known_positives=known, batch_size=4, drop_last=False, generator=torch.Generator(), seed=seed
        )
        batches = _batches(sampler)
        assert sorted(i for b in batches for i in b) == list(range(12))  # every row once
        for batch in batches:
            texts = {t for i in batch for t in (data[i]["positive"], data[i]["negative_1"])}
            for i in batch:
                others = texts - {data[i]["positive"], data[i]["negative_1"]}
                assert not others & set(known[i]), (seed, batch)
            assert not {0, 1} <= set(batch) and not {4, 5} <= set(batch)


def test_without_conflicts_it_batches_like_no_duplicates():
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    data, _ = _data()
    own_only = [[p] for p in data["positive"]]
    kwargs = {"batch_size": 4, "drop_last": False, "seed": 3}
    ours = _batches(KnownPositivesBatchSampler(data, known_positives=own_only, generator=torch.Generator(), **kwargs))
    theirs = _batches(NoDuplicatesBatchSampler(data, generator=torch.Generator(), **kwargs))
    assert ours == theirs


def test_validation():
    data, known = _data()
    with pytest.raises(ValueError, match="one list of texts per training row"):
        KnownPositivesBatchSampler(data, known_positives=known[:3], batch_size=4, drop_last=False)
    with pytest.raises(ValueError, match="precompute_hashes"):
        KnownPositivesBatchSampler(data, known_positives=known, batch_size=4, drop_last=False, precompute_hashes=True)


def test_full_batches_first_and_fill_batches_for_several_processes():
    """Heavy conflicts leave partial batches: strict mode puts them after the full ones; fill_batches re-batches
    their rows with the duplicate rule only (every batch but the last full) and counts the relaxed rows."""
    data, known = _data()
    dense = [list(data["positive"]) for _ in range(12)]  # every query finds every document relevant
    dense[0], dense[1] = known[0], known[1]
    for seed in range(10):
        kwargs = {"known_positives": dense, "batch_size": 4, "drop_last": False, "seed": seed}
        strict = KnownPositivesBatchSampler(data, generator=torch.Generator(), **kwargs)
        sizes = [len(b) for b in strict]
        assert sizes == sorted(sizes, reverse=True) and 1 in sizes and strict.relaxed_rows == 0
        filled = KnownPositivesBatchSampler(data, generator=torch.Generator(), fill_batches=True, **kwargs)
        batches = [list(b) for b in filled]
        assert all(len(b) == 4 for b in batches[:-1]) and sorted(i for b in batches for i in b) == list(range(12))
        assert filled.relaxed_rows > 0


def test_drop_last_drops_only_partial_batches_and_counts_them():
    data, known = _data()
    dense = [list(data["positive"]) for _ in range(12)]
    dense[0], dense[1] = known[0], known[1]
    sampler = KnownPositivesBatchSampler(
        data, known_positives=dense, batch_size=4, drop_last=True, generator=torch.Generator(), seed=0
    )
    batches = [list(b) for b in sampler]
    assert len(sampler) == 3 and all(len(b) == 4 for b in batches)
    assert sampler.dropped_rows == 12 - 4 * len(batches) > 0  # counted, not silent
    filled = KnownPositivesBatchSampler(
        data, known_positives=dense, batch_size=4, drop_last=True, fill_batches=True, generator=torch.Generator()
    )
    assert [len(b) for b in filled] == [4, 4, 4] and filled.dropped_rows == 0
