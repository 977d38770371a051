"""On-disk layout of a built dataset, shared by ``build`` (writes), ``train``/``diagnose``/``publish`` (read).

It is :meth:`negsynth_hf.build.BuildResult.save_to_disk`'s layout plus one file the recipes add::

    <dataset_dir>/
        train/, provenance/, dataset_dict.json   DatasetDict (save_to_disk): the two configs of build_dataset
        build_config.json, summary.json, summary.md   written by BuildResult.save_to_disk
        recipe_info.json   data source, train/validation query ids, recipe settings (added by `negsynth build`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

NTUPLE = "n-tuple"
TRIPLET = "triplet"
PROVENANCE = "provenance"
TRAIN_KEY = "train"
BUILD_CONFIG = "build_config.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
RECIPE_INFO = "recipe_info.json"
KNOWN_POSITIVES = "known_positives.json"  # per train row: texts never to be its negatives (in-batch included)


@dataclass
class BuiltDataset:
    """A built training set (``anchor, positive, negative_1..N, labels``), its provenance and settings."""

    train: Dataset
    provenance: Dataset | None = None
    build_config: dict[str, Any] = field(default_factory=dict)
    recipe_info: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    summary_markdown: str = ""
    known_positives: list[list[str]] | None = None

    @classmethod
    def from_build_result(
        cls,
        result: Any,
        *,
        recipe_info: dict[str, Any] | None = None,
        known_positives: list[list[str]] | None = None,
    ) -> BuiltDataset:
        summary = result.summary.to_dict() if hasattr(result.summary, "to_dict") else dict(result.summary or {})
        return cls(
            result.train,
            result.provenance,
            dict(result.config),
            dict(recipe_info or {}),
            summary,
            result.to_markdown(),
            known_positives,
        )

    @property
    def validation_query_ids(self) -> list[str]:
        return [str(q) for q in self.recipe_info.get("validation_query_ids", [])]

    @property
    def info(self) -> dict[str, Any]:
        """Everything a card shows about how the data was made (build config + recipe info + summary)."""
        return {**self.build_config, **self.recipe_info, "summary": self.summary}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parts = {TRAIN_KEY: self.train}
        if self.provenance is not None:
            parts[PROVENANCE] = self.provenance
        DatasetDict(parts).save_to_disk(str(folder))
        (folder / BUILD_CONFIG).write_text(
            json.dumps(self.build_config, indent=2, default=str) + "\n", encoding="utf-8"
        )
        (folder / SUMMARY_JSON).write_text(json.dumps(self.summary, indent=2, default=str) + "\n", encoding="utf-8")
        (folder / RECIPE_INFO).write_text(json.dumps(self.recipe_info, indent=2, default=str) + "\n", encoding="utf-8")
        if self.summary_markdown:
            (folder / SUMMARY_MD).write_text(self.summary_markdown, encoding="utf-8")
        if self.known_positives is not None:
            (folder / KNOWN_POSITIVES).write_text(json.dumps(self.known_positives) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BuiltDataset:
        folder = Path(folder)
        if not (folder / "dataset_dict.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a built dataset (no dataset_dict.json); run `negsynth build` first or point "
                "--train_dataset_dir / --dataset_dir at the build output."
            )
        data = load_from_disk(str(folder))

        def read(name: str) -> dict[str, Any]:
            path = folder / name
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

        summary_md = (folder / SUMMARY_MD).read_text(encoding="utf-8") if (folder / SUMMARY_MD).is_file() else ""
        known = folder / KNOWN_POSITIVES
        return cls(
            known_positives=json.loads(known.read_text(encoding="utf-8")) if known.is_file() else None,
            train=data[TRAIN_KEY],
            provenance=data[PROVENANCE] if PROVENANCE in data else None,
            build_config=read(BUILD_CONFIG),
            recipe_info=read(RECIPE_INFO),
            summary=read(SUMMARY_JSON),
            summary_markdown=summary_md,
        )
