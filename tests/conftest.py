"""Shared fixtures: tiny models built in code (milliseconds), and the embedded ones where realism matters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


def build_tiny_sentence_transformer(folder: Path, *, seed: int = 0, hidden: int = 32):
    """A 2-layer BERT (hidden 32) with the MiniLM tokenizer, mean pooling and normalization, saved to ``folder``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    from negsynth_hf.paths import embedded_retriever_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_retriever_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    hf_dir = folder / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), Normalize()])
    model.save(str(folder / "st"))
    return SentenceTransformer(str(folder / "st"))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-st")
    build_tiny_sentence_transformer(folder)
    return str(folder / "st")


@pytest.fixture
def tiny_model(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_model_path)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from negsynth_hf.paths import embedded_retriever_path

    return str(embedded_retriever_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from negsynth_hf.paths import shared_data_dir

    path = shared_data_dir()
    if not (path / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"judged collections not found at {path} (set NEGSYNTH_DATA_DIR)")
    return path
