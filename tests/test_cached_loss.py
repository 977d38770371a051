"""CachedCausalNegLoss gives the plain loss's value and gradients on the tiny model (dropout off: eval mode).

In train mode GradCache replays its own first pass's dropout (RandContext), which the plain loss cannot share,
so the equality check runs with dropout disabled.
"""

from __future__ import annotations

import json

import pytest
import torch

from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import CachedCausalNegLoss, CausalNegLoss

QUERIES = [f"question number {i} about topic {i % 3}" for i in range(8)]
POSITIVES = [f"passage answering question {i} on topic {i % 3}" for i in range(8)]
NEGATIVES = [[f"unrelated text {i} variant {j} mentioning topic {(i + j) % 4}" for i in range(8)] for j in range(3)]


def _features(model):
    return [model.tokenize(texts) for texts in (QUERIES, POSITIVES, *NEGATIVES)]


def _labels():
    rows = []
    for i in range(8):
        weights = [1.0, 0.5 + 0.05 * i, 0.0 if i == 3 else 1.0]
        rows.append(encode_negative_labels(weights, [False, True, True]))
    return torch.tensor(rows)


def _grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("in_batch", [True, False])
def test_cached_matches_plain_loss_and_gradients(tiny_model, in_batch):
    model = tiny_model
    model.eval()
    kwargs = {"in_batch_negatives": in_batch, "entropy_weight": 0.5}
    labels = _labels()

    plain = CausalNegLoss(model, **kwargs)
    model.zero_grad()
    total_plain = plain(_features(model), labels)
    total_plain.backward()
    grads_plain = _grads(model)
    diag_plain = dict(plain.last_diagnostics)
    out_plain = {"loss": total_plain.detach(), **plain.last_components}

    cached = CachedCausalNegLoss(model, mini_batch_size=3, **kwargs)  # 8 rows -> uneven mini-batches 3, 3, 2
    model.zero_grad()
    total_cached = cached(_features(model), labels)
    assert total_cached.dim() == 0  # a scalar, as every sentence-transformers loss returns
    total_cached.backward()
    grads_cached = _grads(model)
    out_cached = {"loss": total_cached.detach(), **cached.last_components}

    assert set(out_cached) == {"loss", "infonce", "entropy"}
    for key in out_cached:
        torch.testing.assert_close(out_cached[key], out_plain[key], rtol=0, atol=1e-5)
    assert out_plain["entropy"].abs() > 0
    assert grads_plain.keys() == grads_cached.keys() and len(grads_plain) > 10
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_cached[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert cached.last_diagnostics.keys() == diag_plain.keys()
    for key, value in diag_plain.items():
        assert cached.last_diagnostics[key] == pytest.approx(value, abs=1e-5)


def test_cached_without_grad_matches_plain_loss_and_components(tiny_model):
    tiny_model.eval()
    cached = CachedCausalNegLoss(tiny_model, mini_batch_size=4, num_generated=2)
    plain = CausalNegLoss(tiny_model, num_generated=2)
    with torch.no_grad():
        torch.testing.assert_close(cached(_features(tiny_model)), plain(_features(tiny_model)), rtol=0, atol=1e-5)
    assert plain.last_components["entropy"] != 0  # the generated columns entered the entropy term
    for key in ("infonce", "entropy"):
        torch.testing.assert_close(cached.last_components[key], plain.last_components[key], rtol=0, atol=1e-5)


def test_cached_config_and_delegation(tiny_model):
    cached = CachedCausalNegLoss(tiny_model, scale=10.0, mini_batch_size=16, in_batch_negatives=False)
    config = cached.get_config_dict()
    json.dumps(config)
    assert config["mini_batch_size"] == 16 and config["in_batch_negatives"] is False and config["scale"] == 10.0
    assert cached.temperature == pytest.approx(0.1)
    cached.entropy_weight = 0.2  # assignment reaches the wrapped loss, which owns the math
    assert cached.loss.entropy_weight == 0.2 and cached.entropy_weight == 0.2
    assert "2606.01304" in cached.citation and "2101.06983" in cached.citation
    with pytest.raises(ValueError, match="mini_batch_size"):
        CachedCausalNegLoss(tiny_model, mini_batch_size=0)
    with pytest.raises(ValueError, match="named modes"):
        CachedCausalNegLoss(tiny_model, use_weights=False)
    with pytest.raises(TypeError):
        CachedCausalNegLoss(tiny_model, not_an_argument=1)
