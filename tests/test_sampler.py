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
