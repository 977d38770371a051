"""CausalNegLoss and query_view_entropy on synthetic embeddings: formula, gradients, MNRL equivalence, masking."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim, dot_score

from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import DIAGNOSTIC_KEYS, CausalNegLoss, query_view_entropy


def loop_entropy(query, mined, generated, tau, mined_mask, generated_mask):
    """The method.md formula, one sample at a time (the reference implementation's shape)."""
    per_query = []
    for b in range(query.size(0)):
        q = query[b].detach()
        mined_b = [mined[b, j].detach() for j in range(mined.size(1)) if mined_mask[b, j]]
        gen_b = [generated[b, j] for j in range(generated.size(1)) if generated_mask[b, j]]
        num_m, num_g = len(mined_b), len(gen_b)
        if num_g == 0:
            continue
        sims = torch.stack([q @ n for n in mined_b + gen_b]) / tau
        p = torch.softmax(sims, dim=0)
        p_gen = p[num_m:]
        mass = p_gen.sum()
        p_tilde = p_gen / mass
        h_gen = -(p_tilde * torch.log(p_tilde)).sum()
        l_bal = (mass - num_g / (num_m + num_g)) ** 2
        per_query.append(-h_gen + l_bal)
    if not per_query:
        return torch.zeros((), dtype=query.dtype)
    return torch.stack(per_query).mean()


def unit(*shape, dtype=torch.float64, requires_grad=False):
    x = F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize(
    ("num_mined", "num_gen", "masked"),
    [(5, 3, False), (5, 3, True), (0, 3, False), (0, 4, True), (4, 1, False), (4, 1, True), (15, 3, True)],
)
def test_entropy_matches_per_sample_loop(num_mined, num_gen, masked):
    torch.manual_seed(num_mined * 10 + num_gen + masked)
    batch, dim, tau = 7, 12, 0.1
    q = unit(batch, dim, requires_grad=True)
    mined = unit(batch, num_mined, dim, requires_grad=True)
    gen = unit(batch, num_gen, dim, requires_grad=True)
    mined_mask = torch.ones(batch, num_mined, dtype=torch.bool)
    gen_mask = torch.ones(batch, num_gen, dtype=torch.bool)
    if masked:
        mined_mask = torch.rand(batch, num_mined) > 0.3
        gen_mask = torch.rand(batch, num_gen) > 0.4
        gen_mask[0] = False  # a row with no valid generated negative is left out of the mean
        gen_mask[1, 0] = True
    fast = query_view_entropy(q, mined, gen, tau, mined_mask=mined_mask, generated_mask=gen_mask)
    slow = loop_entropy(q, mined, gen, tau, mined_mask, gen_mask)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
    # Same gradients on the generated negatives too.
    (grad_fast,) = torch.autograd.grad(fast, gen)
    (grad_slow,) = torch.autograd.grad(slow, gen)
    torch.testing.assert_close(grad_fast, grad_slow, rtol=0, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_entropy_closed_form_backward_passes_gradcheck(masked):
    """The fused backward of entropy_terms against finite differences (float64), with masked slots and a row
    that has no valid generated negative. Mined scores are stop-gradient (method.md), so finite differences move
    the generated entries only, and the mined ones must get exactly zero gradient."""
    from negsynth_hf.losses.entropy import entropy_terms

    torch.manual_seed(7 + masked)
    scores = (torch.rand(6, 9, dtype=torch.float64) * 2 - 1).requires_grad_()
    is_generated = torch.zeros(6, 9, dtype=torch.bool)
    is_generated[:, 6:] = True
    is_generated[2, 1] = True  # generated columns need not be trailing
    valid = (torch.rand(6, 9) > 0.25) if masked else None
    if masked:
        valid[3, 6:] = False
        valid[3, 1] = False
    gen_valid = is_generated if valid is None else is_generated & valid
    fixed = scores.detach().clone()

    def loss_of_generated(s):  # mined entries held at their values: the function the gradient is of
        return entropy_terms(torch.where(gen_valid, s, fixed), is_generated, valid, 0.1).loss

    assert torch.autograd.gradcheck(loss_of_generated, (scores,))
    (grad,) = torch.autograd.grad(entropy_terms(scores, is_generated, valid, 0.1).loss, scores)
    assert grad[~gen_valid].abs().max() == 0 and grad[gen_valid].abs().max() > 0


def test_entropy_single_generated_is_balance_only():
    """G = 1: p~ = 1, H_gen = 0, so L_ent is the squared mass gap alone."""
    torch.manual_seed(1)
    q, mined, gen = unit(3, 8), unit(3, 4, 8), unit(3, 1, 8)
    sims = torch.einsum("bd,bkd->bk", q, torch.cat([mined, gen], 1)) / 0.1
    mass = torch.softmax(sims, 1)[:, -1]
    expected = ((mass - 1 / 5) ** 2).mean()
    torch.testing.assert_close(query_view_entropy(q, mined, gen), expected, rtol=0, atol=1e-9)


def test_entropy_without_valid_generated_is_zero_without_grad():
    q, mined, gen = unit(3, 8), unit(3, 4, 8), unit(3, 2, 8, requires_grad=True)
    out = query_view_entropy(q, mined, gen, generated_mask=torch.zeros(3, 2, dtype=torch.bool))
    assert out.item() == 0.0 and not out.requires_grad


def test_entropy_gradient_reaches_only_generated():
    torch.manual_seed(2)
    q = unit(5, 16, requires_grad=True)
    mined = unit(5, 6, 16, requires_grad=True)
    gen = unit(5, 3, 16, requires_grad=True)
    query_view_entropy(q, mined, gen).backward()
    assert q.grad is None  # detached
    assert mined.grad is None or mined.grad.abs().sum() == 0
    assert gen.grad is not None and gen.grad.abs().sum() > 0

    # Same through the loss: the entropy component moves only the generated negative columns.
    embeddings = [unit(5, 16, requires_grad=True) for _ in range(2 + 4)]
    labels = torch.tensor([encode_negative_labels([1, 1, 1, 1], [0, 0, 1, 1])] * 5)
    out = CausalNegLoss(None, entropy_weight=1.0).compute_loss_components(embeddings, labels)
    grads = torch.autograd.grad(out["entropy"], embeddings, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads[:4])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[4:])


def test_entropy_is_vectorised_against_the_loop_at_scale():
    """Sanity on the paper shape (15 mined + 3 generated) with float32, as used in training."""
    torch.manual_seed(3)
    q, mined, gen = unit(32, 64, dtype=torch.float32), unit(32, 15, 64, dtype=torch.float32), unit(32, 3, 64)
    gen = gen.float()
    ones_m, ones_g = torch.ones(32, 15, dtype=torch.bool), torch.ones(32, 3, dtype=torch.bool)
    torch.testing.assert_close(
        query_view_entropy(q, mined, gen), loop_entropy(q, mined, gen, 0.1, ones_m, ones_g), rtol=0, atol=1e-5
    )


def _embeddings(batch, num_neg, dim=24, seed=0):
    torch.manual_seed(seed)
    return [torch.randn(batch, dim, dtype=torch.float64, requires_grad=True) for _ in range(2 + num_neg)]


@pytest.mark.parametrize("num_neg", [0, 1, 3])
@pytest.mark.parametrize("with_labels", [False, True])
def test_unit_weights_reproduce_mnrl(num_neg, with_labels):
    embeddings = _embeddings(6, num_neg)
    labels = torch.tensor([encode_negative_labels([1.0] * num_neg, [False] * num_neg)] * 6) if with_labels else None
    loss = CausalNegLoss(None, entropy_weight=0.0)
    mnrl = MultipleNegativesRankingLoss(None)
    ours = loss.compute_loss_components(embeddings, labels)
    theirs = mnrl.compute_loss_from_embeddings(embeddings, None)
    assert ours["infonce"].item() == theirs.item()
    assert ours["entropy"].item() == 0.0
    scalar = loss.compute_loss_from_embeddings(embeddings, labels)  # what forward returns: one scalar
    assert scalar.dim() == 0 and scalar.item() == theirs.item()
    # Same logits as MNRL's query_to_doc matrix.
    logits, targets = loss.infonce_logits(embeddings[0], embeddings[1], embeddings[2:], torch.ones(6, num_neg))
    assert torch.equal(logits, cos_sim(embeddings[0], torch.cat(embeddings[1:])) * 20.0)
    assert torch.equal(targets, torch.arange(6))
    # Same gradients.
    ours_grads = torch.autograd.grad(ours["infonce"], embeddings)
    theirs_grads = torch.autograd.grad(theirs, embeddings)
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # Generated flags change only the entropy term, never InfoNCE.
    if num_neg > 1:  # (with one negative that is generated, M = 0 and G = 1: L_ent is exactly 0)
        gen_labels = torch.tensor([encode_negative_labels([1.0] * num_neg, [True] * num_neg)] * 6)
        with_entropy = CausalNegLoss(None).compute_loss_components(embeddings, gen_labels)
        assert with_entropy["infonce"].item() == theirs.item()
        assert with_entropy["entropy"].item() != 0.0


@pytest.mark.parametrize("in_batch", [True, False])
def test_zero_weight_column_equals_removing_it(in_batch):
    """Masking negative_2 for every row (InfoNCE and entropy) equals a dataset without that column."""
    embeddings = _embeddings(5, 4, seed=4)
    flags = [False, True, True, True]
    loss = CausalNegLoss(None, in_batch_negatives=in_batch, entropy_weight=0.5)
    masked = loss.compute_loss_components(embeddings, torch.tensor([encode_negative_labels([1, 0, 1, 1], flags)] * 5))
    kept = [embeddings[i] for i in (0, 1, 2, 4, 5)]
    removed = loss.compute_loss_components(kept, torch.tensor([encode_negative_labels([1, 1, 1], [0, 1, 1])] * 5))
    for key in ("infonce", "entropy"):
        torch.testing.assert_close(masked[key], removed[key], rtol=0, atol=1e-12)
    grads_masked = torch.autograd.grad(masked["infonce"] + masked["entropy"], embeddings)
    assert grads_masked[3].abs().sum() == 0  # a masked negative gets no gradient at all
    grads_removed = torch.autograd.grad(removed["infonce"] + removed["entropy"], kept)
    for a, b in zip([grads_masked[i] for i in (0, 1, 2, 4, 5)], grads_removed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_zero_weight_single_negative_removed_for_every_anchor():
    """With in-batch negatives, row 2's masked negative_1 disappears from every anchor's denominator."""
    batch, num_neg, scale = 5, 2, 20.0
    embeddings = _embeddings(batch, num_neg, seed=5)
    weights = [[1.0, 1.0]] * batch
    weights[2] = [0.0, 1.0]
    labels = torch.tensor([encode_negative_labels(w, [False, False]) for w in weights])
    out = CausalNegLoss(None, entropy_weight=0.0).compute_loss_components(embeddings, labels)

    q, docs = embeddings[0], torch.cat(embeddings[1:])  # docs block-ordered [pos | neg_1 | neg_2]
    keep = torch.ones(docs.size(0), dtype=torch.bool)
    keep[batch * 1 + 2] = False  # negative_1 of row 2
    logits = cos_sim(q, docs[keep]) * scale
    expected = F.cross_entropy(logits, torch.arange(batch))
    torch.testing.assert_close(out["infonce"], expected, rtol=0, atol=1e-12)


def test_fractional_weights_add_log_w_and_carry_across_rows():
    batch, scale = 4, 20.0
    embeddings = _embeddings(batch, 2, seed=6)
    weights = torch.tensor([[0.5, 1.0], [1.0, 0.25], [0.75, 0.125], [1.0, 1.0]], dtype=torch.float64)  # float32-exact
    labels = torch.cat([weights, torch.zeros(batch, 2, dtype=torch.float64)], 1)
    out = CausalNegLoss(None).compute_loss_components(embeddings, labels)
    q, docs = embeddings[0], torch.cat(embeddings[1:])
    bias = torch.cat([torch.ones(batch, dtype=torch.float64), weights[:, 0], weights[:, 1]]).log()
    logits = cos_sim(q, docs) * scale + bias  # the same bias for every anchor
    torch.testing.assert_close(out["infonce"], F.cross_entropy(logits, torch.arange(batch)), rtol=0, atol=1e-12)
    assert out["entropy"].item() == 0.0  # no generated negatives
    unweighted = CausalNegLoss(None, use_weights="none").compute_loss_components(embeddings, labels)
    mnrl = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    assert unweighted["infonce"].item() == mnrl.item()


def test_use_weights_mask_is_plain_infonce_over_the_unmasked_negatives():
    """'mask': weight > 0 counts as 1, weight 0 stays out; equals the loss on 0/1 labels, and with no zero weight
    it is MNRL."""
    batch = 4
    embeddings = _embeddings(batch, 2, seed=12)
    weights = torch.tensor([[0.5, 0.0], [1.0, 0.25], [0.0, 0.125], [1.0, 1.0]], dtype=torch.float64)
    flags = torch.tensor([[0.0, 1.0]] * batch, dtype=torch.float64)
    masked = CausalNegLoss(None, use_weights="mask").compute_loss_components(embeddings, torch.cat([weights, flags], 1))
    binary = CausalNegLoss(None).compute_loss_components(embeddings, torch.cat([(weights > 0).double(), flags], 1))
    assert masked["infonce"].item() == binary["infonce"].item()
    assert masked["entropy"].item() == binary["entropy"].item()
    no_zero = torch.cat([weights.clamp(min=0.1), flags], 1)
    mnrl = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    assert CausalNegLoss(None, use_weights="mask").compute_loss_components(embeddings, no_zero)[
        "infonce"
    ].item() == pytest.approx(mnrl.item(), abs=1e-12)
    assert CausalNegLoss(None, use_weights="mask").get_config_dict()["use_weights"] == "mask"
    with pytest.raises(ValueError, match="use_weights"):
        CausalNegLoss(None, use_weights="yes")
    with pytest.raises(ValueError, match="use_weights"):
        CausalNegLoss(None, use_weights=1)


@pytest.mark.parametrize("value", [True, False])
def test_use_weights_rejects_booleans(value):
    """Only the named modes are accepted, at construction and on assignment (a bool is not a mode)."""
    with pytest.raises(ValueError, match=r'named modes "weights", "mask" or "none", got ' + str(value)):
        CausalNegLoss(None, use_weights=value)
    loss = CausalNegLoss(None)
    with pytest.raises(ValueError, match="named modes"):
        loss.use_weights = value
    assert loss.use_weights == "weights"


def test_without_in_batch_negatives_is_per_row_softmax():
    batch, num_neg, scale = 4, 3, 20.0
    embeddings = _embeddings(batch, num_neg, seed=7)
    weights = [[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.2, 1.0, 0.7], [0.0, 0.0, 1.0]]
    labels = torch.tensor([encode_negative_labels(w, [False, True, True]) for w in weights])
    out = CausalNegLoss(None, in_batch_negatives=False, entropy_weight=0.0).compute_loss_components(embeddings, labels)
    per_row = []
    for i in range(batch):
        q = embeddings[0][i]
        logits = [F.cosine_similarity(q, embeddings[1][i], dim=0) * scale]
        for j in range(num_neg):
            if weights[i][j] > 0:
                logits.append(F.cosine_similarity(q, embeddings[2 + j][i], dim=0) * scale + math.log(weights[i][j]))
        logits = torch.stack(logits)
        per_row.append(-(logits[0] - torch.logsumexp(logits, 0)))
    torch.testing.assert_close(out["infonce"], torch.stack(per_row).mean(), rtol=0, atol=1e-12)


def test_without_in_batch_dot_score_and_custom_similarity():
    embeddings = _embeddings(4, 2, seed=8)
    q, docs = embeddings[0], torch.stack(embeddings[1:], 1)
    expected_logits = torch.einsum("bd,bkd->bk", q, docs)
    expected = F.cross_entropy(expected_logits, torch.zeros(4, dtype=torch.long))
    for fct in (dot_score, lambda a, b: a @ b.T):
        loss = CausalNegLoss(None, scale=1.0, similarity_fct=fct, in_batch_negatives=False, entropy_weight=0.0)
        torch.testing.assert_close(loss.compute_loss_components(embeddings, None)["infonce"], expected)


def test_num_generated_without_labels_marks_trailing_columns():
    embeddings = _embeddings(5, 4, seed=9)
    by_arg = CausalNegLoss(None, num_generated=2).compute_loss_components(embeddings, None)
    labels = torch.tensor([encode_negative_labels([1] * 4, [0, 0, 1, 1])] * 5)
    by_labels = CausalNegLoss(None).compute_loss_components(embeddings, labels)
    assert by_arg["entropy"].item() == by_labels["entropy"].item() != 0.0
    plain = CausalNegLoss(None).compute_loss_components(embeddings, None)
    assert plain["entropy"].item() == 0.0


def test_gather_across_devices_single_process_is_identity():
    embeddings = _embeddings(4, 2, seed=10)
    labels = torch.tensor([encode_negative_labels([1.0, 0.5], [0, 1])] * 4)
    a = CausalNegLoss(None).compute_loss_components(embeddings, labels)
    b = CausalNegLoss(None, gather_across_devices=True).compute_loss_components(embeddings, labels)
    assert a["infonce"].item() == b["infonce"].item() and a["entropy"].item() == b["entropy"].item()


def test_diagnostics_values():
    torch.manual_seed(11)
    batch, dim = 6, 16
    embeddings = [F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=-1) for _ in range(2 + 5)]
    flags = [False, False, False, True, True]
    weights = [[1.0] * 5 for _ in range(batch)]
    weights[0][4] = 0.0  # row 0 keeps one generated negative: out of h_gen_norm, in gen_mass
    weights[1][0] = 0.0
    labels = torch.tensor([encode_negative_labels(w, flags) for w in weights])
    loss = CausalNegLoss(None)
    loss.compute_loss_components(embeddings, labels)
    diag = loss.last_diagnostics
    assert set(diag) == set(DIAGNOSTIC_KEYS)
    assert all(isinstance(v, float) for v in diag.values())
    q, pos, negs = embeddings[0], embeddings[1], torch.stack(embeddings[2:], 1)
    w = torch.tensor(weights)
    assert diag["masked_fraction"] == pytest.approx(2 / 30)
    assert diag["sim_q_pos"] == pytest.approx((q * pos).sum(-1).mean().item())
    q_neg = torch.einsum("bd,bkd->bk", q, negs)
    mined_valid = (w[:, :3] > 0).double()
    assert diag["sim_q_mined"] == pytest.approx(((q_neg[:, :3] * mined_valid).sum() / mined_valid.sum()).item())
    pairs = [(negs[b, 3] @ negs[b, 4]).item() for b in range(1, batch)]  # row 0's second generated is masked
    assert diag["sim_gen_gen"] == pytest.approx(sum(pairs) / len(pairs))
    # h_gen_norm over rows with G >= 2 (rows 1..5), from the loop formula
    h = []
    for b in range(1, batch):
        p = torch.softmax((q_neg[b][w[b] > 0]) / 0.1, 0)[-2:]
        pt = p / p.sum()
        h.append((-(pt * pt.log()).sum() / math.log(2)).item())
    assert diag["h_gen_norm"] == pytest.approx(sum(h) / len(h))
    assert 0.0 < diag["gen_mass_expected"] < 1.0

    loss.compute_loss_components(embeddings[:2], None)  # pairs only: negative statistics not available
    assert set(loss.last_diagnostics) == {"sim_q_pos"}


def test_config_citation_temperature():
    loss = CausalNegLoss(None, scale=50.0, in_batch_negatives=False, num_generated=3, entropy_weight=0.1)
    config = loss.get_config_dict()
    json.dumps(config)
    assert config == {
        "scale": 50.0,
        "similarity_fct": "cos_sim",
        "gather_across_devices": False,
        "directions": ("query_to_doc",),
        "partition_mode": "joint",
        "hardness_mode": None,
        "hardness_strength": 0.0,
        "in_batch_negatives": False,
        "num_generated": 3,
        "use_weights": "weights",
        "entropy_weight": 0.1,
        "entropy_temperature": 0.1,
    }
    assert loss.temperature == pytest.approx(0.02)
    assert "2606.01304" in loss.citation and "causalneg2026" in loss.citation


def test_validation_errors():
    with pytest.raises(ValueError, match="Scale must be a positive value"):
        CausalNegLoss(None, scale=0.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        CausalNegLoss(None, entropy_weight=-1.0)
    with pytest.raises(ValueError, match="entropy_temperature"):
        CausalNegLoss(None, entropy_temperature=0.0)
    with pytest.raises(ValueError, match="num_generated"):
        CausalNegLoss(None, num_generated=-1)
    embeddings = _embeddings(3, 2)
    with pytest.raises(ValueError, match=r"num_generated=3 but the inputs have only 2 negative"):
        CausalNegLoss(None, num_generated=3).compute_loss_components(embeddings, None)
    with pytest.raises(ValueError, match=r"flags .* must be 0 or 1"):
        CausalNegLoss(None).compute_loss_components(embeddings, torch.tensor([[1.0, 1, 0, 2]] * 3))
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        CausalNegLoss(None).compute_loss_components(embeddings, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CausalNegLoss(None).compute_loss_components(embeddings, torch.tensor([[1.5, 1, 0, 0]] * 3))
    with pytest.raises(ValueError, match="at least 2"):
        CausalNegLoss(None).compute_loss_components(embeddings[:1], None)
    with pytest.raises(ValueError, match="mined_mask"):
        query_view_entropy(unit(2, 4), unit(2, 3, 4), unit(2, 1, 4), mined_mask=torch.ones(2, 2, dtype=torch.bool))
