"""Per-query retrieval scores and paired significance tests between systems, computed with ``ranx``.

Why per query: two retrievers' mean nDCG@10 differ by noise as easily as by training, and a seed spread says
nothing about which *queries* moved. A paired test over the same test queries (each system's per-query score,
seeds averaged per query first) is what IR evaluation uses to tell them apart (Smucker et al., CIKM 2007). The
metrics and the t-test are ``ranx``'s (``ranx.evaluate``, ``ranx.statistical_tests``), never re-implemented here.
The randomization test is SciPy's (``scipy.stats.permutation_test`` over within-query swaps, the same Fisher
test): ranx's numba-parallel version draws its permutations from unseeded worker-thread generators, so it gives
another p-value on every call (0.0178, 0.0151, 0.0180 for one input), and committed results must not flicker.

``ranx`` is optional (``pip install "negsynth-hf[bench]"``): it is imported when a function here is called.

Example::

    from negsynth_hf.significance import retrieval_run, per_query_scores, paired_test

    run_a = retrieval_run(model_a, queries, corpus)  # {query_id: {doc_id: score}}, top 100
    run_b = retrieval_run(model_b, queries, corpus)
    a, b = per_query_scores(qrels, run_a), per_query_scores(qrels, run_b)
    paired_test("trained", a["ndcg@10"], "base", b["ndcg@10"], metric="ndcg@10")
    # PairedTest(a='trained', b='base', metric='ndcg@10', delta=0.0152, p_value=0.003, test='fisher', ...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")
Test = Literal["fisher", "student"]
TESTS: tuple[str, ...] = ("fisher", "student")


@dataclass(frozen=True)
class PairedTest:
    """One comparison: ``delta`` = mean(a) - mean(b) over ``n_queries`` paired queries, and its two-sided p.

    ``ci_low`` / ``ci_high``: the 95% t-interval of ``delta`` (SciPy's ``ttest_rel(...).confidence_interval``),
    so a difference that is not significant still says how large an effect the queries rule out.
    """

    a: str
    b: str
    metric: str
    delta: float
    p_value: float
    test: str
    n_queries: int
    mean_a: float
    mean_b: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ranx() -> Any:
    try:
        import ranx
    except ImportError as err:  # an optional dependency: say how to get it
        raise ImportError('per-query scores and paired tests need ranx: pip install "negsynth-hf[bench]"') from err
    return ranx


def retrieval_run(
    model: Any,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    *,
    top_k: int = 100,
    batch_size: int = 64,
    corpus_embeddings: Any = None,
    show_progress_bar: bool = False,
) -> dict[str, dict[str, float]]:
    """``{query_id: {doc_id: cosine}}``: each query's ``top_k`` documents under a SentenceTransformer.

    ``corpus_embeddings`` (normalized, in ``corpus`` order) skips encoding the corpus again (the base model's,
    reused across runs).
    """
    from sentence_transformers.util import semantic_search

    if top_k < 1:
        raise ValueError(f"retrieval_run: top_k must be >= 1, got {top_k}")
    doc_ids, query_ids = list(corpus), list(queries)
    if corpus_embeddings is None:
        corpus_embeddings = encode_corpus(model, corpus, batch_size=batch_size, show_progress_bar=show_progress_bar)
    q = model.encode([queries[i] for i in query_ids], batch_size=batch_size, normalize_embeddings=True,
                     convert_to_tensor=True)  # fmt: skip
    hits = semantic_search(q, corpus_embeddings, top_k=min(top_k, len(doc_ids)))
    return {
        qid: {doc_ids[h["corpus_id"]]: float(h["score"]) for h in row} for qid, row in zip(query_ids, hits, strict=True)
    }


def encode_corpus(model: Any, corpus: Mapping[str, str], *, batch_size: int = 64, show_progress_bar: bool = False):
    """Normalized document embeddings in ``corpus`` order (a tensor, as ``semantic_search`` takes)."""
    return model.encode(list(corpus.values()), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_tensor=True, show_progress_bar=show_progress_bar)  # fmt: skip


def per_query_scores(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: score}}`` for every query of ``qrels`` (a query the run misses scores 0)."""
    ranx = _ranx()
    judged = {q: {d: int(g) for d, g in docs.items() if int(g) > 0} for q, docs in qrels.items()}
    empty = sorted(q for q, docs in judged.items() if not docs)
    if empty:
        raise ValueError(f"qrels queries {empty[:5]} have no relevant document (grade > 0): drop them first")
    ranx_qrels, ranx_run = ranx.Qrels(judged), ranx.Run({q: dict(run.get(q, {})) for q in judged})
    ranx.evaluate(ranx_qrels, ranx_run, list(metrics), make_comparable=True)
    return {m: {q: float(s) for q, s in ranx_run.scores[m].items()} for m in metrics}


def mean_over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-query mean over seeds (every seed must score the same queries)."""
    if not per_seed:
        raise ValueError("mean_over_seeds: no seed given")
    ids = list(per_seed[0])
    for i, scores in enumerate(per_seed[1:], start=1):
        if set(scores) != set(ids):
            raise ValueError(f"mean_over_seeds: seed #{i} scores other queries than seed #0")
    return {q: float(np.mean([s[q] for s in per_seed])) for q in ids}


def paired_test(
    a: str,
    a_scores: Mapping[str, float],
    b: str,
    b_scores: Mapping[str, float],
    *,
    metric: str,
    test: Test = "fisher",
    n_permutations: int = 10_000,
    seed: int = 42,
) -> PairedTest:
    """Two-sided paired test of system ``a`` against ``b`` on the queries both scored.

    ``fisher``: Fisher's paired randomization test on the difference of means (SciPy's ``permutation_test``,
    ``n_permutations`` seeded swaps; exact over all 2^n swaps when that is fewer); ``student``: ranx's paired
    t-test. The two score maps must cover the same queries (the comparison is paired).
    """
    if test not in TESTS:
        raise ValueError(f"paired_test: test must be one of {list(TESTS)}, got {test!r}")
    if set(a_scores) != set(b_scores):
        only = sorted(set(a_scores) ^ set(b_scores))
        raise ValueError(f"paired_test: {a!r} and {b!r} score different queries (e.g. {only[:5]}): pair them first")
    if len(a_scores) < 2:
        raise ValueError(f"paired_test: needs >= 2 paired queries, got {len(a_scores)}")
    ids = sorted(a_scores)
    x = np.array([a_scores[q] for q in ids], dtype=np.float64)
    y = np.array([b_scores[q] for q in ids], dtype=np.float64)
    if test == "fisher":
        p = _randomization_p(x, y, n_permutations=n_permutations, seed=seed)
    else:
        p, _ = _ranx().statistical_tests.paired_student_t_test(y, x, 0.05)
    p = 1.0 if not np.isfinite(p) else float(p)  # identical systems: t-test gives nan, nothing differs
    delta = float(x.mean() - y.mean())
    low, high = _confidence_interval(x, y, default=delta)
    return PairedTest(a, b, metric, delta, p, test, len(ids), float(x.mean()), float(y.mean()), low, high)


def _randomization_p(x: np.ndarray, y: np.ndarray, *, n_permutations: int, seed: int) -> float:
    """Two-sided p of mean(x) - mean(y) under random within-pair swaps (reproducible for a given ``seed``)."""
    from scipy.stats import permutation_test

    def mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    result = permutation_test(
        (x, y),
        mean_difference,
        permutation_type="samples",  # paired: each query's two scores are swapped, never mixed across queries
        n_resamples=n_permutations,
        alternative="two-sided",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def _confidence_interval(x: np.ndarray, y: np.ndarray, *, default: float) -> tuple[float, float]:
    """95% t-interval of mean(x - y); ``(default, default)`` when every difference is the same (no spread)."""
    from scipy.stats import ttest_rel

    with np.errstate(invalid="ignore", divide="ignore"):
        interval = ttest_rel(x, y).confidence_interval(0.95)
    low, high = float(interval.low), float(interval.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else (default, default)
