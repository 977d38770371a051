"""Losses for training retrievers with LLM-synthesised hard negatives (sentence-transformers 6.x contract)."""

from __future__ import annotations

from negsynth_hf.losses.cached_causal_neg import CachedCausalNegLoss
from negsynth_hf.losses.causal_neg import DIAGNOSTIC_KEYS, CausalNegLoss
from negsynth_hf.losses.entropy import query_view_entropy

__all__ = ["DIAGNOSTIC_KEYS", "CachedCausalNegLoss", "CausalNegLoss", "query_view_entropy"]
