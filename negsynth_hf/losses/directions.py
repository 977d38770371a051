"""MultipleNegativesRankingLoss's extra directions, hardness weighting and partition modes (sentence-transformers 6.2).

CausalNegLoss mirrors MNRL's constructor; this module holds the parts of MNRL's math that are not the
query-to-document InfoNCE itself, written against MNRL 6.2's ``compute_loss_from_embeddings`` (same blocks, same
masks, same order of operations where it matters for bitwise agreement), so ``tests/test_loss_directions.py``
can compare every combination against the real class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
PartitionMode = Literal["joint", "per_direction"]
HardnessMode = Literal["in_batch_negatives", "hard_negatives", "all_negatives"]

VALID_DIRECTIONS = {"query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"}
VALID_HARDNESS_MODES = {None, "in_batch_negatives", "hard_negatives", "all_negatives"}


def validate_mnrl_arguments(
    scale: float,
    directions: Sequence[str],
    partition_mode: str,
    hardness_mode: str | None,
    hardness_strength: float,
) -> None:
    """MNRL 6.2's checks of its own arguments, with its messages (a config that MNRL rejects is rejected here
    with the same words, and one it accepts is accepted), each followed by what to change where MNRL says none."""
    if not scale > 0:
        raise ValueError(f"Scale must be a positive value (scale = 1 / temperature), got {scale}.")
    if not directions:
        raise ValueError("At least one direction must be specified.")
    if not set(directions).issubset(VALID_DIRECTIONS):
        raise ValueError(f"Invalid directions: {set(directions) - VALID_DIRECTIONS}. Valid: {VALID_DIRECTIONS}")
    if "query_to_doc" not in directions:
        raise ValueError("'query_to_doc' direction is required (contains the positive pair).")
    if partition_mode not in ("joint", "per_direction"):
        raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {partition_mode}")
    if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        raise ValueError(
            "partition_mode='per_direction' requires every direction's candidate pool to include the positive pair. "
            "'query_to_query' and 'doc_to_doc' only contain same-type similarities and never include the positive, "
            "making the per-direction loss ill-defined. Use partition_mode='joint' instead."
        )
    if hardness_mode not in VALID_HARDNESS_MODES:
        raise ValueError(f"hardness_mode must be one of {VALID_HARDNESS_MODES}, got {hardness_mode!r}")
    if hardness_strength < 0.0:
        raise ValueError("hardness_strength must be non-negative.")
    if hardness_mode is not None and hardness_strength == 0.0:
        logger.warning(
            f"hardness_mode={hardness_mode!r} is set but hardness_strength=0.0, so hardness weighting has no "
            "effect. Set hardness_strength to a positive value to enable hardness weighting."
        )


def extra_direction_scores(
    similarity_fct: Callable[[Tensor, Tensor], Tensor],
    directions: Sequence[str],
    queries: Tensor,
    docs: list[Tensor],
    local: slice,
) -> dict[str, Tensor]:
    """Unscaled scores of the directions beyond query_to_doc, masked with ``-inf`` exactly as MNRL masks them.

    ``queries`` and ``docs`` (positives first, then each negative column) are the (gathered) world batch;
    ``local`` selects this device's rows. Every block has one row per local row: ``query_to_query``
    ``(B, B_world)`` (the row's own query masked), ``doc_to_query`` ``(B, B_world)`` (the row's positive against
    every query), ``doc_to_doc`` ``(B, B_world * (1 + N))`` (the row's positive against every document, its own
    row's documents masked; columns in query_to_doc's order, so a document's weight is one column bias in both).
    """
    local_queries, local_docs = queries[local], docs[0][local]
    rows = torch.arange(local_queries.size(0), device=queries.device)
    local_indices = rows + local.start
    scores: dict[str, Tensor] = {}
    if "query_to_query" in directions:
        block = similarity_fct(local_queries, queries)
        scores["query_to_query"] = block.index_put((rows, local_indices), block.new_tensor(-torch.inf))
    if "doc_to_query" in directions:
        scores["doc_to_query"] = similarity_fct(queries, local_docs).T
    if "doc_to_doc" in directions:
        block = similarity_fct(torch.cat(docs, dim=0), local_docs).T
        same_query = torch.zeros(rows.numel(), queries.size(0), dtype=torch.bool, device=queries.device)
        same_query[rows, local_indices] = True
        scores["doc_to_doc"] = block.masked_fill(same_query.repeat(1, len(docs)), -torch.inf)
    return scores


def hardness_bias(mode: str | None, strength: float, sims: Tensor, own_columns: Tensor) -> Tensor | None:
    """``strength * stop_grad(sim)`` on the negatives that ``mode`` selects, 0 elsewhere; None when off.

    ``sims`` is the unscaled query_to_doc matrix, ``own_columns`` ``(B, 1 + N)`` the column of each row's own
    positive and negatives in it. Not temperature-scaled, as in MNRL
    (Lan et al. 2025, Eq. 5): the final logit is ``scale * sim + strength * stop_grad(sim)``.
    """
    if mode is None or not strength > 0.0:
        return None
    if mode == "hard_negatives":  # the row's own explicit negatives only
        if own_columns.size(1) == 1:
            return None  # pairs only: nothing to weight (MNRL adds an all-zero penalty)
        penalty = strength * sims.detach().gather(1, own_columns[:, 1:])
        return sims.new_zeros(sims.shape).scatter_(1, own_columns[:, 1:], penalty)
    penalty = strength * sims.detach()
    # "in_batch_negatives": everything but the row's own documents; "all_negatives": everything but its positive
    excluded = own_columns if mode == "in_batch_negatives" else own_columns[:, :1]
    return penalty.scatter_(1, excluded, 0.0)


def contrastive_loss(logits: dict[str, Tensor], targets: Tensor, partition_mode: str) -> Tensor:
    """``-(positive - log Z).mean()``: the positive from query_to_doc; ``log Z`` one logsumexp over all the
    directions' logits ("joint") or the mean of one logsumexp per direction ("per_direction"), as in MNRL."""
    query_to_doc = logits["query_to_doc"]
    positive = query_to_doc[torch.arange(query_to_doc.size(0), device=query_to_doc.device), targets]
    if len(logits) == 1:
        log_z = torch.logsumexp(query_to_doc, dim=1)
    elif partition_mode == "joint":
        log_z = torch.logsumexp(torch.cat(list(logits.values()), dim=1), dim=1)
    else:
        log_z = sum(torch.logsumexp(block, dim=1) for block in logits.values()) / len(logits)
    return -(positive - log_z).mean()
