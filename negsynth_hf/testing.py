"""Tiny models built in code, for tests and benchmarks (milliseconds to build, no download)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_sentence_transformer(
    folder: str | Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    intermediate: int | None = None,
    max_seq_length: int = 64,
):
    """A 2-layer BERT with the embedded MiniLM tokenizer, mean pooling and normalization, saved to ``folder/st``.

    Returns the reloaded :class:`~sentence_transformers.SentenceTransformer`.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    from negsynth_hf.paths import embedded_retriever_path

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_retriever_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=intermediate or hidden * 2,
        max_position_embeddings=512,
    )
    hf_dir = folder / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), Normalize()])
    model.save(str(folder / "st"))
    return SentenceTransformer(str(folder / "st"))
