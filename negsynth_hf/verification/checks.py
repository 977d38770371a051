"""Checks from what the pipeline already knows about a generated negative (pure code: cheap, deterministic).

A query-edit negative was written for an edited query that changes one detail ``old -> new``; whether its
passage carries the replacement and not the original detail says whether the edit survived into the text (a
passage that still states the original detail is about the original query: a false negative). A counterfactual
negative names the requirement it claims to break; :func:`requirement_of` reads it back for the requirement judge.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

EditVerdict = Literal["replacement_only", "original_only", "both", "neither", "unknown"]

#: function words that never tell two details apart ("the children" vs "the adults": only the nouns count)
_STOP = frozenset(
    "a an the of in on at to for and or with by from as is are was were be been this that these those its their".split()
)
_SUFFIXES = ("ing", "es", "ed", "ly", "s")


def _stem(word: str) -> str:
    """Crude suffix stripping so "children"/"child" aside, "increased"/"increase" and "mice"/"mice" match."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _tokens(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"\d+(?:[.,]\d+)*|[^\W\d_]+", text.lower())]


def _distinctive(words: list[str], other: list[str]) -> set[str]:
    return {w for w in words if w not in _STOP and w not in other}


@dataclass(frozen=True)
class EditCheck:
    """Whether a passage states an edit's original detail and/or its replacement (``None``: cannot tell)."""

    has_original: bool | None
    has_replacement: bool | None

    @property
    def verdict(self) -> EditVerdict:
        """``replacement_only`` is the edit surviving into the text; ``original_only`` is a likely false negative."""
        if self.has_original is None or self.has_replacement is None:
            return "unknown"
        if self.has_original and self.has_replacement:
            return "both"
        if self.has_original:
            return "original_only"
        return "replacement_only" if self.has_replacement else "neither"


def edit_check(text: str, old: str, new: str) -> EditCheck:
    """Does ``text`` carry the replacement ``new`` and not the original detail ``old``?

    Only the words that tell the two details apart count (``"older adults" -> "young adults"``: ``older`` vs
    ``young``), stemmed, as whole tokens (so ``30`` does not match ``300``). An edit whose details differ only in
    function words or negations ("has no role" -> "has a role") cannot be read from the text: ``unknown``.
    """
    if not isinstance(text, str) or not isinstance(old, str) or not isinstance(new, str):
        raise ValueError(
            f"edit_check: text, old and new must be strings, got {type(text).__name__}, "
            f"{type(old).__name__}, {type(new).__name__}"
        )
    wo, wn = _tokens(old), _tokens(new)
    do, dn = _distinctive(wo, wn), _distinctive(wn, wo)
    tokens = set(_tokens(text))
    has_old = (do <= tokens) if do else None
    has_new = (dn <= tokens) if dn else None
    return EditCheck(has_old, has_new)


def changed_span_of(violated_requirement: str | None) -> tuple[str, str] | None:
    """``(old, new)`` from a query-edit negative's ``violated_requirement`` (``"'old' -> 'new'"``), else ``None``.

    The transform records the span only there, so the guard reads it back from it.
    """
    if not violated_requirement or " -> " not in violated_requirement:
        return None
    left, _, right = violated_requirement.partition(" -> ")
    try:
        old, new = ast.literal_eval(left.strip()), ast.literal_eval(right.strip())
    except (ValueError, SyntaxError):
        return None
    return (old, new) if isinstance(old, str) and isinstance(new, str) else None


def requirement_of(violated_requirement: str | None) -> str | None:
    """A counterfactual negative's broken requirement without its node id (``"C2: the population is adults"``)."""
    if not violated_requirement or " -> " in violated_requirement:
        return None
    node, sep, description = violated_requirement.partition(":")
    text = description if sep and re.fullmatch(r"\s*[A-Z]{1,2}\d+\s*", node) else violated_requirement
    return text.strip() or None
