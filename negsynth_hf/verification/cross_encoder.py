"""A cross-encoder (reranker) as the guard's judge: probabilities without an LLM.

It answers the same three questions as :class:`~negsynth_hf.verification.judge.RelevanceJudge`, so a
:class:`~negsynth_hf.verification.GuardPolicy` (``mode="judge"``/``"combined"``) or a
:class:`~negsynth_hf.verification.MinedJudge` takes either:

- ``relevance``: p(relevant) of each (query, document) pair: the model's sigmoid (one output) or the softmax of its
  last label ("relevant") (several outputs);
- ``requirement``: the same on (requirement, document);
- ``contrastive``: ``p(original) / (p(original) + p(edited))`` of a document scored against both queries (the
  cross-encoder scores each query on its own, so there is no position bias to remove).

Like the retriever, a cross-encoder's scale is its own: calibrate ``GuardPolicy.threshold`` on judged data
(``benchmarks/calibrate_judge.py``) before letting it decide.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from negsynth_hf.verification.judge import JudgeStats, Judgment, check_pairs


class CrossEncoderJudge:
    """Probabilities from a sentence-transformers ``CrossEncoder``.

    Args:
        model: a ``CrossEncoder``, or a local folder / Hub id to load one from.
        batch_size: pairs per forward pass.

    Example::

        from negsynth_hf.build import build_dataset
        from negsynth_hf.verification import CrossEncoderJudge, GuardPolicy

        judge = CrossEncoderJudge("cross-encoder/ms-marco-MiniLM-L6-v2")
        built = build_dataset(pairs, generator=config, guard_policy=GuardPolicy(mode="combined", judge=judge))
    """

    def __init__(self, model: Any, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"CrossEncoderJudge: batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str):
            from sentence_transformers.cross_encoder import CrossEncoder

            model = CrossEncoder(model)
        if not callable(getattr(model, "predict", None)):
            raise ValueError(
                f"CrossEncoderJudge: model must be a sentence-transformers CrossEncoder (or a path/id to load one), "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.batch_size = batch_size
        self.stats = JudgeStats()
        base = getattr(getattr(model, "model_card_data", None), "base_model", None)
        self.name = f"cross_encoder:{base or type(model).__name__}"

    def _p(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """p(relevant) per pair: a single output through a sigmoid (whatever activation the model saved), several
        through a softmax, last label."""
        if not pairs:
            return np.zeros(0)
        import torch

        single = getattr(self.model, "num_labels", 1) == 1
        scores = self.model.predict(
            pairs,
            batch_size=self.batch_size,
            show_progress_bar=False,
            activation_fn=torch.nn.Sigmoid() if single else None,
            apply_softmax=not single,
        )
        return np.asarray(scores, dtype=float).reshape(len(pairs), -1)[:, -1]

    def _judged(self, p: np.ndarray, seconds: float, requests: int) -> list[Judgment]:
        each = seconds / max(len(p), 1)
        out = [Judgment(p=float(v), method="cross_encoder", latency_s=each) for v in p]
        self.stats.add(out, requests, seconds)
        return out

    def relevance(self, queries: Sequence[str], documents: Sequence[str]) -> list[Judgment]:
        """p(document relevant to query), per pair."""
        pairs = check_pairs(queries, documents)
        start = time.perf_counter()
        p = self._p(pairs)
        return self._judged(p, time.perf_counter() - start, len(pairs))

    def requirement(self, requirements: Sequence[str], documents: Sequence[str]) -> list[Judgment]:
        """p(document meets the requirement), per pair."""
        return self.relevance(requirements, documents)

    def contrastive(self, originals: Sequence[str], edited: Sequence[str], documents: Sequence[str]) -> list[Judgment]:
        """p(document addresses the ORIGINAL query rather than the edited one): 0.5 when it scores zero for both."""
        pairs = check_pairs(originals, documents) + check_pairs(edited, documents)
        start = time.perf_counter()
        both = self._p(pairs)
        n = len(documents)
        p_orig, p_edit = both[:n], both[n:]
        total = p_orig + p_edit
        p = np.divide(p_orig, total, out=np.full(n, 0.5), where=total > 0)
        return self._judged(p, time.perf_counter() - start, len(pairs))
