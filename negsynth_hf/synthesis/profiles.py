"""Dataset profiles: what "relevant" means for a corpus and how its documents read.

A negative is only hard if it reads like the corpus and misses exactly the notion of relevance the
corpus is judged by, so both go into every prompt. Profiles are plain data (never code), loadable
from a dict or YAML, and hashed into the synthesizer's config so a changed profile changes caches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: edit kinds a profile may name in ``relevant_edit_kinds`` (the rule editor's types and the LLM editor's labels)
EDIT_KINDS = ("number", "population", "entity", "direction", "time", "place", "condition", "setting", "other")


@dataclass(frozen=True)
class DatasetProfile:
    """Relevance definition and writing-style spec of one kind of corpus.

    Args:
        name: identifier recorded in provenance.
        relevance_definition: when a document counts as relevant to a query in this corpus.
        style: how the corpus' documents are written (length, register, structure).
        query_kind: what a "query" is here (a question, a claim, a keyword search...).
        document_kind: what a document is (a Wikipedia paragraph, a paper abstract...).
        extra_instructions: optional corpus-specific guidance appended to generation prompts.
        relevant_edit_kinds: one-detail query edits (of :data:`EDIT_KINDS`) whose passage is still RELEVANT to
            the original query in this collection, so the rule editor and the LLM edit prompt avoid them and the
            guard masks them. Scientific claim retrieval: a passage for the direction-flipped claim refutes the
            original claim, and refuting evidence is judged relevant there. Left out of :meth:`to_dict` (and so
            of :attr:`hash`) when empty, so profiles that do not set it keep their hashes and caches.
    """

    name: str
    relevance_definition: str
    style: str
    query_kind: str = "query"
    document_kind: str = "passage"
    extra_instructions: str = ""
    relevant_edit_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kinds = self.relevant_edit_kinds
        if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"DatasetProfile.relevant_edit_kinds must be a list of strings, got {kinds!r}")
        unknown = sorted(set(kinds) - set(EDIT_KINDS))
        if unknown:
            raise ValueError(
                f"DatasetProfile.relevant_edit_kinds: unknown kind(s) {unknown}; valid: {list(EDIT_KINDS)}"
            )
        object.__setattr__(self, "relevant_edit_kinds", tuple(kinds))
        for f in fields(self):
            if f.name == "relevant_edit_kinds":
                continue
            if not isinstance(getattr(self, f.name), str):
                raise TypeError(f"DatasetProfile.{f.name} must be a string, got {type(getattr(self, f.name)).__name__}")
        if not self.name.strip() or not self.relevance_definition.strip() or not self.style.strip():
            raise ValueError("DatasetProfile needs a non-empty name, relevance_definition and style")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetProfile:
        """Build from a mapping; unknown keys are an error (a typo should not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown DatasetProfile field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, source: str | Path) -> DatasetProfile:
        """Load from a YAML file path or a YAML string (``yaml.safe_load``: data only)."""
        import yaml

        text = Path(source).read_text(encoding="utf-8") if _looks_like_path(source) else str(source)
        data = yaml.safe_load(text)
        if not isinstance(data, Mapping):
            raise ValueError("A DatasetProfile YAML document must be a mapping of field -> text")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        kinds = out.pop("relevant_edit_kinds")
        if kinds:
            out["relevant_edit_kinds"] = list(kinds)
        return out

    @property
    def hash(self) -> str:
        """Short content hash: changes whenever any field changes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and source.endswith((".yaml", ".yml")) and Path(source).is_file()


BUILTIN_PROFILES: dict[str, DatasetProfile] = {
    p.name: p
    for p in (
        DatasetProfile(
            name="generic",
            relevance_definition=(
                "A document is relevant when it provides the information the query asks for, "
                "so that a reader could satisfy the query from it."
            ),
            style="Neutral, informative prose of one paragraph, similar in length and tone to the given positive.",
        ),
        DatasetProfile(
            name="qa_wikipedia",
            relevance_definition=(
                "A passage is relevant when it contains the answer to the question (the answer span or "
                "facts that directly entail it); passages about the same topic without the answer are not."
            ),
            style=(
                "An encyclopedic Wikipedia paragraph: third person, factual, dense with names, dates and "
                "numbers, no questions, no first person, 60-150 words."
            ),
            query_kind="question",
            document_kind="Wikipedia passage",
        ),
        DatasetProfile(
            name="trivia",
            relevance_definition=(
                "A document is relevant when it states the specific entity, name, number or date that the "
                "trivia question asks for; mentioning related facts is not enough."
            ),
            style="Encyclopedic or web-article prose rich in specific facts about people, places, works and events.",
            query_kind="trivia question",
            document_kind="article excerpt",
        ),
        DatasetProfile(
            name="multi_hop",
            relevance_definition=(
                "A passage is relevant when it supplies one of the facts needed in the reasoning chain "
                "(a bridge entity or the final answer) for the question; a passage about a different entity "
                "at any hop is not relevant."
            ),
            style="A Wikipedia introduction paragraph about a single entity, starting with its name, factual and concise.",
            query_kind="multi-hop question",
            document_kind="Wikipedia paragraph",
        ),
        DatasetProfile(
            name="web_search",
            relevance_definition=(
                "A web passage is relevant when it directly answers the search query or clearly satisfies "
                "the searcher's intent; pages that only share keywords are not."
            ),
            style=(
                "A web page snippet: informal to semi-formal, may include how-to steps, prices, lists or "
                "site boilerplate, 40-120 words."
            ),
            query_kind="web search query",
            document_kind="web passage",
        ),
        DatasetProfile(
            name="scientific",
            relevance_definition=(
                "An abstract is relevant to a scientific claim when it reports evidence that supports or "
                "refutes that exact claim (same intervention or exposure, population, outcome and direction); "
                "abstracts on the same topic that say nothing about the claim are not relevant."
            ),
            style=(
                "A biomedical or scientific paper abstract: formal, third person, background, methods, results "
                "with numbers and statistics, conclusion; 120-250 words."
            ),
            query_kind="scientific claim",
            document_kind="paper abstract",
            relevant_edit_kinds=("direction",),
        ),
        DatasetProfile(
            name="aeronautics",
            relevance_definition=(
                "An abstract is relevant to a question when it bears on the question's specific problem (the same "
                "flow regime, configuration or quantity) by results, methods or necessary background; abstracts on "
                "the general subject that do not bear on that problem are not relevant."
            ),
            style=(
                "An aeronautics research abstract of the 1950s-60s: formal, technical, about flows, bodies, wings, "
                "heat transfer and structures, with methods and findings; 80-250 words."
            ),
            query_kind="research question",
            document_kind="aeronautics paper abstract",
        ),
        DatasetProfile(
            name="information_science",
            relevance_definition=(
                "A document is relevant to an information request when it discusses the topic the requester "
                "describes, as a librarian would judge (broad topical relevance), even if it does not answer a "
                "specific question; documents on other library or information-science topics are not relevant."
            ),
            style=(
                "An abstract or summary of an information-science or librarianship publication: formal, about "
                "indexing, retrieval, classification, libraries, citation or documentation; 60-200 words."
            ),
            query_kind="information request",
            document_kind="information-science document",
        ),
    )
}


def get_profile(profile: str | DatasetProfile | Mapping[str, Any] | Path) -> DatasetProfile:
    """Resolve a built-in name, a :class:`DatasetProfile`, a mapping, or a YAML file path.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(profile, DatasetProfile):
        return profile
    if isinstance(profile, Mapping):
        return DatasetProfile.from_dict(profile)
    if isinstance(profile, Path) or (isinstance(profile, str) and _looks_like_path(profile)):
        return DatasetProfile.from_yaml(profile)
    if isinstance(profile, str):
        try:
            return BUILTIN_PROFILES[profile]
        except KeyError:
            raise ValueError(
                f"Unknown dataset profile {profile!r}; valid profiles: {sorted(BUILTIN_PROFILES)} "
                "(or pass a DatasetProfile, a dict, or a path to a YAML file)"
            ) from None
    raise TypeError(f"profile must be a name, DatasetProfile, mapping or YAML path, got {type(profile).__name__}")
