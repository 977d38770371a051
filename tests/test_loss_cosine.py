"""CosineScores (the fused similarity node of CausalNegLoss) against plain autograd through ``cos_sim``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.util import cos_sim

from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import CausalNegLoss
from negsynth_hf.losses.cosine import CosineScores


def _inputs(batch=4, num_docs=3, dim=8, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    queries = torch.randn(batch, dim, dtype=dtype, requires_grad=True)
    docs = torch.randn(batch * num_docs, dim, dtype=dtype, requires_grad=True)
    own_index = torch.arange(batch).unsqueeze(1) + batch * torch.arange(num_docs)
    return queries, docs, own_index


def test_values_are_cos_sim_bitwise_and_gradients_match_autograd():
    queries, docs, own_index = _inputs()
    scores, own, q_n, d_n = CosineScores.apply(queries, docs, own_index, 3)
    reference = cos_sim(queries, docs)
    assert torch.equal(scores, reference)
    assert torch.equal(own, reference.gather(1, own_index))
    assert torch.equal(q_n, F.normalize(queries, dim=-1)) and not q_n.requires_grad and not d_n.requires_grad
    upstream = torch.randn_like(scores)
    ours = torch.autograd.grad((scores * upstream).sum(), (queries, docs))
    theirs = torch.autograd.grad((reference * upstream).sum(), (queries, docs))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_own_scores_send_gradient_to_documents_only_and_only_from_own_grad_from():
    queries, docs, own_index = _inputs(seed=1)
    _, own, _, _ = CosineScores.apply(queries, docs, own_index, 2)
    upstream = torch.randn_like(own)
    grad_q, grad_d = torch.autograd.grad((own * upstream).sum(), (queries, docs), allow_unused=True)
    assert grad_q is None or grad_q.abs().max() == 0  # the query is stop-gradient for these scores
    # Reference: column 2 rescored against the detached query; columns 0 and 1 get nothing.
    docs_ref = docs.detach().clone().requires_grad_()
    rescored = (F.normalize(docs_ref[own_index[:, 2]], dim=-1) * F.normalize(queries.detach(), dim=-1)).sum(-1)
    (expected,) = torch.autograd.grad((rescored * upstream[:, 2]).sum(), docs_ref)
    torch.testing.assert_close(grad_d, expected, rtol=0, atol=1e-12)


def test_gradcheck_both_outputs():
    """``scores`` against finite differences in both inputs; ``own[:, 1]`` in the documents with the query held
    fixed (it is stop-gradient there by design, so finite differences in the query do not apply)."""
    queries, docs, own_index = _inputs(batch=3, num_docs=2, dim=5, seed=2)
    assert torch.autograd.gradcheck(lambda q, d: CosineScores.apply(q, d, own_index, 1)[0], (queries, docs))
    fixed = queries.detach()
    assert torch.autograd.gradcheck(lambda d: CosineScores.apply(fixed, d, own_index, 1)[1][:, 1], (docs,))


def test_zero_vector_matches_f_normalize_clamp():
    queries, docs, own_index = _inputs(seed=3)
    with torch.no_grad():
        docs[5] = 0.0
    scores, _, _, _ = CosineScores.apply(queries, docs, own_index, 3)
    reference = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T
    assert torch.equal(scores, reference)
    upstream = torch.randn_like(scores)
    ours = torch.autograd.grad((scores * upstream).sum(), (queries, docs))
    theirs = torch.autograd.grad((reference * upstream).sum(), (queries, docs))
    for a, b in zip(ours, theirs, strict=True):  # the zero row's gradient is dy / eps (~1e12): relative check
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(ours[1]).all()


def test_mixed_precision_inputs_get_gradients_in_their_own_dtype():
    queries, docs, own_index = _inputs(dtype=torch.float32, seed=4)
    half_docs = docs.detach().to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, own, _, _ = CosineScores.apply(queries, half_docs, own_index, 1)
    assert scores.dtype == torch.float32  # computed in the promoted dtype, autocast off inside
    grad_q, grad_d = torch.autograd.grad(scores.sum() + own.sum(), (queries, half_docs))
    assert grad_q.dtype == torch.float32 and grad_d.dtype == torch.bfloat16


@pytest.mark.parametrize("gather", [False, True])
def test_fused_path_equals_generic_path_in_the_loss(gather):
    """The default (cos_sim, in-batch) path equals the generic path (a custom similarity that is cos_sim), loss and
    gradients, with weights, masks, and a column that is generated in some rows and mined in others."""
    torch.manual_seed(5)
    batch = 6
    embeddings = [torch.randn(batch, 16, dtype=torch.float64, requires_grad=True) for _ in range(2 + 5)]
    weights = torch.rand(batch, 5, dtype=torch.float64).clamp(min=0.2)
    weights[::3, 4] = 0.0
    flags = torch.tensor([[False, False, False, True, True]] * batch)
    flags[1, 2] = True  # column 2: generated in row 1 only
    labels = torch.tensor([encode_negative_labels(w.tolist(), f.tolist()) for w, f in zip(weights, flags, strict=True)])
    kwargs = {"entropy_weight": 0.7, "gather_across_devices": gather}
    fused = CausalNegLoss(None, **kwargs).compute_loss_components(embeddings, labels)
    generic = CausalNegLoss(None, similarity_fct=lambda a, b: cos_sim(a, b), **kwargs).compute_loss_components(
        embeddings, labels
    )
    for key in ("infonce", "entropy"):
        torch.testing.assert_close(fused[key], generic[key], rtol=0, atol=1e-12)
        grads_fused = torch.autograd.grad(fused[key], embeddings, retain_graph=True, allow_unused=True)
        grads_generic = torch.autograd.grad(generic[key], embeddings, retain_graph=True, allow_unused=True)
        for a, b in zip(grads_fused, grads_generic, strict=True):
            a = torch.zeros_like(embeddings[0]) if a is None else a
            b = torch.zeros_like(embeddings[0]) if b is None else b
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
