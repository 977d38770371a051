"""Shared fixtures: tiny models built in code (milliseconds), and the embedded ones where realism matters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from negsynth_hf.testing import build_tiny_sentence_transformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


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

    # the tests' default: the collections beside the checkout (the library has none)
    path = shared_data_dir(default=Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (path / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"judged collections not found at {path} (set NEGSYNTH_DATA_DIR)")
    return path


@pytest.fixture
def recipe_env(tmp_path, shared_data) -> dict[str, str]:
    """Environment of a recipe subprocess: offline, the judged collections, a fresh cache, one BLAS thread."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "NEGSYNTH_DATA_DIR": str(shared_data),
        "NEGSYNTH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
