"""The label column that carries per-negative gap-correction weights and sources to the loss.

sentence-transformers' data collator turns the first column named ``label``/``labels``/``score``/``scores``
into the ``labels`` tensor handed to the loss (a list column becomes a ``(batch, k)`` tensor); every other
column is tokenized as text. That one column is therefore the only channel from a dataset to a loss, so
it packs two things for the ``N`` negative columns of a row, in column order::

    labels = [w_1, ..., w_N, g_1, ..., g_N]

- ``w_i`` in ``[0, 1]``: the gap-correction weight of ``negative_i``. It enters the InfoNCE denominator as
  ``log w_i`` on that negative's logit, so ``w_i = 1`` is a plain negative and ``w_i = 0`` masks it.
- ``g_i`` in ``{0, 1}``: 1 if ``negative_i`` was generated (synthesized by an LLM), 0 if it was mined from
  the corpus. Only generated negatives take part in the query-view entropy term as the "generated" group.

A row with no negatives has an empty list. All rows of a dataset must have the same ``N``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

LABEL_COLUMN = "labels"
_NEGATIVE_COLUMN = re.compile(r"^negative_(\d+)$")


def negative_columns(columns: Sequence[str] | Any) -> list[str]:
    """``negative_1..negative_N`` in numeric order (the order the loss and the label column see them).

    ``columns``: column names, or anything with ``column_names`` (a ``Dataset``).
    """
    names = getattr(columns, "column_names", columns)
    found = [(int(m.group(1)), c) for c in names if (m := _NEGATIVE_COLUMN.match(c))]
    return [c for _, c in sorted(found)]


def encode_negative_labels(weights: Sequence[float], is_generated: Sequence[bool | int]) -> list[float]:
    """Build one row's label list from per-negative weights and source flags.

    Args:
        weights: one weight in ``[0, 1]`` per negative column, in column order.
        is_generated: one flag per negative column, ``True`` for LLM-generated negatives.

    Returns:
        ``[w_1, ..., w_N, g_1, ..., g_N]`` as floats.

    Example:
        >>> encode_negative_labels([1.0, 0.5, 0.0], [False, True, True])
        [1.0, 0.5, 0.0, 0.0, 1.0, 1.0]
    """
    if len(weights) != len(is_generated):
        raise ValueError(
            f"weights has {len(weights)} entries but is_generated has {len(is_generated)}: "
            "give exactly one weight and one source flag per negative column."
        )
    out: list[float] = []
    for i, w in enumerate(weights):
        w = float(w)
        if not 0.0 <= w <= 1.0:  # also rejects NaN
            raise ValueError(f"weight of negative_{i + 1} is {w}; gap-correction weights must lie in [0, 1].")
        out.append(w)
    out.extend(1.0 if bool(g) else 0.0 for g in is_generated)
    return out


def has_negative_label_layout(labels: Tensor, num_negatives: int) -> bool:
    """Whether a collated label tensor claims the ``[w_1..w_N, g_1..g_N]`` layout: 2-D with ``2 * N`` columns.

    Only the shape decides (read on the host, no device synchronisation). A tensor of any other shape (a 1-D
    ``score`` column, a list column of another length) is a label the weight layout does not own.
    """
    return labels.dim() == 2 and labels.size(1) == 2 * num_negatives


def decode_negative_labels(labels: Tensor, num_negatives: int) -> tuple[Tensor, Tensor]:
    """Split a collated ``(batch, 2 * num_negatives)`` label tensor into weights and a generated mask.

    Raises a ValueError naming what is wrong if the shape is not that layout, a weight lies outside ``[0, 1]``
    (or is NaN), or a generated flag is not 0 or 1.

    Returns:
        ``(weights, is_generated)``: a float tensor and a bool tensor, both ``(batch, num_negatives)``.
    """
    if not has_negative_label_layout(labels, num_negatives):
        raise ValueError(
            f"Expected a label tensor of shape (batch, {2 * num_negatives}) for {num_negatives} negative columns "
            f"([w_1..w_N, g_1..g_N], see negsynth_hf.labels), got shape {tuple(labels.shape)}. Build the column "
            "with negsynth_hf.encode_negative_labels, or remove it to train without weights."
        )
    labels = labels.float()
    weights, flags = labels[:, :num_negatives], labels[:, num_negatives:]
    # One host transfer for both checks (NaN fails every comparison).
    weights_ok, flags_ok = torch.stack(
        [((weights >= 0) & (weights <= 1)).all(), ((flags == 0) | (flags == 1)).all()]
    ).tolist()
    if not weights_ok:
        raise ValueError(
            "Gap-correction weights in the label column ([w_1..w_N, g_1..g_N]) must lie in [0, 1]; build the column "
            "with negsynth_hf.encode_negative_labels."
        )
    if not flags_ok:
        raise ValueError(
            "Generated flags in the label column ([w_1..w_N, g_1..g_N]) must be 0 or 1; build the column with "
            "negsynth_hf.encode_negative_labels, or remove a column of other labels (e.g. scores) that has "
            f"{2 * num_negatives} values per row."
        )
    return weights, flags > 0.5
