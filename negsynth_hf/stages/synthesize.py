"""Stage 2: the LLM writes up to ``G`` negatives per row through :class:`~negsynth_hf.transform.CounterfactualNegatives`.

The transform runs as a ``Dataset.map`` whose output is cached under a key of (input fingerprint, transform
hash), so a rerun of an equal build is a cache hit; its per-row JSON provenance is decoded here, once, into
:class:`~negsynth_hf.transform.RowProvenance` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.synthesis.config import SynthesisConfig
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives, RowProvenance


@dataclass(frozen=True)
class GeneratedItem:
    """One generated text: ``k``-th kept negative of row ``row``."""

    row: int
    k: int
    text: str


@dataclass
class GeneratedRows:
    """Per row: the generated texts (non-empty, in the transform's order) and the row's provenance record."""

    texts: list[list[str]]
    records: list[RowProvenance]
    transform_config: dict[str, Any] | None = None
    generator_stats: dict[str, int] = field(default_factory=dict)

    @classmethod
    def none(cls, n: int) -> GeneratedRows:
        return cls(texts=[[] for _ in range(n)], records=[RowProvenance() for _ in range(n)])

    def items(self) -> list[GeneratedItem]:
        """Every generated text, row by row (the order verification and weighting use)."""
        return [GeneratedItem(i, k, t) for i, row in enumerate(self.texts) for k, t in enumerate(row)]

    def model_id(self) -> str | None:
        return next((r.model_id for r in self.records if r.model_id), None)


def synthesize(
    rows: PairRows,
    mined: MinedRows,
    *,
    generator: Any,
    synthesis: SynthesisConfig,
    num_mined: int,
    map_batch_size: int,
    num_proc: int | None,
    cache_root: Path | None,
) -> GeneratedRows:
    """``synthesis.num_negatives`` negatives per row; the row's mined negatives are the rewrite candidates."""
    from datasets import Dataset

    transform = CounterfactualNegatives(
        generator,
        synthesis=synthesis,
        query_column="anchor",
        positive_column="positive",
        candidate_columns=[f"negative_{j}" for j in range(1, num_mined + 1)],
        title_column="title" if rows.columns.title else None,
    )
    work = {
        "anchor": rows.anchors,
        "positive": rows.positives,
        **{
            f"negative_{j}": [row[j - 1] if j <= len(row) else "" for row in mined.negatives]
            for j in range(1, num_mined + 1)
        },
    }
    if rows.columns.title:
        work["title"] = rows.titles()
    work_ds = Dataset.from_dict(work)
    out = work_ds.map(
        transform,
        batched=True,
        with_indices=True,  # errors name the pairs row (work_ds rows are pairs rows)
        batch_size=map_batch_size,
        num_proc=num_proc,
        desc=f"synthesis ({transform.strategy})",
        **_map_cache(work_ds, transform, cache_root),
    )
    columns = [f"generated_{j}" for j in range(1, synthesis.num_negatives + 1)]
    table = {c: out[c] for c in columns}
    texts = [[table[c][i] for c in columns if table[c][i]] for i in range(len(rows))]
    records = [RowProvenance.from_json(raw) for raw in out[PROVENANCE_COLUMN]]
    # with num_proc > 1 the calls were made in the workers, whose counters this process cannot see
    stats = transform.generator_stats() if num_proc in (None, 1) else {}
    return GeneratedRows(texts, records, transform.config_dict(), stats)


def _map_cache(work_ds: Any, transform: CounterfactualNegatives, cache_root: Path | None) -> dict[str, Any]:
    """``map`` keywords that cache the output under (input fingerprint, transform hash); none without a root."""
    if cache_root is None:
        return {}
    from datasets.fingerprint import Hasher

    key = Hasher.hash([work_ds._fingerprint, transform])
    folder = cache_root / "synthesis"
    folder.mkdir(parents=True, exist_ok=True)
    return {"cache_file_name": str(folder / f"{key}.arrow"), "load_from_cache_file": True}
