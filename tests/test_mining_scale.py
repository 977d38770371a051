"""Mining on large corpora: chunked scoring (and faiss, when installed) returns the exact top-k."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from negsynth_hf.mining import faiss_installed, mine_negatives, score_chunk_queries

WORDS = "river forest copper lantern violin harbor meadow quartz falcon orchard glacier saddle".split()


def _texts(n: int, seed: int, length: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS, size=length)) for i in range(n)]


def _case(n_pairs: int = 12, n_docs: int = 150):
    corpus = _texts(n_docs, 1, 12)
    pairs = Dataset.from_dict({"anchor": _texts(n_pairs, 2, 5), "positive": corpus[:n_pairs]})
    return pairs, corpus


def _exact_top_k(model, pairs, corpus: list[str], k: int) -> list[list[str]]:
    """The k best-scoring documents per query, its positive left out, from the full score matrix."""
    q = model.encode(list(pairs["anchor"]), normalize_embeddings=True)
    d = model.encode(corpus, normalize_embeddings=True)
    scores = q @ d.T
    out = []
    for row, positive in zip(scores, pairs["positive"], strict=True):
        order = [j for j in np.argsort(-row, kind="stable") if corpus[j] != positive]
        out.append([corpus[j] for j in order[:k]])
    return out


def test_score_chunk_bounds_the_score_matrix():
    assert score_chunk_queries(1_000_000) == 67  # 67 x 1M float32 scores: 256 MiB
    assert score_chunk_queries(10) == 16_384  # small corpora: mine_hard_negatives' own chunk
    assert score_chunk_queries(10**9) == 1 and score_chunk_queries(0) == 16_384
    assert score_chunk_queries(1000, budget=2500) == 2


def test_chunked_mining_equals_the_exact_top_k(tiny_model):
    pairs, corpus = _case()
    expected = _exact_top_k(tiny_model, pairs, corpus, 3)
    kwargs = dict(model=tiny_model, num_negatives=3, corpus=corpus, relative_margin=None, use_faiss=False)
    one_query_at_a_time = mine_negatives(pairs, score_budget=1, **kwargs)  # 12 chunks of 1 query
    all_at_once = mine_negatives(pairs, **kwargs)
    assert one_query_at_a_time.negatives == expected == all_at_once.negatives
    assert one_query_at_a_time.rows_short == 0 and one_query_at_a_time.settings["use_faiss"] is False


@pytest.mark.skipif(not faiss_installed(), reason="faiss-cpu not installed")
def test_faiss_mining_equals_the_exact_top_k(tiny_model):
    pairs, corpus = _case()
    mined = mine_negatives(pairs, model=tiny_model, num_negatives=3, corpus=corpus, relative_margin=None)
    assert mined.settings["use_faiss"] is True
    assert mined.negatives == _exact_top_k(tiny_model, pairs, corpus, 3)
