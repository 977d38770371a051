"""Cosine scores with a fused backward: the similarity work of CausalNegLoss as one autograd node.

On a ``(64, 1280)`` score matrix the arithmetic is a few matrix products; what autograd adds on top is the
generic backward of ``F.normalize`` (``x / ||x||`` broadcast, then the norm's own backward: ~8 full-size ops
per input) and, for the entropy term, a second scoring of the generated negatives with its own graph. This node
computes ``normalize(q) @ normalize(d).T`` exactly as ``cos_sim`` does (bitwise the same values) and returns
besides it each query's own-document scores, whose gradient reaches the *documents only* (the entropy term's
stop-gradient on the query). Its backward is the closed form
``dx = (dy - y (dy . y)) / ||x||`` of the normalisation, folded into the two backward matrix products.
``tests/test_loss_cosine.py`` checks it against autograd through ``cos_sim`` and with gradcheck.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-12  # F.normalize's default


def _normalize(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``F.normalize(x, dim=-1)`` (same ops, same values), plus what its backward needs."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    clamped = norm < _EPS
    norm = norm.clamp_min(_EPS)
    return x / norm, norm, clamped


class CosineScores(torch.autograd.Function):
    """``scores, own, queries_n, docs_n = CosineScores.apply(queries, docs, own_index, own_grad_from)``.

    Args (of ``apply``):
        queries: ``(B, D)`` raw query embeddings.
        docs: ``(C, D)`` raw document embeddings (all candidates, block-ordered as the caller likes).
        own_index: ``(B, K)`` long, the column of each query's own documents in ``scores``.
        own_grad_from: the columns ``k >= own_grad_from`` of ``own`` propagate their gradient (to the documents
            only); the others are treated as detached. ``1`` in the loss: every negative, not the positive (the
            entropy term's backward is zero outside the generated negatives). ``own_index.size(1)``: none.

    Returns:
        ``scores`` ``(B, C)``: ``cos_sim(queries, docs)``, differentiable w.r.t. both inputs.
        ``own`` ``(B, K)``: ``scores.gather(1, own_index)``, differentiable w.r.t. ``docs`` only, through the
        columns from ``own_grad_from`` on.
        ``queries_n`` ``(B, D)`` and ``docs_n`` ``(C, D)``: the normalised inputs, non-differentiable (for
        diagnostics).
    """

    @staticmethod
    def forward(ctx, queries: Tensor, docs: Tensor, own_index: Tensor, own_grad_from: int):
        dtype = torch.promote_types(queries.dtype, docs.dtype)
        with torch.autocast(device_type=queries.device.type, enabled=False):
            q_n, q_norm, q_clamped = _normalize(queries.to(dtype))
            d_n, d_norm, d_clamped = _normalize(docs.to(dtype))
            scores = q_n @ d_n.T
        own = scores.gather(1, own_index)
        ctx.save_for_backward(q_n, q_norm, q_clamped, d_n, d_norm, d_clamped, scores, own_index)
        ctx.own_grad_from = own_grad_from
        ctx.dtypes = (queries.dtype, docs.dtype)
        ctx.mark_non_differentiable(q_n, d_n)
        ctx.set_materialize_grads(False)  # no full-size zero gradients for q_n, d_n (or an unused output)
        return scores, own, q_n, d_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores, grad_own, _grad_q_n, _grad_d_n):
        # For y = x / |x| and an upstream dy: dx = (dy - y (dy . y)) / |x|. With dy = G^T q_n for the documents,
        # dy . y is the column sum of G * scores, so the radial part costs a (B, C) reduction instead of a full
        # (C, D) one, and the 1/|d| scaling folds into G before the matrix product: one full-size elementwise op
        # (the addcmul) per input beyond the product itself. A clamped norm is a constant: no radial part there.
        q_n, q_norm, q_clamped, d_n, d_norm, d_clamped, scores, own_index = ctx.saved_tensors
        grad_q = grad_d = None
        with torch.autocast(device_type=q_n.device.type, enabled=False):
            grad = torch.zeros_like(scores) if grad_scores is None else grad_scores.to(q_n.dtype)
            if ctx.needs_input_grad[0]:
                radial = (grad * scores).sum(1, keepdim=True).masked_fill_(q_clamped, 0.0)
                grad_q = torch.addcmul(grad @ d_n, q_n, radial, value=-1).div_(q_norm).to(ctx.dtypes[0])
            if ctx.needs_input_grad[1]:
                start = ctx.own_grad_from
                if grad_own is not None and start < own_index.size(1):
                    # The own scores' gradient joins the documents' side only (the query is stop-gradient there).
                    grad = grad.scatter_add(1, own_index[:, start:], grad_own[:, start:].to(grad.dtype))
                inverse_norm = d_norm.reciprocal()  # (C, 1)
                radial = ((grad * scores).sum(0).unsqueeze(1) * inverse_norm).masked_fill_(d_clamped, 0.0)
                grad_d = torch.addcmul((grad * inverse_norm.T).T @ q_n, d_n, radial, value=-1).to(ctx.dtypes[1])
        return grad_q, grad_d, None, None
