"""Staging folders that are exactly what gets uploaded, so they can be round-trip tested offline.

::

    <staging>/dataset-<hash>/  README.md + n-tuple/, triplet/, provenance/ parquet shards  -> dataset repo
    <staging>/model/     merged standalone SentenceTransformer + README.md         -> model repo
    <staging>/adapter/   LoRA adapter (SentenceTransformer folder) + README.md     -> model repo "<model>-lora"
    <staging>/upload_plan.json   which folder goes to which repo (not uploaded)

Parquet shards are written here rather than with ``push_to_hub`` because ``push_to_hub`` merges its own
``configs`` YAML into README.md and a card pushed afterwards would overwrite it; here card and data are one.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from negsynth_hf.artifacts import NTUPLE, PROVENANCE, TRIPLET, BuiltDataset
from negsynth_hf.labels import LABEL_COLUMN, negative_columns
from negsynth_hf.publish.cards import ConfigInfo, dataset_card, model_card
from negsynth_hf.training import TrainResult

PLAN_FILE = "upload_plan.json"
MAX_SHARD_ROWS = 50_000


@dataclass
class UploadTarget:
    """One staged folder and the repo it is uploaded to, as is."""

    folder: str
    repo_id: str
    repo_type: str  # "dataset" or "model"


@dataclass
class StagingResult:
    root: str
    targets: list[UploadTarget] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def save_plan(self) -> Path:
        path = Path(self.root) / PLAN_FILE
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, root: str | Path) -> StagingResult:
        data = json.loads((Path(root) / PLAN_FILE).read_text(encoding="utf-8"))
        return cls(root=data["root"], targets=[UploadTarget(**t) for t in data["targets"]], notes=data.get("notes", []))


def triplet_view(n_tuple: Dataset, provenance: Dataset | None = None) -> tuple[Dataset, int]:
    """``anchor, positive, negative``: per row the hardest VALID negative.

    Valid = weight > 0 in the label column (masked/filled slots have weight 0) and non-empty. Hardest = highest
    query similarity under the build's retriever (``sim_query`` in provenance); without provenance, the first
    valid column (mined negatives come first, best-ranked first). Rows with no valid negative are dropped; their
    count is returned for the card.
    """
    negs = negative_columns(n_tuple)
    has_labels = LABEL_COLUMN in n_tuple.column_names
    sims: dict[tuple[int, str], float] = {}
    if provenance is not None and {"row", "column", "sim_query"} <= set(provenance.column_names):
        for row, col, sim in zip(provenance["row"], provenance["column"], provenance["sim_query"], strict=True):
            if sim is not None:
                sims[(int(row), col)] = float(sim)

    def pick(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {"anchor": [], "positive": [], "negative": []}
        for i, row in enumerate(indices):
            weights = batch[LABEL_COLUMN][i][: len(negs)] if has_labels else [1.0] * len(negs)
            best, best_key = None, None
            for rank, (col, w) in enumerate(zip(negs, weights, strict=True)):
                text = batch[col][i]
                if not (w > 0 and text and text.strip()):
                    continue
                key = (sims.get((row, col), float("-inf")), -rank)
                if best_key is None or key > best_key:
                    best, best_key = text, key
            if best is not None:
                out["anchor"].append(batch["anchor"][i])
                out["positive"].append(batch["positive"][i])
                out["negative"].append(best)
        return out

    view = n_tuple.map(pick, batched=True, with_indices=True, remove_columns=n_tuple.column_names, desc="triplet view")
    return view, len(n_tuple) - len(view)


def training_view(n_tuple: Dataset) -> Dataset:
    """Exactly ``anchor, positive, negative_1..N, labels`` (what the loss reads): no metadata columns."""
    keep = ["anchor", "positive", *negative_columns(n_tuple)]
    if LABEL_COLUMN in n_tuple.column_names:
        keep.append(LABEL_COLUMN)
    return n_tuple.select_columns(keep)


def write_parquet_config(data: DatasetDict, folder: Path, name: str) -> None:
    """``<folder>/<name>/<split>-0000i-of-0000n.parquet`` (the Hub's shard naming)."""
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for split, ds in data.items():
        shards = max(1, math.ceil(len(ds) / MAX_SHARD_ROWS))
        for i in range(shards):
            ds.shard(shards, i, contiguous=True).to_parquet(str(target / f"{split}-{i:05d}-of-{shards:05d}.parquet"))


def stage_dataset(
    built: BuiltDataset,
    folder: str | Path,
    *,
    repo_id: str,
    base_model_id: str | None = None,
    license: str | None = None,
    source_datasets: list[str] | None = None,
    source_name: str | None = None,
    pretty_name: str | None = None,
) -> Path:
    """Write the dataset repo: README.md (card with configs YAML) and one parquet folder per config.

    The folder is named ``<folder>-<content hash>`` (returned): ``datasets`` caches a local folder's configs
    under its BASENAME only, so ``load_dataset(".../dataset", "n-tuple")`` after a rebuild would silently
    return the previous build's rows (same symptom as benchflow-ai/benchflow#861). Older stagings next to it
    are removed.
    """
    target = Path(folder)
    for old in [target, *target.parent.glob(f"{target.name}-*")]:
        if old.is_dir():
            shutil.rmtree(old)
    folder = target.parent / f"{target.name}.partial"
    folder.mkdir(parents=True)
    n_tuple = training_view(built.train)
    triplet, dropped = triplet_view(n_tuple, built.provenance)
    write_parquet_config(DatasetDict({"train": n_tuple}), folder, NTUPLE)
    write_parquet_config(DatasetDict({"train": triplet}), folder, TRIPLET)
    configs = [
        ConfigInfo(
            NTUPLE, len(n_tuple), n_tuple.column_names, "CausalNegLoss (weights + sources in `labels`)", default=True
        ),
        ConfigInfo(TRIPLET, len(triplet), triplet.column_names, "MultipleNegativesRankingLoss, any triplet loss"),
    ]
    if built.provenance is not None:
        write_parquet_config(DatasetDict({"train": built.provenance}), folder, PROVENANCE)
        configs.append(
            ConfigInfo(
                PROVENANCE,
                len(built.provenance),
                built.provenance.column_names,
                "audit: one row per negative slot (source, status, similarities, weight and reason)",
            )
        )
    card = dataset_card(
        repo_id=repo_id,
        configs=configs,
        info=built.info,
        summary_markdown=built.summary_markdown,
        triplet_dropped=dropped,
        base_model_id=base_model_id,
        license=license,
        source_datasets=source_datasets,
        pretty_name=pretty_name,
        source_name=source_name,
    )
    card.save(str(folder / "README.md"))
    final = target.parent / f"{target.name}-{folder_digest(folder)[:12]}"
    folder.rename(final)
    return final


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (stable across machines)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def rewrite_adapter_base(folder: str | Path, base_model_id: str) -> list[Path]:
    """Point every ``adapter_config.json`` under ``folder`` at ``base_model_id`` (the saver's path is local)."""
    changed = []
    for path in Path(folder).rglob("adapter_config.json"):
        config = json.loads(path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_model_id
        path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        changed.append(path)
    return changed


def _copy_model(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("README.md", "checkpoints", "runs", "*.lock"))


def _model_facts(folder: Path) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        st_config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        facts["max_seq_length"] = st_config.get("max_seq_length")
    except (OSError, ValueError):
        pass
    try:
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        facts["embedding_dim"] = pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension")
    except (OSError, ValueError):
        pass
    return facts


def stage_models(
    model_dir: str | Path,
    folder: str | Path,
    *,
    model_repo_id: str,
    adapter_repo_id: str | None,
    base_model_id: str,
    eval_result=None,
    dataset_repo_id: str | None = None,
    dataset_name: str | None = None,
    source_name: str | None = None,
    license: str = "apache-2.0",
    example: tuple[str, str] | None = None,
    eval_dataset_id: str | None = None,
) -> dict[str, Path]:
    """Write ``model/`` (merged) and, when the run trained LoRA, ``adapter/`` with its base id rewritten."""
    model_dir, folder = Path(model_dir), Path(folder)
    train_result = TrainResult.load(model_dir)
    merged = Path(train_result.merged_dir)
    if not merged.is_absolute() and not merged.exists():
        merged = model_dir / merged.name
    out: dict[str, Path] = {}
    adapter_src = Path(train_result.adapter_dir) if train_result.adapter_dir else None
    if adapter_src is not None and not adapter_src.exists():
        adapter_src = model_dir / adapter_src.name
    common: dict[str, Any] = {
        "base_model_id": base_model_id,
        "train_result": train_result,
        "eval_result": eval_result,
        "dataset_repo_id": dataset_repo_id,
        "dataset_name": dataset_name,
        "merged_repo_id": model_repo_id,
        "adapter_repo_id": adapter_repo_id if adapter_src is not None else None,
        "license": license,
        "source_name": source_name,
        "eval_dataset_id": eval_dataset_id,
    }
    if example:
        common["example_query"], common["example_document"] = example
    _copy_model(merged, folder / "model")
    card = model_card(repo_id=model_repo_id, is_adapter=False, **common, **_model_facts(folder / "model"))
    card.save(str(folder / "model" / "README.md"))
    out["model"] = folder / "model"
    if adapter_src is not None and adapter_repo_id:
        _copy_model(adapter_src, folder / "adapter")
        rewrite_adapter_base(folder / "adapter", base_model_id)
        card = model_card(repo_id=adapter_repo_id, is_adapter=True, **common, **_model_facts(folder / "adapter"))
        card.save(str(folder / "adapter" / "README.md"))
        out["adapter"] = folder / "adapter"
    return out
