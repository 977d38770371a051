"""Cheap, non-filtering quality flags and within-row de-duplication.

Flags never drop a negative: they are recorded so the transform's verification and weighting (and a
human reading provenance) can act on them. Only exact duplicates (after normalization) are removed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .parsing import looks_like_refusal

VERY_SHORT_WORDS = 8
NEAR_DUPLICATE_JACCARD = 0.8
VERBATIM_CANDIDATE_JACCARD = 0.95
REPETITIVE_TRIGRAM_RATIO = 0.5  # distinct / total word trigrams below this = a degenerate loop

FLAG_NAMES = (
    "very_short",
    "equals_positive",
    "contains_query",
    "near_duplicate_of_positive",
    "duplicate",
    "copies_candidate_verbatim",
    "looks_like_refusal",
    "repetitive",
    # set by strategies, not by quality_flags():
    "truncated",  # query_edit passage salvaged from a reply cut off by the token budget
    "invalid_candidate_index",  # counterfactual: claimed a rewrite of a candidate that does not exist
    "non_critical_node",  # counterfactual: violates a node the analysis did not mark critical
)


#: flags that make a text no negative at all (masked by every guard policy but ``off``): "..." placeholders,
#: refusals and loops; Qwen 1.5B's counterfactual replies were often the first. (A copy of the positive is the
#: near-duplicate rule's.)
DEGENERATE_FLAGS = ("very_short", "looks_like_refusal", "repetitive")


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, collapsed whitespace."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _tokens(text: str) -> set[str]:
    return set(normalize(text).split())


def jaccard(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def quality_flags(text: str, *, query: str, positive: str, candidates: Sequence[str] = ()) -> tuple[str, ...]:
    """Flags for one negative (``duplicate`` is added by :func:`deduplicate`)."""
    norm = normalize(text)
    flags = []
    if len(norm.split()) < VERY_SHORT_WORDS:
        flags.append("very_short")
    if norm == normalize(positive):
        flags.append("equals_positive")
    nq = normalize(query)
    if nq and f" {nq} " in f" {norm} ":
        flags.append("contains_query")
    if jaccard(text, positive) >= NEAR_DUPLICATE_JACCARD:
        flags.append("near_duplicate_of_positive")
    if any(norm == normalize(c) or jaccard(text, c) >= VERBATIM_CANDIDATE_JACCARD for c in candidates):
        flags.append("copies_candidate_verbatim")
    if looks_like_refusal(text):
        flags.append("looks_like_refusal")
    words = norm.split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(trigrams) >= 18 and len(set(trigrams)) / len(trigrams) < REPETITIVE_TRIGRAM_RATIO:
        flags.append("repetitive")  # small models loop ("The paper is written ... The paper is written ...")
    return tuple(flags)


def deduplicate(texts: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices to keep (first occurrence of each normalized text) and per-kept duplicate counts."""
    first: dict[str, int] = {}
    keep: list[int] = []
    counts: list[int] = []
    for i, text in enumerate(texts):
        key = normalize(text)
        if key in first:
            counts[first[key]] += 1
            continue
        first[key] = len(keep)
        keep.append(i)
        counts.append(0)
    return keep, counts


#: a "passage" that talks about the request instead of being a document: small models answer the writing
#: instruction ("This abstract aims to provide ...", "The research question posed in the query ...")
_COMMENTARY = re.compile(
    r"\b(?:the\s+(?:research\s+)?question\s+posed|posed\s+in\s+the\s+query|the\s+(?:information\s+)?request\s+asks"
    r"|this\s+abstract\s+(?:aims|will|should)|the\s+abstract\s+(?:should|will|must)|the\s+claim\s+states)\b",
    re.IGNORECASE,
)


def looks_like_commentary(text: str) -> bool:
    """Whether ``text`` comments on the query or the abstract to write instead of being a passage."""
    return bool(_COMMENTARY.search(text))
