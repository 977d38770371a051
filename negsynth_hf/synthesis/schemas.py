"""Pydantic models of every LLM stage's output, and the JSON Schemas they publish.

The same model serves three purposes: its JSON Schema is sent with each request (backends with
structured output enforce it), it validates every reply with precise error messages (fed back in
re-asks), and the validated object is the typed record the pipeline works with. Validation is
deliberately lenient about spelling ("Entity Shift" -> "entity_shift", "true" -> True) and strict
about content; the published schema is strict (``additionalProperties: false``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FACET_TYPES = ("information_need", "entity", "attribute", "constraint", "relation", "reasoning", "other")
BREAK_TYPES = (
    "entity_shift",
    "intent_drift",
    "constraint_violation",
    "attribute_shift",
    "relation_break",
    "upstream_downstream",
)
EDIT_TYPES = ("number", "population", "entity", "direction", "time", "place", "condition", "other")

FacetType = Literal["information_need", "entity", "attribute", "constraint", "relation", "reasoning", "other"]
BreakType = Literal[
    "entity_shift", "intent_drift", "constraint_violation", "attribute_shift", "relation_break", "upstream_downstream"
]
EditType = Literal["number", "population", "entity", "direction", "time", "place", "condition", "other"]


def _snake(value: Any) -> Any:
    """'Entity Shift' / 'entity-shift' -> 'entity_shift' so small spelling slips validate."""
    if isinstance(value, str):
        return re.sub(r"[\s\-]+", "_", value.strip().lower())
    return value


class _Stage(BaseModel):
    # lenient on input (extra keys ignored), strict in the published schema
    model_config = ConfigDict(
        extra="ignore", str_strip_whitespace=True, json_schema_extra={"additionalProperties": False}
    )


class BreakStrategy(_Stage):
    """One way to violate exactly one requirement node."""

    type: BreakType = Field(description="which kind of violation")
    idea: str = Field(min_length=3, description="concretely what to change, in one sentence")

    _norm = field_validator("type", mode="before")(_snake)


class RequirementNode(_Stage):
    """One concrete, falsifiable condition a relevant document must meet."""

    id: str = Field(min_length=1, description="short unique id such as R1")
    facet: FacetType = Field(description="kind of requirement")
    description: str = Field(min_length=3, description="the requirement, stated so it can be checked")
    critical: bool = Field(description="true when a document failing it can no longer satisfy the query")
    break_strategies: list[BreakStrategy] = Field(
        default_factory=list, max_length=3, description="2-3 ways to break this node (critical nodes only)"
    )

    _norm = field_validator("facet", mode="before")(_snake)

    @model_validator(mode="after")
    def _critical_nodes_have_breaks(self) -> RequirementNode:
        if self.critical and not 2 <= len(self.break_strategies) <= 3:
            raise ValueError(f"critical node {self.id!r} needs 2-3 break_strategies, got {len(self.break_strategies)}")
        return self


class Analysis(_Stage):
    """Stage 1 of the counterfactual strategy: what the query needs and how to break it."""

    core_need: str = Field(min_length=3, description="the query's core information need")
    how_positive_answers: str = Field(min_length=3, description="how the positive document meets that need")
    answer_boundary: str = Field(min_length=3, description="what a document must contain to count as answering")
    requirements: list[RequirementNode] = Field(min_length=4, max_length=8)

    @model_validator(mode="after")
    def _ids_unique_and_some_critical(self) -> Analysis:
        ids = [n.id for n in self.requirements]
        if len(set(ids)) != len(ids):
            raise ValueError(f"requirement ids must be unique, got {ids}")
        if not any(n.critical for n in self.requirements):
            raise ValueError("at least one requirement must be critical")
        return self


class GeneratedNegative(_Stage):
    """One counterfactual negative as the generation stage reports it."""

    node_id: str = Field(min_length=1, description="id of the ONE requirement node this text violates")
    strategy_type: BreakType = Field(description="the break type applied")
    rewrote_candidate: bool = Field(description="true when the text is a rewrite of a numbered candidate")
    candidate_index: int | None = Field(default=None, description="number of the rewritten candidate, else null")
    text: str = Field(min_length=1, description="the negative document itself")
    explanation: str = Field(min_length=3, description="why this text no longer satisfies the query")

    _norm = field_validator("strategy_type", mode="before")(_snake)


class Generation(_Stage):
    """Stage 2 of the counterfactual strategy."""

    negatives: list[GeneratedNegative] = Field(min_length=1)


class NaivePassages(_Stage):
    """The naive baseline: related passages that do not answer the query."""

    passages: list[str] = Field(min_length=1)


class QueryEdit(_Stage):
    """Stage 1 of the query-edit strategy: one detail of the query and its replacement.

    The model names the words to change (copied from the query) and what to put instead; the code
    applies the edit. Small models manage this far better than re-typing the whole query unchanged.
    """

    original: str = Field(min_length=1, description="the words to change, copied exactly from the query")
    replacement: str = Field(min_length=1, description="the words to put in their place")
    edit_type: EditType = Field(default="other", description="which kind of detail was changed")

    @field_validator("edit_type", mode="before")
    @classmethod
    def _norm_edit_type(cls, value: Any) -> Any:
        value = _snake(value)
        return value if value in EDIT_TYPES else "other"


class EditedPassage(_Stage):
    """Stage 2 of the query-edit strategy: a corpus-style passage answering the edited query."""

    passage: str = Field(min_length=1)


ANALYSIS_SCHEMA: dict[str, Any] = Analysis.model_json_schema()
GENERATION_SCHEMA: dict[str, Any] = Generation.model_json_schema()
NAIVE_SCHEMA: dict[str, Any] = NaivePassages.model_json_schema()
QUERY_EDIT_SCHEMA: dict[str, Any] = QueryEdit.model_json_schema()
EDITED_PASSAGE_SCHEMA: dict[str, Any] = EditedPassage.model_json_schema()

#: schema file name (without .json) -> (pydantic model, schema)
SCHEMAS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "analysis": (Analysis, ANALYSIS_SCHEMA),
    "generation": (Generation, GENERATION_SCHEMA),
    "naive": (NaivePassages, NAIVE_SCHEMA),
    "query_edit": (QueryEdit, QUERY_EDIT_SCHEMA),
    "edited_passage": (EditedPassage, EDITED_PASSAGE_SCHEMA),
}


def schemas_hash() -> str:
    """Short hash of every published schema (part of the synthesizer's config and cache fingerprints)."""
    import hashlib

    blob = json.dumps({k: s for k, (_, s) in SCHEMAS.items()}, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def export_schemas(folder: str | Path) -> list[Path]:
    """Write every stage's JSON Schema to ``folder/<name>.json`` (the package ships the same files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (_, schema) in SCHEMAS.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
