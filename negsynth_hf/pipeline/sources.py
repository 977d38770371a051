"""The judged collection a config names: a local BEIR folder or BEIR-style Hub datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from negsynth_hf.pipeline.config import ConfigError, DataConfig, RecipeConfig


def load_collection(data: DataConfig) -> Any:
    """The judged collection named by ``data`` (local BEIR folder, or BEIR-style Hub datasets)."""
    if data.source == "hub":
        try:
            return load_hub_collection(data)
        except (OSError, ValueError, KeyError) as err:  # no network, an unknown id, a dataset of another layout
            raise ConfigError(
                f"data.dataset={data.dataset!r} (source: hub) could not be read: {type(err).__name__}: {str(err).rstrip('.')}. "
                "Check the dataset id and the network, or use a local BEIR folder (data.source: local)."
            ) from None
    from negsynth_hf.data import load_beir
    from negsynth_hf.paths import shared_data_dir

    folder = Path(data.dataset)
    if not folder.is_dir():
        try:
            root = shared_data_dir(data.data_dir)
        except ValueError as err:
            raise ConfigError(
                f"data.dataset={data.dataset!r} is neither a folder nor a collection under a folder of collections: "
                "none is set. Set data.data_dir (--data_dir) or $NEGSYNTH_DATA_DIR to the folder that holds it."
            ) from err
        folder = root / data.dataset
    if not folder.is_dir():
        raise ConfigError(
            f"data.dataset={data.dataset!r} is neither a folder nor a collection under {folder.parent} "
            "(set data.data_dir or $NEGSYNTH_DATA_DIR, give a BEIR-layout folder, or use data.source: hub)."
        )
    try:
        return load_beir(folder, splits=sorted({data.train_split, data.test_split}))
    except (ValueError, OSError) as err:  # the reader names the file and line; say what to do about it
        raise ConfigError(
            f"{err} Fix that file, or point data.dataset at another BEIR-layout folder "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."
        ) from None


def load_hub_collection(data: DataConfig) -> Any:
    """BEIR-style Hub datasets: ``<id>`` with configs ``corpus``/``queries`` and ``<id>-qrels`` with splits.

    Needs the network (untested offline). Same BeirCollection as the local path, so every later step is shared.
    """
    from datasets import load_dataset

    from negsynth_hf.data import BeirCollection

    corpus_ds = load_dataset(data.dataset, "corpus", split="corpus")
    queries_ds = load_dataset(data.dataset, "queries", split="queries")
    qrels_id = data.qrels_dataset or f"{data.dataset}-qrels"
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in sorted({data.train_split, data.test_split}):
        table: dict[str, dict[str, int]] = {}
        for row in load_dataset(qrels_id, split=split):
            score = int(float(row["score"]))
            if score > 0:
                table.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = score
        qrels[split] = table
    return BeirCollection(
        name=data.dataset.split("/")[-1],
        corpus={str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""} for r in corpus_ds},
        queries={str(r["_id"]): r.get("text") or "" for r in queries_ds},
        qrels=qrels,
    )


def source_dataset_ids(cfg: RecipeConfig) -> list[str] | None:
    """The Hub ids of the source collection, for card metadata."""
    if cfg.data.source_dataset_id:
        return [cfg.data.source_dataset_id]
    if cfg.data.source == "hub":
        return [cfg.data.dataset]
    return None
