"""The one text encoder: normalized embeddings with the model's query/document prompts, each text once.

``build_dataset`` (verification, probe features) and ``diagnose`` both read a retriever's view through it, so
both see exactly the vectors mining saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def embed_texts(
    model: Any,
    texts: Sequence[str],
    *,
    query: bool,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    known: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``{text: embedding}`` for the distinct ``texts`` (queries with ``encode_query``, documents with
    ``encode_document``, when the model has them), reusing the vectors in ``known`` (what mining computed)."""
    known = known or {}
    out = {t: known[t] for t in texts if t in known}
    todo = list(dict.fromkeys(t for t in texts if t not in out))
    if todo:
        encode = getattr(model, "encode_query" if query else "encode_document", None) or model.encode
        emb = encode(
            todo,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress_bar,
        )
        out.update(zip(todo, np.asarray(emb, dtype=np.float32), strict=True))
    return out


def embed_rows(model: Any, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
    """One row per text (a text repeated gets its one vector again): :func:`embed_texts` as a matrix."""
    table = embed_texts(model, texts, **kwargs)
    if not table:
        return np.zeros((len(texts), 0), dtype=np.float32)
    return np.stack([table[t] for t in texts])


def weights_fingerprint(model: Any) -> str:
    """A digest of what decides ``model``'s embeddings: every ``state_dict`` tensor (name, dtype, shape, bytes),
    the module stack's ``repr`` (pooling, normalization, sequence length) and its prompts.

    Two models with the same name but different weights (fine-tuned, retrained, perturbed) never share it, so
    it can key cached embeddings. It reads every parameter once (a copy per tensor only off the CPU).
    """
    import torch

    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(model).encode())
    digest.update(repr(sorted((getattr(model, "prompts", None) or {}).items())).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1).contiguous()
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).cpu().numpy().data)
    return digest.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """A digest of ``folder``'s files (relative path, size, ``mtime_ns``): a model saved again in place, even
    under the same name, gets a new one; reading it costs one ``stat`` per file."""
    root = Path(folder).resolve()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
