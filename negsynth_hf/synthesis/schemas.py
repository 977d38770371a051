"""Pydantic models of every LLM stage's output, and the JSON Schemas they publish.

The same model serves three purposes: its JSON Schema is sent with each request (backends with
structured output enforce it), it validates every reply with precise error messages (fed back in
re-asks), and the validated object is the typed record the pipeline works with. Validation is
deliberately lenient about spelling ("Entity Shift" -> "entity_shift", "true" -> True) and strict
about content; the published schema is strict (``additionalProperties: false``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

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


def _edit_type(value: Any) -> Any:
    """An edit label in our spelling; an unknown one is "other" (the code judges the kind from the words)."""
    value = _snake(value)
    return value if value in EDIT_TYPES else "other"


class _Stage(BaseModel):
    # lenient on input (extra keys ignored), strict in the published schema
    model_config = ConfigDict(
        extra="ignore", str_strip_whitespace=True, json_schema_extra={"additionalProperties": False}
    )


#: longest texts each field may hold; they bound the published schema and, through it, ``max_new_tokens``
SHORT_CHARS = 300  # one-sentence fields
PASSAGE_CHARS = 1500  # a generated document (SciFact abstracts average ~1,500 characters)
# the words a query edit changes. Room for a whole query: Qwen 1.5B copies the full claim into both fields (54 of
# 58 edits) and the word diff finds the one changed span; at 100 a grammar-constrained server cut 12 of 58 mid-query
# (Cranfield's median query is 106 characters), which made the edit identical or not a copy (qe-v4)
SPAN_CHARS = 300
# the rewrite strategy's spans: a detail of a document (a name, a number, a phrase), never a whole sentence block
REWRITE_SPAN_CHARS = 120
MAX_REWRITE_EDITS = 4  # one detail and its repeated mentions


class BreakStrategy(_Stage):
    """One way to violate exactly one requirement node."""

    type: BreakType = Field(description="which kind of violation")
    idea: str = Field(min_length=3, max_length=SHORT_CHARS, description="concretely what to change, in one sentence")

    _norm = field_validator("type", mode="before")(_snake)


class Requirement(_Stage):
    """One concrete, falsifiable condition a relevant document must meet (not critical)."""

    facet: FacetType = Field(description="kind of requirement")
    description: str = Field(
        min_length=3, max_length=SHORT_CHARS, description="the requirement, stated so it can be checked"
    )

    _norm = field_validator("facet", mode="before")(_snake)


class CriticalRequirement(Requirement):
    """A requirement a document cannot fail and still satisfy the query, with ways to break exactly it."""

    break_strategies: list[BreakStrategy] = Field(
        min_length=2, max_length=3, description="2-3 ways to break this requirement and nothing else"
    )


@dataclass(frozen=True)
class RequirementNode:
    """A requirement with the id the code gave it (``C1..`` critical, ``O1..`` other) and its criticality."""

    id: str
    facet: str
    description: str
    critical: bool
    break_strategies: tuple[BreakStrategy, ...] = ()


class Analysis(_Stage):
    """Stage 1 of the counterfactual strategy: what the query needs and how to break it.

    Critical and other requirements are separate arrays (2-4 each, so 4-8 in all) so that every shape rule is
    in the published schema: "2-3 break strategies" holds for every critical item, and there is nothing
    conditional left. Ids are not asked for: the code numbers the nodes (``C1``.., ``O1``..), so they are
    unique by construction, and the generation stage's schema offers exactly those ids as an enum.
    """

    core_need: str = Field(min_length=3, max_length=SHORT_CHARS, description="the query's core information need")
    how_positive_answers: str = Field(
        min_length=3, max_length=SHORT_CHARS, description="how the positive document meets that need"
    )
    answer_boundary: str = Field(
        min_length=3, max_length=SHORT_CHARS, description="what a document must contain to count as answering"
    )
    critical_requirements: list[CriticalRequirement] = Field(min_length=2, max_length=4)
    other_requirements: list[Requirement] = Field(min_length=2, max_length=4)

    @property
    def requirements(self) -> list[RequirementNode]:
        """All nodes with their ids, critical ones first."""
        critical = [
            RequirementNode(f"C{i}", r.facet, r.description, True, tuple(r.break_strategies))
            for i, r in enumerate(self.critical_requirements, 1)
        ]
        other = [
            RequirementNode(f"O{i}", r.facet, r.description, False) for i, r in enumerate(self.other_requirements, 1)
        ]
        return critical + other

    def with_ids(self) -> dict[str, Any]:
        """The analysis as shown to the generation stage and stored in provenance: every node with its id."""
        data = self.model_dump()
        for key, prefix in (("critical_requirements", "C"), ("other_requirements", "O")):
            data[key] = [{"id": f"{prefix}{i}", **node} for i, node in enumerate(data[key], 1)]
        return data


class GeneratedNegative(_Stage):
    """One counterfactual negative as the generation stage reports it."""

    node_id: str = Field(min_length=1, description="id of the ONE critical requirement this text violates")
    strategy_type: BreakType = Field(description="the break type applied")
    candidate_index: int | None = Field(
        default=None, description="number of the candidate this text rewrites, or null when written from scratch"
    )
    text: str = Field(min_length=1, max_length=PASSAGE_CHARS, description="the negative document itself")
    explanation: str = Field(
        min_length=3, max_length=SHORT_CHARS, description="why this text no longer satisfies the query"
    )

    _norm = field_validator("strategy_type", mode="before")(_snake)

    @property
    def rewrote_candidate(self) -> bool:
        return self.candidate_index is not None


class Generation(_Stage):
    """Stage 2 of the counterfactual strategy."""

    negatives: list[GeneratedNegative] = Field(min_length=1)


def generation_schema(node_ids: Sequence[str], *, num_candidates: int, num_negatives: int) -> dict[str, Any]:
    """The generation schema for one request: node ids as an enum, candidate numbers in range, at most K items.

    These are the cross-references a static schema cannot express; built per request, a grammar-constrained
    server cannot name a node that does not exist or a candidate that was not shown.
    """
    schema = copy.deepcopy(GENERATION_SCHEMA)
    negative = schema["$defs"]["GeneratedNegative"]["properties"]
    negative["node_id"] = {"type": "string", "enum": list(node_ids), "description": negative["node_id"]["description"]}
    if num_candidates > 0:
        number = {"type": "integer", "minimum": 1, "maximum": num_candidates}
        negative["candidate_index"] = {"anyOf": [number, {"type": "null"}], "description": "candidate number or null"}
    else:
        negative["candidate_index"] = {"type": "null", "description": "null: there are no candidates"}
    schema["properties"]["negatives"]["maxItems"] = num_negatives
    return schema


class NaivePassages(_Stage):
    """The naive baseline: related passages that do not answer the query."""

    passages: list[Annotated[str, StringConstraints(max_length=PASSAGE_CHARS)]] = Field(min_length=1)


def naive_schema(num_negatives: int) -> dict[str, Any]:
    """The naive schema for one request: at most K passages."""
    schema = copy.deepcopy(NAIVE_SCHEMA)
    schema["properties"]["passages"]["maxItems"] = num_negatives
    return schema


class QueryEdit(_Stage):
    """Stage 1 of the query-edit strategy: one detail of the query and its replacement.

    The model names the words to change (copied from the query) and what to put instead; the code
    applies the edit. Small models manage this far better than re-typing the whole query unchanged.
    """

    original: str = Field(
        min_length=1, max_length=SPAN_CHARS, description="the words to change, copied exactly from the query"
    )
    replacement: str = Field(min_length=1, max_length=SPAN_CHARS, description="the words to put in their place")
    edit_type: EditType = Field(default="other", description="which kind of detail was changed")

    _norm_edit_type = field_validator("edit_type", mode="before")(_edit_type)


class EditedPassage(_Stage):
    """Stage 2 of the query-edit strategy: a corpus-style passage answering the edited query."""

    passage: str = Field(min_length=1, max_length=PASSAGE_CHARS)


class SpanEdit(_Stage):
    """One in-place change of the rewrite strategy: words copied from the document and what replaces them."""

    original: str = Field(
        min_length=1, max_length=REWRITE_SPAN_CHARS, description="words copied exactly from the document"
    )
    replacement: str = Field(
        min_length=1, max_length=REWRITE_SPAN_CHARS, description="the different words to put in their place"
    )


class Rewrite(_Stage):
    """The rewrite strategy's one call: small in-place edits that break one requirement of the document.

    The model names spans and replacements; the code checks that every span occurs verbatim in the document
    and that every replacement differs, then applies them (``span_edits.apply_span_edits``). The text of the
    negative is therefore the document's own, with only the named spans changed.
    """

    edits: list[SpanEdit] = Field(
        min_length=1, max_length=MAX_REWRITE_EDITS, description="every change; each mention of the changed detail"
    )
    edit_type: EditType = Field(default="other", description="which kind of detail was changed")

    _norm_edit_type = field_validator("edit_type", mode="before")(_edit_type)


ANALYSIS_SCHEMA: dict[str, Any] = Analysis.model_json_schema()
GENERATION_SCHEMA: dict[str, Any] = Generation.model_json_schema()
NAIVE_SCHEMA: dict[str, Any] = NaivePassages.model_json_schema()
QUERY_EDIT_SCHEMA: dict[str, Any] = QueryEdit.model_json_schema()
EDITED_PASSAGE_SCHEMA: dict[str, Any] = EditedPassage.model_json_schema()
REWRITE_SCHEMA: dict[str, Any] = Rewrite.model_json_schema()

#: schema file name (without .json) -> (pydantic model, schema)
SCHEMAS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "analysis": (Analysis, ANALYSIS_SCHEMA),
    "generation": (Generation, GENERATION_SCHEMA),
    "naive": (NaivePassages, NAIVE_SCHEMA),
    "query_edit": (QueryEdit, QUERY_EDIT_SCHEMA),
    "edited_passage": (EditedPassage, EDITED_PASSAGE_SCHEMA),
    "rewrite": (Rewrite, REWRITE_SCHEMA),
}


#: characters per token assumed when sizing a reply budget from a schema (English prose is ~4; JSON keys,
#: numbers and unusual words are denser, so 3 leaves room)
CHARS_PER_TOKEN = 3.0
_VALUE_TOKENS = {"integer": 4, "number": 6, "boolean": 2, "null": 2}


def max_tokens_for(schema: dict[str, Any]) -> int:
    """Tokens that a reply following ``schema`` needs at most (from maxLength/maxItems/enums), for ``max_new_tokens``.

    A stage's budget is sized from its schema so a grammar-constrained reply is never cut off mid-JSON. Every
    string and array in our schemas is bounded; an unbounded one is an error here, not a silent guess.
    """
    return int(math.ceil(_tokens(schema, schema.get("$defs", {})))) + 8


def _tokens(node: dict[str, Any], defs: dict[str, Any]) -> float:
    if "$ref" in node:
        return _tokens(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return max(_tokens(option, defs) for option in node["anyOf"])
    if "enum" in node:
        return max(len(str(v)) for v in node["enum"]) / CHARS_PER_TOKEN + 2
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        return 2 + sum(3 + len(name) / CHARS_PER_TOKEN + _tokens(sub, defs) for name, sub in props.items())
    if kind == "array":
        if "maxItems" not in node:
            raise ValueError(f"array without maxItems cannot size a reply budget: {node}")
        return 2 + node["maxItems"] * (1 + _tokens(node["items"], defs))
    if kind == "string":
        if "maxLength" not in node:
            raise ValueError(f"string without maxLength cannot size a reply budget: {node}")
        return 2 + node["maxLength"] / CHARS_PER_TOKEN
    return _VALUE_TOKENS.get(kind, 8)


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
