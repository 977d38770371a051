"""Losses for training retrievers with LLM-synthesised hard negatives (sentence-transformers 6.x contract)."""

from __future__ import annotations

from negsynth_hf.losses.cached_causal_neg import CachedCausalNegLoss
from negsynth_hf.losses.causal_neg import COMPONENT_KEYS, DIAGNOSTIC_KEYS, CausalNegLoss
from negsynth_hf.losses.entropy import query_view_entropy

__all__ = ["COMPONENT_KEYS", "DIAGNOSTIC_KEYS", "CachedCausalNegLoss", "CausalNegLoss", "query_view_entropy"]
