"""Stage 5: fixed training columns and one provenance record per negative slot, without losing a row.

Every row gets exactly ``M`` mined and ``G`` generated slots (mined first; generated: valid, then masked, then
filled). A slot with nothing usable holds a *filler* with weight 0: ``filled`` when the row had fewer mined
negatives (mining margins) or fewer generated ones (the LLM failed or wrote fewer than ``G``), ``masked`` when a
generated negative failed the false-negative guard (its text kept in provenance as ``original_text`` only).

A filler is one of the row's own mined negatives, cycled in rank order; a row without any mined negative takes
a mined negative (or, with ``M = 0``, a positive) of another query, chosen with ``seed``, never one of the row's
known positives. So every training text is a real corpus document that does not answer the query.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negsynth_hf.labels import LABEL_COLUMN, encode_negative_labels
from negsynth_hf.stages.guard import Embeddings, Verdicts
from negsynth_hf.stages.inputs import PairRows
from negsynth_hf.stages.mine import MinedRows
from negsynth_hf.stages.synthesize import GeneratedRows
from negsynth_hf.stages.weight import Weights
from negsynth_hf.transform import NegativeProvenance, RowProvenance
from negsynth_hf.verification.policy import GuardDecision
from negsynth_hf.weighting import hardness_percentile


def _col(dtype: str, default: Any = None, *, sequence: bool = False) -> Any:
    """A SlotRecord field and its ``datasets`` dtype (the provenance Features are read from these)."""
    if sequence:
        return field(default_factory=list, metadata={"dtype": dtype, "sequence": True})
    return field(default=default, metadata={"dtype": dtype})


@dataclass
class SlotRecord:
    """One negative slot of the training set: the provenance config's row (its fields ARE the columns)."""

    row: int = _col("int64", 0)
    query_id: str | None = _col("string")
    positive_id: str | None = _col("string")
    column: str = _col("string", "")
    source: str = _col("string", "")  # "mined" or "generated"
    status: str = _col("string", "")  # "ok", "filled" or "masked"
    text: str = _col("string", "")  # what the training column holds
    original_text: str | None = _col("string")  # a masked negative's rejected text
    mined_rank: int | None = _col("int32")
    generator_model_id: str | None = _col("string")
    prompt_version: str | None = _col("string")
    strategy: str | None = _col("string")
    strategy_type: str | None = _col("string")
    violated_requirement: str | None = _col("string")
    explanation: str | None = _col("string")
    edited_query: str | None = _col("string")
    rewrote_candidate: bool | None = _col("bool")
    flags: list[str] = _col("string", sequence=True)
    sim_query: float | None = _col("float64")
    sim_positive: float | None = _col("float64")
    sim_query_positive: float | None = _col("float64")
    hardness_percentile: float | None = _col("float64")
    probe_p_generated: float | None = _col("float64")
    guard_policy: str | None = _col("string")  # the GuardPolicy mode that decided (generated slots)
    guard_decision: str | None = _col("string")  # "kept" or "masked"
    guard_reason: str | None = _col("string")  # short code, counted as guard_<decision>_<reason>
    guard_in_band: bool | None = _col("bool")  # inside the retriever-margin band
    judge_p_relevant: float | None = _col("float64")
    judge_p_original: float | None = _col("float64")  # contrastive: p(addresses the original query)
    judge_p_requirement: float | None = _col("float64")  # p(the broken requirement is still met)
    judge_method: str | None = _col("string")  # "logprobs", "votes" or "failed"
    edit_check: str | None = _col("string")  # query_edit: replacement_only / original_only / both / neither
    edit_kind: str | None = _col("string")
    changed_span: list[str] = _col("string", sequence=True)  # query_edit: [original words, replacement]
    weight: float = _col("float64", 0.0)
    weight_reason: str = _col("string", "")
    row_failure_reason: str | None = _col("string")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def features(cls) -> Any:
        """The provenance config's ``datasets.Features``, one column per field."""
        from datasets import Features, Sequence, Value

        def feature(f: dataclasses.Field) -> Any:
            value = Value(f.metadata["dtype"])
            return Sequence(value) if f.metadata.get("sequence") else value

        return Features({f.name: feature(f) for f in dataclasses.fields(cls)})

    def as_row(self) -> dict[str, Any]:
        """Column values (NaN -> None, so a missing number is null in Arrow)."""
        out = {}
        for name in self.field_names():
            value = getattr(self, name)
            if name in ("flags", "changed_span"):
                value = list(value or [])
            elif isinstance(value, float) and math.isnan(value):
                value = None
            out[name] = value
        return out


@dataclass
class Assembled:
    """The two configs and the counts of how their slots were filled."""

    train: Any
    provenance: Any
    slots: list[SlotRecord]
    counts: dict[str, int]


def assemble(
    rows: PairRows,
    mined: MinedRows,
    generated: GeneratedRows,
    verdicts: Verdicts,
    weights: Weights,
    emb: Embeddings,
    *,
    num_mined: int,
    num_generated: int,
    hardness: bool,
    seed: int,
) -> Assembled:
    """``anchor, positive, negative_1..negative_{M+G}[, labels]`` plus one :class:`SlotRecord` per slot."""
    from datasets import Dataset

    stages = _Stages(rows, mined, generated, verdicts, weights, emb)
    builder = _RowBuilder(stages, num_mined=num_mined, num_generated=num_generated, hardness=hardness, seed=seed)
    counts = _initial_counts(rows, mined, verdicts, num_mined, num_generated)
    slots: list[SlotRecord] = []
    labels: list[list[float]] = []
    for i in range(len(rows)):
        record = generated.records[i]
        counts["generated_dropped_extra"] += record.dropped_extra
        counts["context_trimmed_tokens"] += record.trimmed_tokens
        counts["context_dropped_candidates"] += record.dropped_candidates
        counts["llm_calls"] += record.llm_calls
        counts["llm_cached_calls"] += record.cached_calls
        if num_generated and record.failure_reason:
            counts["rows_generation_failed"] += 1
        row_slots = builder.slots(i, counts)
        labels.append(
            encode_negative_labels([s.weight for s in row_slots], [s.source == "generated" for s in row_slots])
        )
        slots += row_slots
    width = num_mined + num_generated
    train_rows: dict[str, list] = {"anchor": rows.anchors, "positive": rows.positives}
    for j in range(width):
        train_rows[f"negative_{j + 1}"] = [slots[i * width + j].text for i in range(len(rows))]
    if width:
        train_rows[LABEL_COLUMN] = labels
    table = [s.as_row() for s in slots]
    prov = {name: [r[name] for r in table] for name in SlotRecord.field_names()}
    provenance = Dataset.from_dict(prov, features=SlotRecord.features())
    return Assembled(Dataset.from_dict(train_rows), provenance, slots, counts)


def _initial_counts(rows: PairRows, mined: MinedRows, verdicts: Verdicts, m: int, g: int) -> dict[str, int]:
    """Every count of the summary, in the order the table shows them (the per-row ones start at 0)."""
    n, valid = len(rows), verdicts.valid
    return {
        "rows_in": n,
        "rows_out": n,
        "mined_requested": n * m,
        "mined": sum(len(r) for r in mined.negatives),
        **mined.counts,
        "mined_filled": 0,
        "generated_requested": n * g,
        "rows_generation_failed": 0,
        "generated": len(valid),
        "generated_dropped_extra": 0,
        "generated_valid": int(valid.sum()),
        "generated_masked": int((~valid).sum()),
        **verdicts.counts(),
        **{f"judge_{k}": val for k, val in verdicts.judge_stats.items() if isinstance(val, int)},
        "generated_filled": 0,
        "llm_calls": 0,
        "llm_cached_calls": 0,
        "context_trimmed_tokens": 0,
        "context_dropped_candidates": 0,
    }


@dataclass
class _Stages:
    """What the earlier stages produced, handed to the row builder as one record."""

    rows: PairRows
    mined: MinedRows
    generated: GeneratedRows
    verdicts: Verdicts
    weights: Weights
    emb: Embeddings


class _RowBuilder:
    """Makes one row's slots; holds what every row shares (the filler rng and donors, the item index)."""

    def __init__(self, stages: _Stages, *, num_mined: int, num_generated: int, hardness: bool, seed: int) -> None:
        self.rows, self.mined, self.generated = stages.rows, stages.mined, stages.generated
        self.verdicts, self.weights, self.emb = stages.verdicts, stages.weights, stages.emb
        self.m, self.g, self.hardness = num_mined, num_generated, hardness
        rows, mined, generated = stages.rows, stages.mined, stages.generated
        self.rng = random.Random(seed)
        self.donors = _donor_pool(rows.anchors, rows.positives, mined.negatives)
        self.index = {(it.row, it.k): idx for idx, it in enumerate(generated.items())}
        self.valid = stages.verdicts.valid

    def slots(self, i: int, counts: dict[str, int]) -> list[SlotRecord]:
        rows = self.rows
        fillers = _fillers(i, rows.anchors, self.mined.negatives, self.donors, self.rng, rows.known_positives_of(i))
        out = [self._mined_slot(i, j, fillers, counts) for j in range(self.m)]
        out += [self._generated_slot(i, j, fillers, counts) for j in range(self.g)]
        sim_qp = self.emb.sim(rows.anchors[i], rows.positives[i])
        for slot_number, slot in enumerate(out, start=1):
            slot.row, slot.column, slot.sim_query_positive = i, f"negative_{slot_number}", sim_qp
            slot.query_id = None if rows.query_ids[i] is None else str(rows.query_ids[i])
            slot.positive_id = None if rows.positive_ids[i] is None else str(rows.positive_ids[i])
        return out

    def _mined_slot(self, i: int, j: int, fillers: Iterator[str], counts: dict[str, int]) -> SlotRecord:
        own = self.mined.negatives[i]
        if j < len(own):
            text = own[j]
            return SlotRecord(
                source="mined",
                status="ok",
                text=text,
                weight=1.0,
                weight_reason="mined negative",
                mined_rank=j + 1,
                sim_query=self.weights.mined_similarities[i][j],
                sim_positive=self.emb.sim(self.rows.positives[i], text),
            )
        judged = self.mined.judged_relevant[i] if self.mined.judged_relevant else []
        if j - len(own) < len(judged):  # a mined negative the judge found relevant: masked, its text kept here
            text, p = judged[j - len(own)]
            return SlotRecord(
                source="mined", status="masked", text=next(fillers), original_text=text, weight=0.0,
                weight_reason=f"masked: the relevance judge found this mined negative relevant (p={p:.3f})",
                guard_decision="masked", guard_reason="judge_relevant", judge_p_relevant=p,
            )  # fmt: skip
        counts["mined_filled"] += 1
        reason = f"filled: only {len(own)} mined negatives passed the mining filters"
        return SlotRecord(source="mined", status="filled", text=next(fillers), weight=0.0, weight_reason=reason)

    def _order(self, i: int) -> list[int]:
        """Row ``i``'s generated negatives, valid ones first, then masked ones."""
        ks, valid = range(len(self.generated.texts[i])), self.valid
        return [k for k in ks if valid[self.index[(i, k)]]] + [k for k in ks if not valid[self.index[(i, k)]]]

    def _generated_slot(self, i: int, j: int, fillers: Iterator[str], counts: dict[str, int]) -> SlotRecord:
        record: RowProvenance = self.generated.records[i]
        order = self._order(i)
        if j < len(order):
            slot, meta = self._written_slot(i, order[j], fillers, record)
        else:
            counts["generated_filled"] += 1
            # the synthesizer's reason for this empty column (one per column), else the row's
            missing = j - len(order)
            why = (
                record.unfilled[missing]
                if missing < len(record.unfilled)
                else record.failure_reason or f"the generator wrote {len(self.generated.texts[i])} of {self.g}"
            )
            slot = SlotRecord(status="filled", text=next(fillers), weight=0.0, weight_reason=f"filled: {why}")
            meta = None
        slot.source = "generated"
        slot.generator_model_id, slot.prompt_version = record.model_id, record.prompt_version
        slot.strategy, slot.row_failure_reason = record.strategy, record.failure_reason
        slot.strategy_type = getattr(meta, "strategy_type", None)
        slot.violated_requirement = getattr(meta, "violated_requirement", None)
        slot.explanation = getattr(meta, "explanation", None)
        slot.edited_query = getattr(meta, "edited_query", None)
        slot.rewrote_candidate = getattr(meta, "rewrote_candidate", None)
        return slot

    def _written_slot(
        self, i: int, k: int, fillers: Iterator[str], record: RowProvenance
    ) -> tuple[SlotRecord, NegativeProvenance | None]:
        """The slot of the ``k``-th generated text: itself if it passed the guard, else a filler (masked)."""
        idx = self.index[(i, k)]
        meta = record.negatives[k] if k < len(record.negatives) else None
        f, decision = self.verdicts.findings, self.verdicts.decisions[idx]
        sim_query = float(f.sim_query[idx])
        slot = SlotRecord(
            sim_query=sim_query,
            sim_positive=float(f.sim_positive[idx]),
            hardness_percentile=hardness_percentile(sim_query, self.weights.mined_similarities[i])
            if self.hardness
            else float("nan"),
            flags=sorted(set(getattr(meta, "flags", ())) | set(f.flags(idx))),
        )
        _record_decision(slot, self.verdicts.policy, decision)
        text = self.generated.texts[i][k]
        if not decision.masked:
            w, p = self.weights.generated.get((i, k), (1.0, float("nan")))
            slot.status, slot.text, slot.weight, slot.probe_p_generated = "ok", text, float(w), p
            slot.weight_reason = self.weights.reason(p)
        else:
            slot.status, slot.text, slot.weight, slot.original_text = "masked", next(fillers), 0.0, text
            slot.weight_reason = f"masked: {decision.describe()}; slot holds a filler"
        return slot, meta


def _record_decision(slot: SlotRecord, policy: str, d: GuardDecision) -> None:
    """The guard policy's decision on a generated negative and the scores it decided from."""
    slot.guard_policy, slot.guard_decision, slot.guard_reason = policy, d.decision, d.reason
    slot.guard_in_band, slot.judge_method = d.in_band, d.judge_method
    slot.judge_p_relevant, slot.judge_p_original, slot.judge_p_requirement = d.p_relevant, d.p_original, d.p_requirement
    slot.edit_check, slot.edit_kind = d.edit_check, d.edit_kind
    slot.changed_span = list(d.changed_span or [])


def weight_summary(slots: Sequence[SlotRecord], weights: Weights) -> dict[str, float]:
    """Probe AUCs before/after weighting and how much generated mass the weights leave."""
    probe = weights.probe
    gen = [s for s in slots if s.source == "generated"]
    produced = [s.weight for s in gen if s.status != "filled"]
    summary = {
        "probe_auc_before": probe.auc_before,
        "probe_auc_after": probe.auc_after,
        "effective_generated_share": float(np.sum(produced) / len(produced)) if produced else float("nan"),
        "effective_generated_share_of_valid": probe.effective_generated_share,
        "mean_generated_weight_all_slots": float(np.mean([s.weight for s in gen])) if gen else float("nan"),
        "masked_or_filled_fraction": float(np.mean([s.weight == 0 for s in slots])) if slots else float("nan"),
    }
    hard = [s.hardness_percentile for s in gen if not _missing(s.hardness_percentile)]
    if hard:
        summary["median_generated_hardness_percentile"] = float(np.median(hard))
    return summary


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _donor_pool(anchors: list[str], positives: list[str], mined: list[list[str]]) -> list[tuple[str, str]]:
    """(query, text) pairs fillers may borrow from other rows: mined negatives, else positives."""
    pool = [(anchors[i], t) for i in range(len(anchors)) for t in mined[i]]
    return pool or list(zip(anchors, positives, strict=True))


def _fillers(
    i: int,
    anchors: list[str],
    mined: list[list[str]],
    donors: list[tuple[str, str]],
    rng: random.Random,
    exclude: Sequence[str] = (),
) -> Iterator[str]:
    """Endless filler texts for row ``i``: its own mined negatives in rank order, else another query's text
    (never one of ``exclude``, the row's known positives)."""
    own = mined[i]
    if own:
        while True:
            yield from own
    excluded = set(exclude)
    candidates = [t for q, t in donors if q != anchors[i] and t not in excluded]
    if not candidates:
        raise ValueError(
            f"row {i}: no filler available (no mined negative and no other query's document); "
            "use num_mined > 0 or more than one distinct query."
        )
    while True:
        yield candidates[rng.randrange(len(candidates))]
