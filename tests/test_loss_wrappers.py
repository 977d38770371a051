"""CausalNegLoss where MNRL goes: inside MatryoshkaLoss, Matryoshka2dLoss and AdaptiveLayerLoss, with labels it does
not own, with ``.backward()`` on its scalar, in real SentenceTransformerTrainer runs on the tiny model."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.base.model_card import generate_model_card
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.losses import (
    AdaptiveLayerLoss,
    CachedMultipleNegativesRankingLoss,
    Matryoshka2dLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from negsynth_hf.diagnostics import GapDiagnosticsCallback, LossComponentsCallback
from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import CachedCausalNegLoss, CausalNegLoss

QUERIES = [f"question {i} about topic {i % 3}" for i in range(6)]
# the positive, then 3 negative columns
DOCS = [[f"text {i} kind {j} mentioning topic {(i + j) % 4}" for i in range(6)] for j in range(4)]


@pytest.fixture
def eval_model(tiny_model_path):
    model = SentenceTransformer(tiny_model_path)
    model.eval()  # dropout off: both sides of a comparison see the same embeddings
    return model


def _dims(model) -> list[int]:
    dim = model.get_embedding_dimension()
    return [dim, dim // 2, dim // 4]


def _wrap(wrapper: str, model, loss):
    if wrapper == "matryoshka":
        return MatryoshkaLoss(model, loss, _dims(model), matryoshka_weights=[1.0, 0.5, 0.25])
    if wrapper == "matryoshka2d":
        return Matryoshka2dLoss(model, loss, _dims(model), n_layers_per_step=-1)
    return AdaptiveLayerLoss(model, loss, n_layers_per_step=-1)


def _features(model):
    return [model.tokenize(texts) for texts in (QUERIES, *DOCS)]


def _labels(weights=(1.0, 0.6, 0.0), generated=(False, True, True)) -> torch.Tensor:
    return torch.tensor([encode_negative_labels(list(weights), list(generated))] * len(QUERIES))


def _step(loss, model, labels):
    """One forward + backward of ``loss``: its value and the parameter gradients."""
    model.zero_grad()
    random.seed(0)  # the wrappers' dimension / layer sampling
    total = loss(_features(model), labels)
    assert isinstance(total, torch.Tensor) and total.dim() == 0
    total.backward()
    return total.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


CASES = [
    pytest.param("matryoshka", False, id="matryoshka"),
    pytest.param("matryoshka", True, id="matryoshka-cached"),
    pytest.param("matryoshka2d", False, id="matryoshka2d"),
    pytest.param("adaptive_layer", False, id="adaptive_layer"),
]


@pytest.mark.parametrize(("wrapper", "cached"), CASES)
def test_wrapped_equals_the_same_wrapper_around_mnrl(eval_model, wrapper, cached):
    """Unit weights and entropy_weight=0: the wrapper's value and gradients are those of the wrapper around
    (Cached)MNRL on the same batch; the weight-layout labels reach the loss and change nothing here."""
    if cached:
        ours = CachedCausalNegLoss(eval_model, mini_batch_size=4, entropy_weight=0.0)
        theirs = CachedMultipleNegativesRankingLoss(eval_model, mini_batch_size=4)
    else:
        ours, theirs = CausalNegLoss(eval_model, entropy_weight=0.0), MultipleNegativesRankingLoss(eval_model)
    ours_value, ours_grads = _step(_wrap(wrapper, eval_model, ours), eval_model, _labels(weights=(1.0, 1.0, 1.0)))
    theirs_value, theirs_grads = _step(_wrap(wrapper, eval_model, theirs), eval_model, None)
    torch.testing.assert_close(ours_value, theirs_value, rtol=0, atol=1e-6)
    assert ours_grads.keys() == theirs_grads.keys() and len(ours_grads) > 10
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, theirs_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("cached", [False, True])
def test_matryoshka_applies_weights_and_entropy_at_every_dimension(eval_model, cached):
    """The wrapped value is sum_d w_d * loss(shrunk embeddings, labels): the gap weights (a masked column, a
    fractional one) and the entropy term over the generated columns apply at every dimension."""
    kwargs = {"entropy_weight": 0.5}
    base = (
        CachedCausalNegLoss(eval_model, mini_batch_size=4, **kwargs) if cached else CausalNegLoss(eval_model, **kwargs)
    )
    labels = _labels()
    wrapped = MatryoshkaLoss(eval_model, base, _dims(eval_model), matryoshka_weights=[1.0, 0.5, 0.25])
    value, _ = _step(wrapped, eval_model, labels)

    reference_loss = CausalNegLoss(eval_model, **kwargs)
    with torch.no_grad():
        full = [eval_model(features)["sentence_embedding"] for features in _features(eval_model)]
        reference, entropies = 0.0, []
        for dim, weight in zip(_dims(eval_model), [1.0, 0.5, 0.25], strict=True):
            shrunk = [F.normalize(embedding[:, :dim], dim=-1) for embedding in full]
            reference += weight * reference_loss.compute_loss_from_embeddings(shrunk, labels)
            entropies.append(reference_loss.last_components["entropy"])
        unweighted = sum(
            w * reference_loss.compute_loss_from_embeddings([F.normalize(e[:, :d], dim=-1) for e in full], None)
            for d, w in zip(_dims(eval_model), [1.0, 0.5, 0.25], strict=True)
        )
    torch.testing.assert_close(value, reference, rtol=0, atol=1e-5)
    assert all(entropy != 0 for entropy in entropies)
    assert abs(value - unweighted) > 1e-3  # the labels made a difference
    if cached:  # one forward, one calculate_loss call per dimension: its components are their mean
        torch.testing.assert_close(base.last_components["entropy"], torch.stack(entropies).mean(), rtol=0, atol=1e-5)


def test_adaptive_layer_passes_the_weight_labels_on(eval_model):
    """AdaptiveLayerLoss hands the labels to every layer's call: weights and the entropy term change its value."""
    loss = _wrap("adaptive_layer", eval_model, CausalNegLoss(eval_model, entropy_weight=0.5))
    with_weights, _ = _step(loss, eval_model, _labels())
    unit, _ = _step(loss, eval_model, _labels(weights=(1.0, 1.0, 1.0)))
    no_entropy, _ = _step(loss, eval_model, _labels(weights=(1.0, 1.0, 1.0), generated=(False, False, False)))
    assert len({round(float(v), 6) for v in (with_weights, unit, no_entropy)}) == 3


def test_cached_loss_in_adaptive_layer_warns_like_cached_mnrl(eval_model):
    """AdaptiveLayerLoss does not support GradCache losses; it says so for ours as for CachedMNRL."""
    with pytest.warns(UserWarning, match="not compatible with CachedMultipleNegativesRankingLoss"):
        AdaptiveLayerLoss(eval_model, CachedMultipleNegativesRankingLoss(eval_model))
    with pytest.warns(UserWarning, match="not compatible with CachedCausalNegLoss"):
        AdaptiveLayerLoss(eval_model, CachedCausalNegLoss(eval_model))


# ------------------------------------------------------------------------------------------ trainer runs
TOPICS = ["rivers", "volcanoes", "glaciers", "deserts", "forests", "oceans", "islands", "canyons"]


def _ntuple(rows: int = 8) -> Dataset:
    data: dict[str, list] = {k: [] for k in ("anchor", "positive", "negative_1", "negative_2", "labels")}
    for i in range(rows):
        topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i + 3) % len(TOPICS)]
        data["anchor"].append(f"how are {topic} formed question {i}")
        data["positive"].append(f"{topic} are formed by slow natural processes, fact {i}")
        data["negative_1"].append(f"{other} attract many tourists every summer, note {i}")  # mined
        data["negative_2"].append(f"{topic} appear in many old songs and poems, line {i}")  # generated
        data["labels"].append(encode_negative_labels([1.0, 0.0 if i == 2 else 0.8], [False, True]))
    return Dataset.from_dict(data)


def _args(tmp_path, **overrides) -> SentenceTransformerTrainingArguments:
    settings = {
        "output_dir": str(tmp_path),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "batch_sampler": BatchSamplers.NO_DUPLICATES,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        **overrides,
    }
    return SentenceTransformerTrainingArguments(**settings)


@pytest.mark.parametrize(("wrapper", "cached"), CASES)
def test_trainer_trains_each_wrapper_and_logs_the_components(tiny_model, tmp_path, wrapper, cached):
    torch.manual_seed(0)
    kwargs = {"entropy_weight": 0.5}
    base = (
        CachedCausalNegLoss(tiny_model, mini_batch_size=2, **kwargs) if cached else CausalNegLoss(tiny_model, **kwargs)
    )
    loss = _wrap(wrapper, tiny_model, base)
    before = [p.detach().clone() for p in tiny_model.parameters()]
    trainer = SentenceTransformerTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=_ntuple(), loss=loss)
    components = LossComponentsCallback(loss).attach(trainer)  # given the wrapper, it finds the base loss
    gap = GapDiagnosticsCallback(loss, spectrum_every_eval=False).attach(trainer)
    assert components.loss is base and gap.loss is base
    trainer.train()

    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2
    for log in logs:
        assert math.isfinite(log["loss"]) and math.isfinite(log["infonce"]) and log["entropy"] != 0.0
        assert "gap/h_gen_norm" in log
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters(), strict=True))


def test_logged_components_sum_to_the_loss_and_appear_in_evaluation(tiny_model, tmp_path):
    """Unwrapped, one call per step: the logged infonce + entropy is the logged loss; eval forwards go to
    eval_infonce / eval_entropy, as the trainer's own component logging named them."""
    torch.manual_seed(0)
    loss = CausalNegLoss(tiny_model, entropy_weight=0.5)
    args = _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, train_dataset=_ntuple(), eval_dataset=_ntuple(4), loss=loss
    )
    LossComponentsCallback(loss).attach(trainer)
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 4
    for log in train_logs:
        assert log["loss"] == pytest.approx(log["infonce"] + log["entropy"], abs=2e-3)
    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    assert len(eval_logs) == 2
    for log in eval_logs:
        assert log["eval_loss"] == pytest.approx(log["eval_infonce"] + log["eval_entropy"], abs=1e-4)


def _pairs_with_score(rows: int = 8) -> Dataset:
    return Dataset.from_dict(
        {
            "sentence1": [f"a sentence about {TOPICS[i % 8]} number {i}" for i in range(rows)],
            "sentence2": [f"another sentence on {TOPICS[i % 8]} item {i}" for i in range(rows)],
            "score": [0.1 * (i % 10) for i in range(rows)],
        }
    )


def test_a_score_column_is_ignored_as_mnrl_ignores_it(tiny_model_path, tmp_path):
    """An STS-style float score column reaches the loss as (batch,) labels: one warning naming the shape, and the
    run is exactly the run without the column."""
    trained = []
    for with_score in (True, False):
        model = SentenceTransformer(tiny_model_path)
        torch.manual_seed(0)
        dataset = _pairs_with_score() if with_score else _pairs_with_score().remove_columns("score")
        loss = CausalNegLoss(model)
        trainer = SentenceTransformerTrainer(
            model=model, args=_args(tmp_path / str(with_score)), train_dataset=dataset, loss=loss
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train()
        ignored = [w for w in caught if "ignores the label tensor" in str(w.message)]
        assert len(ignored) == (1 if with_score else 0)
        if with_score:
            assert "shape (4,)" in str(ignored[0].message)
        trained.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*trained, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_model_card_and_config_record_the_loss_settings(tiny_model, tmp_path):
    loss = CausalNegLoss(tiny_model, entropy_weight=0.25, use_weights="mask")
    trainer = SentenceTransformerTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=_ntuple(), loss=loss)
    trainer.train()
    card = generate_model_card(tiny_model)
    assert "CausalNegLoss" in card and '"entropy_weight": 0.25' in card and '"use_weights": "mask"' in card
    wrapped = MatryoshkaLoss(tiny_model, loss, _dims(tiny_model))
    assert wrapped.get_config_dict()["loss"] == "CausalNegLoss"  # sentence-transformers names the wrapped loss
    assert wrapped.loss.get_config_dict()["entropy_weight"] == 0.25
