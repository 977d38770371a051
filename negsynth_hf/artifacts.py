"""The built dataset: one type, one on-disk layout, written by ``build`` and read by ``train``/``diagnose``/``publish``.

::

    <dataset_dir>/
        train/, provenance/, dataset_dict.json   DatasetDict (save_to_disk): the two configs of build_dataset
        build_config.json, summary.json, summary.md   how it was built, counts/probe AUCs/timings
        known_positives.json   per train row: texts never to be its negatives (in-batch included); when known
        recipe_info.json   data source, train/validation query ids, recipe settings (when `negsynth build` made it)

:meth:`BuiltDataset.save` writes it and :meth:`BuiltDataset.load` reads it back;
``datasets.load_from_disk(dataset_dir)`` reads the two configs without this package.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negsynth_hf.labels import LABEL_COLUMN, encode_negative_labels
from negsynth_hf.redaction import redact

NTUPLE = "n-tuple"
TRIPLET = "triplet"
PROVENANCE = "provenance"
TRAIN_KEY = "train"
BUILD_CONFIG = "build_config.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
RECIPE_INFO = "recipe_info.json"
KNOWN_POSITIVES = "known_positives.json"


#: counts whose key alone does not say what is counted (the summary table shows this next to the key)
COUNT_MEANING: dict[str, str] = {
    "llm_calls": "LLM requests of the synthesis, retries and cache hits included",
    "llm_cached_calls": "of those, answered from the response cache",
}


def _label(key: str, meanings: dict[str, str]) -> str:
    return f"{key}: {meanings[key]}" if key in meanings else key


@dataclass
class BuildSummary:
    """Counts, probe AUCs and stage timings of one build (also printed as a table at the end)."""

    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    generator_stats: dict[str, int] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)  # the guard policy and its judge's cost (per judgment)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "counts": dict(self.counts),
            "weights": {k: _json_float(v) for k, v in self.weights.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "generator_stats": dict(self.generator_stats),
        }
        if self.guard:  # a summary of a dataset this package did not build has none
            out["guard"] = dict(self.guard)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildSummary:
        return cls(
            counts=dict(data.get("counts", {})),
            weights={k: float("nan") if v is None else v for k, v in data.get("weights", {}).items()},
            timings=dict(data.get("timings", {})),
            generator_stats=dict(data.get("generator_stats", {})),
            guard=dict(data.get("guard", {})),
        )

    def to_markdown(self) -> str:
        lines = ["| Count | Value |", "|---|---:|"]
        lines += [f"| {_label(k, COUNT_MEANING)} | {v:,} |" for k, v in self.counts.items()]
        lines += ["", "| Weights / probe | Value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.weights.items()]
        lines += ["", "| Stage | Seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in self.timings.items()]
        if self.generator_stats:
            from negsynth_hf.generators.caching import STATS_MEANING

            lines += ["", "| Response cache and LLM | Value |", "|---|---:|"]
            lines += [f"| {_label(k, STATS_MEANING)} | {v:,} |" for k, v in self.generator_stats.items()]
        per = (self.guard.get("judge") or {}).get("per_judgment")
        if per:
            lines += ["", f"| Judge cost per judgment ({self.guard.get('policy')}) | Value |", "|---|---:|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in per.items()]
        return "\n".join(lines)


def _json_float(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


@dataclass
class BuiltDataset:
    """A built training set, what :func:`negsynth_hf.build.build_dataset` returns; ``save(folder)``/``load(folder)``.

    Attributes:
        train: the training config (``anchor, positive, negative_1..N, labels``).
        provenance: one row per negative slot of ``train`` (:class:`negsynth_hf.stages.assemble.SlotRecord`).
        summary: counts, probe AUCs before/after weighting, stage timings.
        config: JSON-safe build configuration (retriever, generator, strategy, margins, switches, seed,
            package and prompt versions; never a secret).
        num_mined / num_generated: ``M`` and ``G`` (negative columns = ``M + G``); read from ``config`` when
            not given.
        known_positives: per train row, the texts judged relevant to its query (never its negatives).
        recipe_info: data source, query ids and recipe settings, when a recipe made it.
        markdown: the summary as written (``summary.md``); rendered from ``summary`` when empty.
    """

    train: Any
    provenance: Any = None
    summary: BuildSummary = field(default_factory=BuildSummary)
    config: dict[str, Any] = field(default_factory=dict)
    num_mined: int | None = None
    num_generated: int | None = None
    known_positives: list[list[str]] | None = None
    recipe_info: dict[str, Any] = field(default_factory=dict)
    markdown: str = ""

    def __post_init__(self) -> None:
        # settings are redacted on the way in, so no repr, card or file of this object can hold a secret
        self.config, self.recipe_info = redact(self.config), redact(self.recipe_info)
        if isinstance(self.summary, dict):
            self.summary = BuildSummary.from_dict(self.summary)
        if self.num_mined is None:
            self.num_mined = self.config.get("num_mined")
        if self.num_generated is None:
            self.num_generated = self.config.get("num_generated")

    # ---- views ----
    @property
    def configs(self) -> dict[str, Any]:
        parts = {TRAIN_KEY: self.train}
        if self.provenance is not None:
            parts[PROVENANCE] = self.provenance
        return parts

    def to_dataset_dict(self) -> Any:
        """``DatasetDict({"train": ..., "provenance": ...})``."""
        from datasets import DatasetDict

        return DatasetDict(self.configs)

    def __getitem__(self, name: str) -> Any:
        return self.configs[name]

    @property
    def validation_query_ids(self) -> list[str]:
        return [str(q) for q in self.recipe_info.get("validation_query_ids", [])]

    @property
    def info(self) -> dict[str, Any]:
        """Everything a card shows about how the data was made (build config + recipe info + summary)."""
        return {**self.config, **self.recipe_info, "summary": self.summary.to_dict()}

    def with_recipe_info(self, recipe_info: dict[str, Any]) -> BuiltDataset:
        """This dataset with ``recipe_info`` (data source, query ids, recipe settings; redacted)."""
        return dataclasses.replace(self, recipe_info=recipe_info)

    def training_dataset(self, *, num_mined: int | None = None, num_generated: int | None = None) -> Any:
        """The ``train`` config with only the first ``num_mined`` mined and ``num_generated`` generated columns.

        Columns are renumbered ``negative_1..`` and the label column re-encoded, so one expensive build serves
        several ablations (e.g. ``num_generated=0`` for the mined-only baseline on the very same mined negatives).
        """
        m = self.num_mined if num_mined is None else num_mined
        g = self.num_generated if num_generated is None else num_generated
        if not (0 <= m <= self.num_mined and 0 <= g <= self.num_generated):
            raise ValueError(
                f"num_mined must be in [0, {self.num_mined}] and num_generated in [0, {self.num_generated}]."
            )
        if (m, g) == (self.num_mined, self.num_generated):
            return self.train
        n_all = self.num_mined + self.num_generated
        keep = list(range(m)) + list(range(self.num_mined, self.num_mined + g))

        def select(batch: dict[str, list]) -> dict[str, list]:
            out = {"anchor": batch["anchor"], "positive": batch["positive"]}
            for new, old in enumerate(keep, start=1):
                out[f"negative_{new}"] = batch[f"negative_{old + 1}"]
            if keep:
                out[LABEL_COLUMN] = [
                    encode_negative_labels([lab[j] for j in keep], [lab[n_all + j] > 0.5 for j in keep])
                    for lab in batch[LABEL_COLUMN]
                ]
            return out

        return self.train.map(select, batched=True, remove_columns=self.train.column_names, desc="select negatives")

    def to_markdown(self) -> str:
        head = (
            f"## Built dataset: {len(self.train):,} rows, {self.num_mined} mined + {self.num_generated} generated "
            f"negative columns\n\n"
            f"strategy `{self.config.get('strategy')}`, generator `{self.config.get('generator_model_id')}`, "
            f"retriever `{self.config.get('retriever')}`\n\n"
        )
        return head + self.summary.to_markdown() + "\n"

    @property
    def summary_markdown(self) -> str:
        """``summary.md``: as loaded, else rendered (``""`` for a dataset without a build summary)."""
        return self.markdown or (self.to_markdown() if self.summary.counts else "")

    # ---- disk ----
    def save(self, folder: str | Path) -> Path:
        """Write the layout of the module docstring (settings redacted: :func:`negsynth_hf.redaction.redact`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_dataset_dict().save_to_disk(str(folder))
        _write_json(folder / BUILD_CONFIG, redact(self.config))
        _write_json(folder / SUMMARY_JSON, self.summary.to_dict())
        if self.recipe_info:
            _write_json(folder / RECIPE_INFO, redact(self.recipe_info))
        if self.summary_markdown:
            (folder / SUMMARY_MD).write_text(self.summary_markdown, encoding="utf-8")
        if self.known_positives is not None:
            (folder / KNOWN_POSITIVES).write_text(json.dumps(self.known_positives) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BuiltDataset:
        """Read a folder :meth:`save` wrote."""
        from datasets import load_from_disk

        folder = Path(folder)
        if not (folder / "dataset_dict.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a built dataset (no dataset_dict.json); run `negsynth build` first or point "
                "--train_dataset_dir / --dataset_dir at the build output."
            )
        data = load_from_disk(str(folder))

        def read(name: str, default: Any) -> Any:
            path = folder / name
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default

        summary_md = folder / SUMMARY_MD
        return cls(
            train=data[TRAIN_KEY],
            provenance=data[PROVENANCE] if PROVENANCE in data else None,
            summary=BuildSummary.from_dict(read(SUMMARY_JSON, {})),
            config=read(BUILD_CONFIG, {}),
            known_positives=read(KNOWN_POSITIVES, None),
            recipe_info=read(RECIPE_INFO, {}),
            markdown=summary_md.read_text(encoding="utf-8") if summary_md.is_file() else "",
        )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
