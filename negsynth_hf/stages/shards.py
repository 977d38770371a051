"""A multi-process build's hand-over: each process saves the rows it mined and synthesized, one process reads all.

:func:`negsynth_hf.build.build_shard` runs the per-row stages (mining, the mined-negative judge, synthesis: every
LLM request) on one contiguous shard of the pairs and saves a :class:`FrontStages` here; ``build_dataset(...,
shards=ShardedBuild(folder, n))`` loads and concatenates them in row order and runs only the cross-row stages.
The files are pickles written by this package for its own processes of one run (not an exchange format).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedRows

SHARD_FORMAT = 1


@dataclass
class FrontStages:
    """What the per-row stages made for some rows: mined and generated negatives, and their timings."""

    mined: MinedRows
    generated: GeneratedRows
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: Sequence[FrontStages]) -> FrontStages:
        """The parts' rows one after another (row order kept); counts, statistics and timings summed."""
        mined = [p.mined for p in parts]
        generated = [p.generated for p in parts]
        return cls(
            MinedRows(
                negatives=[row for m in mined for row in m.negatives],
                log="\n".join(m.log for m in mined if m.log),
                counts=_sum([m.counts for m in mined]),
                query_embeddings={k: v for m in mined for k, v in m.query_embeddings.items()},
                document_embeddings={k: v for m in mined for k, v in m.document_embeddings.items()},
                judged_relevant=[row for m in mined for row in m.judged_relevant],
                judge_stats=_sum([m.judge_stats for m in mined]),
            ),
            GeneratedRows(
                texts=[row for g in generated for row in g.texts],
                records=[r for g in generated for r in g.records],
                transform_config=next((g.transform_config for g in generated if g.transform_config), None),
                generator_stats=_sum([g.generator_stats for g in generated]),
            ),
            _sum([p.timings for p in parts]),
        )


def _sum(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Numbers added key by key; any other value is the first part's."""
    total: Counter = Counter()
    other: dict[str, Any] = {}
    for table in tables:
        for key, value in table.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] += value
            else:
                other.setdefault(key, value)
    return {**other, **total}


@dataclass(frozen=True)
class ShardedBuild:
    """A build split over ``num_shards`` processes through ``folder`` (shared by all of them).

    Args:
        folder: where each process's shard file goes (a folder every process can read and write).
        num_shards: how many processes build a shard (contiguous row ranges, sizes differing by at most one).
        index: this process's shard (for :func:`~negsynth_hf.build.build_shard`); ``None`` for the process that
            assembles all of them (``build_dataset(..., shards=...)``).
    """

    folder: str | os.PathLike[str]
    num_shards: int
    index: int | None = None

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ValueError(f"ShardedBuild.num_shards must be >= 1, got {self.num_shards}.")
        if self.index is not None and not 0 <= self.index < self.num_shards:
            raise ValueError(f"ShardedBuild.index must be in [0, {self.num_shards}), got {self.index}.")

    def rows_of(self, index: int, num_rows: int) -> tuple[int, int]:
        """``(start, stop)`` of shard ``index`` among ``num_rows`` rows (``datasets.Dataset.shard(contiguous=True)``'s
        split: the first ``num_rows % num_shards`` shards hold one row more)."""
        size, extra = divmod(num_rows, self.num_shards)
        start = index * size + min(index, extra)
        return start, start + size + (index < extra)

    def path(self, index: int) -> Path:
        return Path(self.folder) / f"shard-{index:05d}-of-{self.num_shards:05d}.pkl"

    def save(self, front: FrontStages, *, anchors: list[str], positives: list[str]) -> Path:
        """Write this process's shard (the rows' anchors and positives identify it) atomically: a reader never sees
        half a file."""
        from negsynth_hf import __version__

        path = self.path(self.index if self.index is not None else 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "format": SHARD_FORMAT,
            "package": __version__,
            "anchors": anchors,
            "positives": positives,
            "front": front,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(entry, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load(self, rows: PairRows) -> FrontStages:
        """Every shard of ``rows``, concatenated in row order; an error names a missing shard or one that was built
        from other pairs (another run's folder, other keywords)."""
        from negsynth_hf import __version__

        parts = []
        for index in range(self.num_shards):
            path = self.path(index)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: run build_shard(pairs, shards=ShardedBuild({str(self.folder)!r}, "
                    f"{self.num_shards}, index={index}), ...) in every process before assembling."
                )
            with path.open("rb") as handle:
                entry = pickle.load(handle)  # written by build_shard of this run (see the module docstring)
            start, stop = self.rows_of(index, len(rows))
            same = (
                entry.get("anchors") == rows.anchors[start:stop]
                and entry.get("positives") == rows.positives[start:stop]
            )
            if entry.get("format") != SHARD_FORMAT or entry.get("package") != __version__ or not same:
                raise ValueError(
                    f"{path} does not hold rows {start}..{stop - 1} of these pairs (built from other pairs, with "
                    "another shard count or by another package version): empty the folder and build the shards again."
                )
            parts.append(entry["front"])
        return FrontStages.concat(parts)
