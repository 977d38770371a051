"""train(): loss choice and column selection, LoRA adapter + merged model that reload to the same embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.recipe_config import TrainConfig
from negsynth_hf.training import (
    SUMMARY_FILE,
    TrainResult,
    has_adapter,
    ir_evaluator,
    make_loss,
    merge_lora,
    mined_negative_columns,
    subset_corpus,
    train,
    training_arguments,
    training_columns,
)

PROBE = ["a claim about vitamin d and bone density", "transformer models for retrieval", "zzz unrelated text"]


def ntuple(n: int = 16, *, mixed: bool = False) -> Dataset:
    """anchor, positive, negative_1 (mined), negative_2 (generated), labels, plus a metadata column."""
    labels = []
    for i in range(n):
        flags = [True, False] if (mixed and i % 2) else [False, True]
        labels.append(encode_negative_labels([1.0, 0.5 if i % 3 else 0.0], flags))
    return Dataset.from_dict(
        {
            "query_id": [str(i) for i in range(n)],
            "anchor": [f"question {i} about subject {i % 5} and detail {i * 7}" for i in range(n)],
            "positive": [f"passage {i} answering subject {i % 5} with detail {i * 7}" for i in range(n)],
            "negative_1": [f"mined passage {i} on subject {(i + 1) % 5}" for i in range(n)],
            "negative_2": [f"generated passage {i} with a changed detail {i * 11}" for i in range(n)],
            "labels": labels,
        }
    )


def config(**kw) -> TrainConfig:
    base = dict(max_steps=2, per_device_train_batch_size=8, learning_rate=5e-2, logging_steps=1, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_training_columns_per_loss():
    ds = ntuple()
    assert training_columns(ds, "causalneg").column_names == [
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
        "labels",
    ]
    assert training_columns(ds, "mined").column_names == ["anchor", "positive", "negative_1"]
    assert training_columns(ds, "in_batch").column_names == ["anchor", "positive"]
    with pytest.raises(ValueError, match="lacks"):
        training_columns(ds.remove_columns("positive"), "causalneg")


def test_mined_columns_need_one_source_per_column():
    assert mined_negative_columns(ntuple()) == ["negative_1"]
    with pytest.raises(ValueError, match="mined negatives in some rows and generated ones in others"):
        mined_negative_columns(ntuple(mixed=True))
    no_labels = ntuple().remove_columns("labels")
    assert mined_negative_columns(no_labels) == ["negative_1", "negative_2"]


def test_make_loss_passes_the_switches(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from negsynth_hf.losses import CachedCausalNegLoss, CausalNegLoss

    loss = make_loss(
        tiny_model, config(loss="causalneg", entropy_weight=0.0, use_weights="none", in_batch_negatives=False)
    )
    assert isinstance(loss, CausalNegLoss)
    cfg = loss.get_config_dict()
    assert cfg["entropy_weight"] == 0.0 and cfg["use_weights"] == "none" and cfg["in_batch_negatives"] is False
    cached = make_loss(tiny_model, config(loss="cached_causalneg", mini_batch_size=4))
    assert isinstance(cached, CachedCausalNegLoss) and cached.mini_batch_size == 4
    assert type(make_loss(tiny_model, config(loss="mined"))) is MultipleNegativesRankingLoss
    assert make_loss(tiny_model, config(loss="in_batch", scale=10.0)).scale == 10.0
    hard = {"hardness_mode": "hard_negatives", "hardness_strength": 5.0}  # EmbeddingGemma's, on either loss
    for name in ("mined", "causalneg"):
        got = make_loss(tiny_model, config(loss=name, **hard)).get_config_dict()
        assert {k: got[k] for k in hard} == hard
    assert make_loss(tiny_model, config(loss="mined")).get_config_dict()["hardness_mode"] is None


def test_training_arguments_use_no_duplicates(tmp_path):
    from sentence_transformers.base.sampler import BatchSamplers

    args = training_arguments(config(eval_steps=5), output_dir=tmp_path, with_evaluator=True)
    assert args.batch_sampler == BatchSamplers.NO_DUPLICATES
    assert args.eval_strategy == "steps" and args.eval_steps == 5
    assert training_arguments(config(), output_dir=tmp_path).eval_strategy == "no"


def test_lora_train_saves_adapter_and_merged_that_reload_identically(tiny_model_path, tmp_path):
    model = SentenceTransformer(tiny_model_path)
    base_emb = model.encode(PROBE, convert_to_numpy=True)
    result = train(ntuple(), base_model=tiny_model_path, config=config(), output_dir=tmp_path / "out", model=model)

    assert result.steps == 2 and result.loss_name == "CausalNegLoss"
    assert result.loss_config["entropy_weight"] == 0.05
    assert "infonce" in json.dumps(result.log_history)  # the loss's named components are logged
    assert not has_adapter(model)  # merged in memory after saving the adapter
    mem = model.encode(PROBE, convert_to_numpy=True)
    assert not np.allclose(mem, base_emb, atol=1e-4), "training changed nothing"

    merged = SentenceTransformer(result.merged_dir)
    np.testing.assert_allclose(merged.encode(PROBE, convert_to_numpy=True), mem, atol=1e-5)
    assert not (tmp_path / "out" / "merged" / "adapter_config.json").exists()

    adapter_cfg = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["target_modules"] and set(adapter_cfg["target_modules"]) == {"query", "value"}
    reloaded = SentenceTransformer(tiny_model_path)
    reloaded.load_adapter(result.adapter_dir)
    np.testing.assert_allclose(reloaded.encode(PROBE, convert_to_numpy=True), mem, atol=1e-5)

    summary = TrainResult.load(tmp_path / "out")
    assert summary.adapter_dir == result.adapter_dir and summary.hyperparameters["lora_r"] == 8
    assert (tmp_path / "out" / SUMMARY_FILE).is_file()


def test_train_without_saving_writes_no_model_and_merges_in_memory(tiny_model_path, tmp_path):
    model = SentenceTransformer(tiny_model_path)
    base_emb = model.encode(PROBE, convert_to_numpy=True)
    out = tmp_path / "out"
    result = train(ntuple(), base_model=tiny_model_path, config=config(), output_dir=out, model=model, save=False)
    assert result.merged_dir is None and result.adapter_dir is None and result.steps == 2
    assert not has_adapter(model)  # merged, so the in-memory model is the trained one, ready to evaluate
    assert not np.allclose(model.encode(PROBE, convert_to_numpy=True), base_emb, atol=1e-4)
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in written if p.suffix in (".safetensors", ".bin") or p.name == SUMMARY_FILE], written


@pytest.mark.parametrize("loss", ["in_batch", "mined"])
def test_baselines_train(tiny_model_path, tmp_path, loss):
    result = train(ntuple(), base_model=tiny_model_path, config=config(loss=loss, max_steps=1), output_dir=tmp_path)
    assert result.loss_name == "MultipleNegativesRankingLoss" and result.steps == 1


def test_full_finetune_has_no_adapter(tiny_model_path, tmp_path):
    result = train(ntuple(), base_model=tiny_model_path, config=config(lora=False, max_steps=1), output_dir=tmp_path)
    assert result.adapter_dir is None
    assert SentenceTransformer(result.merged_dir).encode(PROBE).shape == (3, 32)


def test_validation_evaluator_scores_before_and_after(tiny_model_path, tmp_path):
    ds = ntuple()
    queries = {str(i): ds[i]["anchor"] for i in range(4)}
    corpus = {f"d{i}": ds[i]["positive"] for i in range(16)}
    relevant = {str(i): {f"d{i}"} for i in range(4)}
    evaluator = ir_evaluator(queries, corpus, relevant, name="val")
    result = train(ds, base_model=tiny_model_path, config=config(), output_dir=tmp_path, evaluator=evaluator)
    assert "val_cosine_ndcg@10" in result.validation_before and "val_cosine_ndcg@10" in result.validation_after


def test_subset_corpus_keeps_judged_documents():
    corpus = {f"d{i}": f"text {i}" for i in range(100)}
    relevant = {"q": {"d5", "d77", "missing"}}
    sub = subset_corpus(corpus, relevant, corpus_size=10, seed=1)
    assert len(sub) == 10 and {"d5", "d77"} <= set(sub)
    assert sub == subset_corpus(corpus, relevant, corpus_size=10, seed=1)
    assert subset_corpus(corpus, relevant, corpus_size=None) == corpus


def test_merge_lora_is_a_noop_without_adapter(tiny_model):
    before = tiny_model.encode(PROBE)
    merge_lora(tiny_model)
    np.testing.assert_allclose(tiny_model.encode(PROBE), before)
    assert torch.is_tensor(next(tiny_model.parameters()))


def test_known_positives_batch_the_training_run(tiny_model_path, tmp_path, monkeypatch):
    """train(known_positives=...) batches with KnownPositivesBatchSampler: row 0's relevant documents (rows 1-7's
    positives) never share its batch."""
    from negsynth_hf.sampler import KnownPositivesBatchSampler

    data = ntuple()
    known = [[p] for p in data["positive"]]
    known[0] += data["positive"][1:8]
    seen: list[list[int]] = []
    original = KnownPositivesBatchSampler.__iter__

    def spy(self):
        for batch in original(self):
            seen.append(list(batch))
            yield batch

    monkeypatch.setattr(KnownPositivesBatchSampler, "__iter__", spy)
    result = train(
        data, base_model=tiny_model_path, config=config(), output_dir=tmp_path, known_positives=known, save=False
    )
    assert result.steps == 2 and seen
    batch_with_0 = next(b for b in seen if 0 in b)
    assert not set(batch_with_0) & set(range(1, 8))
    with pytest.raises(ValueError, match="known_positives has 3 rows"):
        train(data, base_model=tiny_model_path, config=config(), output_dir=tmp_path, known_positives=known[:3])
