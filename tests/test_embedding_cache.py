"""Cached mining embeddings belong to the weights that made them, not to a model's name or folder path.

A model fine-tuned from MiniLM keeps MiniLM as ``model_card_data.base_model``, and a folder retrained in place
keeps its path: neither may read the embeddings cached for the earlier weights. Real builds (tiny model built in
code, mined-only) with a real cache folder; the weights change in place as a training step would change them.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from negsynth_hf import build_dataset
from negsynth_hf.embeddings import folder_fingerprint, weights_fingerprint

PAIRS = {
    "anchor": [f"what does study {i} report about vitamin d and bone density?" for i in range(6)],
    "positive": [f"study {i}: vitamin d supplements raised bone density in cohort {i}." for i in range(6)],
}
CORPUS = [f"report {i} on insulin resistance and topic {i % 4} in adults" for i in range(24)]


def _similarities(retriever, cache_dir) -> list[float]:
    """Each row's query-positive cosine as the build recorded it (from the embeddings mining made or cached)."""
    result = build_dataset(
        Dataset.from_dict(PAIRS), corpus=CORPUS, retriever=retriever, generator=None, num_mined=2,
        relative_margin=None, cache_dir=str(cache_dir), show_progress_bar=False,
    )  # fmt: skip
    prov = result.provenance
    return [round(s, 6) for s, src in zip(prov["sim_query_positive"], prov["source"], strict=True) if src == "mined"]


def _perturb(model: SentenceTransformer) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))


def _cached_models(cache_dir) -> int:
    return len(list((cache_dir / "embeddings").iterdir()))


def test_in_memory_model_changed_in_place_does_not_read_stale_embeddings(tmp_path, tiny_model):
    tiny_model.model_card_data.base_model = "sentence-transformers/all-MiniLM-L6-v2"  # as after fine-tuning MiniLM
    cache = tmp_path / "cache"
    before = _similarities(tiny_model, cache)
    assert _similarities(tiny_model, cache) == before and _cached_models(cache) == 1  # same weights: cache hit
    _perturb(tiny_model)
    after = _similarities(tiny_model, cache)
    assert after != before
    assert after == _similarities(tiny_model, tmp_path / "fresh")  # what an empty cache gives
    assert _cached_models(cache) == 2


def test_folder_retrained_in_place_does_not_read_stale_embeddings(tmp_path, tiny_model):
    folder, cache = tmp_path / "retriever", tmp_path / "cache"
    tiny_model.save(str(folder))
    before = _similarities(str(folder), cache)
    assert _similarities(str(folder), cache) == before and _cached_models(cache) == 1
    _perturb(tiny_model)
    tiny_model.save(str(folder))  # same path, same file names and sizes, new weights
    after = _similarities(str(folder), cache)
    assert after != before
    assert after == _similarities(str(folder), tmp_path / "fresh")


def test_fingerprints_follow_the_weights_not_the_name(tmp_path, tiny_model):
    key = weights_fingerprint(tiny_model)
    assert weights_fingerprint(tiny_model) == key
    tiny_model.model_card_data.base_model = "another/name"
    assert weights_fingerprint(tiny_model) == key  # the name is not part of it
    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(tiny_model) != key
    tiny_model.save(str(tmp_path / "m"))
    folder_key = folder_fingerprint(tmp_path / "m")
    assert folder_fingerprint(tmp_path / "m") == folder_key
    (tmp_path / "m" / "model.safetensors").touch()
    assert folder_fingerprint(tmp_path / "m") != folder_key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weights_fingerprint_reads_half_precision(tiny_model, dtype):
    assert weights_fingerprint(tiny_model.to(dtype)) != weights_fingerprint(tiny_model.to(torch.float32))
