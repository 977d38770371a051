"""MNRL's directions, partition modes and hardness weighting in CausalNegLoss and CachedCausalNegLoss.

The grid: every valid ``directions`` x ``partition_mode`` x ``hardness_mode`` combination (hardness_strength > 0),
with and without explicit negatives, against the real sentence-transformers classes; then the composition rules
of the gap weights and the entropy term with them (CausalNegLoss docstring, design notes).
"""

from __future__ import annotations

import itertools
import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import cos_sim, dot_score

from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import CachedCausalNegLoss, CausalNegLoss

EXTRA_DIRECTIONS = ("query_to_query", "doc_to_query", "doc_to_doc")
ALL_DIRECTIONS = ("query_to_doc", *EXTRA_DIRECTIONS)
HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")


def _mnrl_configs() -> list[dict]:
    """Every combination of MNRL's own arguments that MNRL accepts (per_direction only without the same-type
    directions), hardness_strength > 0 whenever a hardness mode is on."""
    configs = []
    for size in range(len(EXTRA_DIRECTIONS) + 1):
        for extra in itertools.combinations(EXTRA_DIRECTIONS, size):
            directions = ("query_to_doc", *extra)
            for partition_mode in ("joint", "per_direction"):
                if partition_mode == "per_direction" and {"query_to_query", "doc_to_doc"} & set(extra):
                    continue
                for hardness_mode in HARDNESS_MODES:
                    configs.append(
                        {
                            "directions": directions,
                            "partition_mode": partition_mode,
                            "hardness_mode": hardness_mode,
                            "hardness_strength": 2.5 if hardness_mode else 0.0,
                        }
                    )
    return configs


def _config_id(config: dict) -> str:
    directions = "+".join(
        d.replace("_to_", "2").replace("query", "q").replace("doc", "d") for d in config["directions"]
    )
    return f"{directions}-{config['partition_mode']}-{config['hardness_mode'] or 'nohard'}"


MNRL_CONFIGS = [pytest.param(config, id=_config_id(config)) for config in _mnrl_configs()]


def test_grid_covers_every_valid_combination():
    assert len(MNRL_CONFIGS) == (8 + 2) * 4  # 8 direction sets joint, 2 of them also per_direction; 4 hardness


def _embeddings(batch: int, num_neg: int, seed: int = 0, dim: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(batch, dim, dtype=torch.float64, requires_grad=True) for _ in range(2 + num_neg)]


def _unit_labels(batch: int, num_neg: int) -> torch.Tensor | None:
    """Weights 1, the last negative flagged generated (flags must not matter with entropy_weight=0)."""
    if not num_neg:
        return None
    flags = [j == num_neg - 1 for j in range(num_neg)]
    return torch.tensor([encode_negative_labels([1.0] * num_neg, flags)] * batch, dtype=torch.float64)


def _assert_same_loss_and_grads(ours, theirs, inputs, atol=1e-12):
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("similarity_fct", [cos_sim, dot_score], ids=["fused_cos_sim", "generic_dot_score"])
@pytest.mark.parametrize("num_neg", [0, 2])
@pytest.mark.parametrize("config", MNRL_CONFIGS)
def test_unit_weights_without_entropy_equal_mnrl(config, num_neg, similarity_fct):
    """Loss and gradients of MNRL 6.2 itself, on the fused cos_sim path and on the generic one."""
    embeddings = _embeddings(5, num_neg, seed=num_neg)
    ours = CausalNegLoss(None, similarity_fct=similarity_fct, entropy_weight=0.0, **config)
    theirs = MultipleNegativesRankingLoss(None, similarity_fct=similarity_fct, **config)
    out = ours.compute_loss_components(embeddings, _unit_labels(5, num_neg))
    assert out["entropy"].item() == 0.0
    _assert_same_loss_and_grads(out["infonce"], theirs.compute_loss_from_embeddings(embeddings, None), embeddings)


@pytest.fixture(scope="module")
def eval_model(tiny_model_path):
    model = SentenceTransformer(tiny_model_path)
    model.eval()  # dropout off: the plain loss cannot replay GradCache's random states
    return model


QUERIES = [f"question {i} about topic {i % 3}" for i in range(6)]
DOCS = [[f"text {i} kind {j} mentioning topic {(i + j) % 4}" for i in range(6)] for j in range(3)]


def _model_step(loss, model, num_neg, labels):
    """One forward + backward through the model; the loss, its components and the parameter gradients."""
    features = [model.tokenize(texts) for texts in (QUERIES, *DOCS[: 1 + num_neg])]
    model.zero_grad()
    total = loss(features, labels)
    total.backward()  # a scalar, as from every sentence-transformers loss
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {"loss": total.detach(), **loss.last_components}, grads


def _gap_labels(num_neg: int) -> torch.Tensor | None:
    """Fractional weights, a masked negative and generated flags: the composition is under test too."""
    if not num_neg:
        return None
    rows = [
        encode_negative_labels([1.0, 0.0 if i == 2 else 0.4 + 0.1 * i][:num_neg], [False, True][:num_neg])
        for i in range(6)
    ]
    return torch.tensor(rows)


@pytest.mark.parametrize("num_neg", [0, 2])
@pytest.mark.parametrize("config", MNRL_CONFIGS)
def test_cached_equals_plain(eval_model, config, num_neg):
    """GradCache (uneven mini-batches 4 + 2) gives the plain loss's components and parameter gradients, with
    gap weights and the entropy term on."""
    labels = _gap_labels(num_neg)
    kwargs = {**config, "entropy_weight": 0.5}
    plain_out, plain_grads = _model_step(CausalNegLoss(eval_model, **kwargs), eval_model, num_neg, labels)
    cached = CachedCausalNegLoss(eval_model, mini_batch_size=4, **kwargs)
    cached_out, cached_grads = _model_step(cached, eval_model, num_neg, labels)
    for key in ("loss", "infonce", "entropy"):
        torch.testing.assert_close(cached_out[key], plain_out[key], rtol=0, atol=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("hardness_mode", HARDNESS_MODES)
def test_cached_equals_cached_mnrl_with_token_packing(eval_model, hardness_mode):
    """Against the real CachedMNRL, every direction, embedding mini-batches packed by mini_batch_num_tokens."""
    config = {"directions": ALL_DIRECTIONS, "hardness_mode": hardness_mode, "hardness_strength": 3.0}
    ours = CachedCausalNegLoss(eval_model, mini_batch_num_tokens=40, entropy_weight=0.0, **config)
    theirs = CachedMultipleNegativesRankingLoss(eval_model, mini_batch_num_tokens=40, **config)
    ours_out, ours_grads = _model_step(ours, eval_model, 2, _unit_labels(6, 2))
    features = [eval_model.tokenize(texts) for texts in (QUERIES, *DOCS)]
    eval_model.zero_grad()
    total = theirs(features, None)
    total.backward()
    torch.testing.assert_close(ours_out["loss"], total.detach(), rtol=0, atol=1e-5)
    for name, param in eval_model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(ours_grads[name], param.grad, rtol=1e-4, atol=1e-5, msg=name)


# Composition of the gap weights and the entropy term with MNRL's arguments


@pytest.mark.parametrize("hardness_mode", HARDNESS_MODES)
def test_weight_and_hardness_add_on_one_logit(hardness_mode):
    """Logit of a negative = scale * sim + alpha * stop_grad(sim) + log w; the positive carries neither."""
    batch, num_neg, scale, alpha = 4, 2, 20.0, 3.0
    embeddings = _embeddings(batch, num_neg, seed=21)
    weights = torch.tensor([[0.5, 1.0], [1.0, 0.25], [0.0, 0.125], [1.0, 0.75]], dtype=torch.float64)
    labels = torch.cat([weights, torch.zeros(batch, num_neg, dtype=torch.float64)], 1)
    loss = CausalNegLoss(None, hardness_mode=hardness_mode, hardness_strength=alpha)
    out = loss.compute_loss_components(embeddings, labels)

    sims = cos_sim(embeddings[0], torch.cat(embeddings[1:]))  # (B, B * (1 + N)), [positives | neg_1 | neg_2]
    column = torch.arange(sims.size(1))
    own = (column % batch).unsqueeze(0) == torch.arange(batch).unsqueeze(1)
    negative = column >= batch
    selected = {
        None: torch.zeros_like(own),
        "in_batch_negatives": ~own,
        "hard_negatives": own & negative,
        "all_negatives": ~(own & ~negative),
    }[hardness_mode]
    log_w = torch.cat([torch.ones(batch, dtype=torch.float64), weights.T.reshape(-1)]).log()
    logits = sims * scale + alpha * sims.detach() * selected + log_w
    expected = F.cross_entropy(logits, torch.arange(batch))
    _assert_same_loss_and_grads(out["infonce"], expected, embeddings)


@pytest.mark.parametrize("hardness_mode", HARDNESS_MODES)
@pytest.mark.parametrize("directions", [("query_to_doc", "doc_to_doc"), ALL_DIRECTIONS], ids=["q2d+d2d", "all"])
def test_masked_negative_is_masked_in_every_direction(directions, hardness_mode):
    """A negative column with weight 0 in every row equals the dataset without it: in query_to_doc and in
    doc_to_doc, with or without hardness, loss and gradients (the masked negative gets none at all)."""
    embeddings = _embeddings(5, 3, seed=22)
    flags = [False, True, True]
    config = {"directions": directions, "hardness_mode": hardness_mode, "hardness_strength": 2.0}
    loss = CausalNegLoss(None, entropy_weight=0.5, **config)
    masked = loss.compute_loss_components(
        embeddings, torch.tensor([encode_negative_labels([0.7, 0.0, 1.0], flags)] * 5)
    )
    kept = [embeddings[i] for i in (0, 1, 2, 4)]
    removed = loss.compute_loss_components(kept, torch.tensor([encode_negative_labels([0.7, 1.0], [0, 1])] * 5))
    masked_total, removed_total = sum(masked.values()), sum(removed.values())
    torch.testing.assert_close(masked_total, removed_total, rtol=0, atol=1e-12)
    grads_masked = torch.autograd.grad(masked_total, embeddings)
    assert grads_masked[3].abs().max() == 0
    grads_removed = torch.autograd.grad(removed_total, kept)
    for a, b in zip([grads_masked[i] for i in (0, 1, 2, 4)], grads_removed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("config", MNRL_CONFIGS)
def test_weight_is_a_multiplicity_in_every_direction(config):
    """``+ log w`` reads w as a multiplicity wherever the document is a candidate: a negative column given twice
    at weight 0.5 is the same loss (and gradients) as given once at weight 1, in every direction and hardness
    mode. A weight applied in query_to_doc but not in doc_to_doc (or vice versa) would break this."""
    embeddings = _embeddings(4, 2, seed=23)
    once = CausalNegLoss(None, entropy_weight=0.0, **config).compute_loss_components(
        embeddings, torch.tensor([encode_negative_labels([0.8, 1.0], [0, 0])] * 4, dtype=torch.float64)
    )
    twice_inputs = [*embeddings, embeddings[3]]  # the same tensor: autograd sums the two copies' gradients
    twice = CausalNegLoss(None, entropy_weight=0.0, **config).compute_loss_components(
        twice_inputs, torch.tensor([encode_negative_labels([0.8, 0.5, 0.5], [0, 0, 0])] * 4, dtype=torch.float64)
    )
    _assert_same_loss_and_grads(twice["infonce"], once["infonce"], embeddings)


def test_entropy_term_is_the_querys_view_whatever_the_directions():
    """The entropy component and its gradient are bitwise the same for every direction / partition / hardness
    combination: it stays over each query's own generated negatives."""
    embeddings = _embeddings(5, 4, seed=24)
    weights = [[1.0, 0.6, 0.0, 0.9]] + [[1.0, 0.6, 0.8, 0.9]] * 4
    labels = torch.tensor([encode_negative_labels(w, [0, 0, 1, 1]) for w in weights], dtype=torch.float64)
    reference = CausalNegLoss(None).compute_loss_components(embeddings, labels)["entropy"]
    reference_grads = torch.autograd.grad(reference, embeddings, allow_unused=True)
    assert reference.item() != 0.0
    for param in MNRL_CONFIGS:
        entropy = CausalNegLoss(None, **param.values[0]).compute_loss_components(embeddings, labels)["entropy"]
        assert entropy.item() == reference.item(), param.id
        grads = torch.autograd.grad(entropy, embeddings, allow_unused=True)
        for a, b in zip(grads, reference_grads, strict=True):
            assert (a is None and b is None) or torch.equal(a, b), param.id


@pytest.mark.parametrize("similarity_fct", [cos_sim, dot_score])
def test_hardness_without_in_batch_negatives_weights_own_negatives(similarity_fct):
    """In the paper setting, "hard_negatives" and "all_negatives" both weight the row's own negatives (there is
    nothing else): a per-row softmax with ``alpha * stop_grad(sim) + log w`` on each negative."""
    batch, num_neg, scale, alpha = 4, 3, 20.0, 4.0
    embeddings = _embeddings(batch, num_neg, seed=25)
    weights = [[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.25, 1.0, 0.75], [0.0, 0.5, 1.0]]  # float32-exact
    weights = torch.tensor(weights, dtype=torch.float64)
    labels = torch.cat([weights, torch.zeros_like(weights)], 1)

    def expected():  # built afresh for each mode: comparing the gradients frees the graph
        queries, docs = embeddings[0], torch.stack(embeddings[1:], 1)
        if similarity_fct is cos_sim:
            queries, docs = F.normalize(queries, dim=-1), F.normalize(docs, dim=-1)
        sims = torch.einsum("bd,bkd->bk", queries, docs)
        bias = torch.cat([torch.zeros(batch, 1, dtype=sims.dtype), alpha * sims.detach()[:, 1:] + weights.log()], 1)
        return F.cross_entropy(sims * scale + bias, torch.zeros(batch, dtype=torch.long))

    for mode in ("hard_negatives", "all_negatives"):
        loss = CausalNegLoss(
            None, similarity_fct=similarity_fct, hardness_mode=mode, hardness_strength=alpha, in_batch_negatives=False
        )
        ours = loss.compute_loss_components(embeddings, labels)["infonce"]
        _assert_same_loss_and_grads(ours, expected(), embeddings)


# Validation, configuration, citations, positional drop-in


INVALID_MNRL_ARGUMENTS = [
    {"scale": 0.0},
    {"directions": ()},
    {"directions": ("query_to_doc", "doc_to_nowhere")},
    {"directions": ("doc_to_query",)},
    {"partition_mode": "separate"},
    {"directions": ("query_to_doc", "query_to_query"), "partition_mode": "per_direction"},
    {"hardness_mode": "hardest"},
    {"hardness_mode": "hard_negatives", "hardness_strength": -1.0},
]


@pytest.mark.parametrize("kwargs", INVALID_MNRL_ARGUMENTS, ids=lambda kwargs: "-".join(map(str, kwargs.values())))
def test_rejects_what_mnrl_rejects_with_its_message(kwargs, eval_model):
    with pytest.raises(ValueError) as theirs:
        MultipleNegativesRankingLoss(None, **kwargs)
    # MNRL's message first (ours may go on to say what to change); a set in it may print in another order
    sets = r"\{[^}]*\}"
    pattern = "^" + sets.join(re.escape(part) for part in re.split(sets, str(theirs.value).rstrip(".")))
    with pytest.raises(ValueError, match=pattern):
        CausalNegLoss(None, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        CachedCausalNegLoss(eval_model, **kwargs)


def test_zero_hardness_strength_warns_like_mnrl(caplog):
    with caplog.at_level(logging.WARNING):
        CausalNegLoss(None, hardness_mode="hard_negatives")
    assert "hardness_strength=0.0, so hardness weighting has no effect" in caplog.text


def test_in_batch_off_rejects_what_needs_other_rows():
    with pytest.raises(ValueError, match=r"\['doc_to_query'\].*set in_batch_negatives=True"):
        CausalNegLoss(None, directions=("query_to_doc", "doc_to_query"), in_batch_negatives=False)
    with pytest.raises(ValueError, match="hardness_mode='hard_negatives'"):
        CausalNegLoss(None, hardness_mode="in_batch_negatives", hardness_strength=9.0, in_batch_negatives=False)


MNRL_KWARGS = {
    "scale": 25.0,
    "directions": ALL_DIRECTIONS,
    "partition_mode": "joint",
    "hardness_mode": "hard_negatives",
    "hardness_strength": 5.0,
}


def test_config_records_every_mnrl_argument(eval_model):
    """get_config_dict (what the model card records) holds MNRL's / CachedMNRL's config, item for item."""
    ours = CausalNegLoss(None, **MNRL_KWARGS).get_config_dict()
    assert MultipleNegativesRankingLoss(None, **MNRL_KWARGS).get_config_dict().items() <= ours.items()
    cached_kwargs = {**MNRL_KWARGS, "mini_batch_size": 4, "mini_batch_num_tokens": 64}
    cached = CachedCausalNegLoss(eval_model, **cached_kwargs)
    theirs = CachedMultipleNegativesRankingLoss(eval_model, **cached_kwargs).get_config_dict()
    assert theirs.items() <= cached.get_config_dict().items()
    json.dumps(ours), json.dumps(cached.get_config_dict())
    cached.hardness_strength = 7.0  # assignment reaches the wrapped loss, as in CachedMNRL
    assert cached.loss.hardness_strength == 7.0 and cached.get_config_dict()["hardness_strength"] == 7.0


def test_citation_names_the_variant_in_use():
    assert "lan2025llave" not in CausalNegLoss(None).citation
    gte = CausalNegLoss(None, directions=ALL_DIRECTIONS, hardness_mode="hard_negatives", hardness_strength=5.0)
    assert "2606.01304" in gte.citation and "2308.03281" in gte.citation and "2509.20354" in gte.citation
    jina = CausalNegLoss(None, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    assert "2310.19923" in jina.citation
    assert "2503.04812" in CausalNegLoss(None, hardness_mode="in_batch_negatives", hardness_strength=9.0).citation


def test_positional_arguments_are_mnrls(eval_model):
    """Same positions as MNRL and CachedMNRL (a positional call site is a drop-in too)."""
    plain_args = (20.0, dot_score, False, ("query_to_doc", "doc_to_query"), "per_direction", "all_negatives", 2.0)
    assert (
        MultipleNegativesRankingLoss(None, *plain_args).get_config_dict().items()
        <= CausalNegLoss(None, *plain_args).get_config_dict().items()
    )
    cached_args = (20.0, cos_sim, 8, 100, False, ALL_DIRECTIONS, "joint", True, "hard_negatives", 5.0)
    cached = CachedCausalNegLoss(eval_model, *cached_args)
    theirs = CachedMultipleNegativesRankingLoss(eval_model, *cached_args)
    assert theirs.get_config_dict().items() <= cached.get_config_dict().items()
    assert cached.show_progress_bar is True
    with pytest.raises(ValueError, match="mini_batch_size must be a positive int, got True"):
        CachedCausalNegLoss(eval_model, 20.0, cos_sim, True)
    with pytest.raises(ValueError, match="mini_batch_num_tokens"):
        CachedCausalNegLoss(eval_model, mini_batch_num_tokens=0)
