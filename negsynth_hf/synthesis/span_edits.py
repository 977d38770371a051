"""The rewrite strategy's check: in-place span edits of a corpus document, applied by code.

The LLM names spans of the document and their replacements; nothing else of its reply reaches the negative.
An edit is accepted only if every span occurs verbatim in the document (as whole words; letter case aside, so a
sentence-initial capital does not fail a copied phrase), every replacement
differs from its span, no span is changed two ways, and the edits together touch a small share of the text.
Each failure raises a ``ValueError`` whose message is the re-ask's reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: at most this share of the document's characters may lie inside replaced spans (a rewrite, not a new text)
MAX_CHANGED_FRACTION = 0.4
_QUOTES = "\"'“”‘’`"


@dataclass(frozen=True)
class AppliedEdit:
    """One accepted span edit: the words as the document has them, their replacement, how often they occur."""

    original: str
    replacement: str
    occurrences: int


@dataclass(frozen=True)
class AppliedRewrite:
    """The edited document and the edits that made it."""

    text: str
    edits: tuple[AppliedEdit, ...]
    changed_chars: int


def _clean(span: str) -> str:
    return span.strip().strip(_QUOTES).strip()


def _same(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _pattern(span: str) -> re.Pattern[str]:
    """``span`` as whole words, case-insensitive (a capitalized mention at a sentence start is the same detail)."""
    left = r"(?<!\w)" if span[:1].isalnum() or span[:1] == "_" else ""
    right = r"(?!\w)" if span[-1:].isalnum() or span[-1:] == "_" else ""
    return re.compile(left + re.escape(span) + right, re.IGNORECASE)


def _cased(replacement: str, matched: str, original: str) -> str:
    """The replacement capitalized like this mention when only the mention's first letter differs in case."""
    if matched[:1].isupper() and original[:1].islower():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def check_span_edits(source: str, edits: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edits as ``(span, replacement)`` pairs, cleaned and de-duplicated, each checked against ``source``.

    Raises:
        ValueError: a span is empty, not in the document verbatim (or only inside longer words), a replacement
            equals its span, or one span is given two different replacements.
    """
    if not edits:
        raise ValueError("no edit given; name at least one span of the document and its replacement")
    out: dict[str, str] = {}
    for i, (raw_original, raw_replacement) in enumerate(edits, 1):
        original, replacement = _clean(raw_original), _clean(raw_replacement)
        if not original:
            raise ValueError(f"edit {i}: 'original' is empty; copy the words to change from the document")
        if original.casefold() not in source.casefold():
            raise ValueError(
                f"edit {i}: 'original' ({original!r}) does not occur verbatim in the document; copy the words to "
                "change exactly, character for character"
            )
        if not _pattern(original).search(source):
            raise ValueError(f"edit {i}: 'original' ({original!r}) occurs only inside longer words; copy whole words")
        if _same(original, replacement):
            raise ValueError(
                f"edit {i}: the replacement of {original!r} is the same text; give a different value for it"
            )
        key = original.casefold()
        earlier = next((o for o in out if o.casefold() == key), None)
        if earlier is not None and not _same(out[earlier], replacement):
            raise ValueError(
                f"edit {i}: {original!r} is given two different replacements; change each span one way only"
            )
        if earlier is None:
            out[original] = replacement
    return list(out.items())


def apply_span_edits(
    source: str, edits: Sequence[tuple[str, str]], *, max_changed_fraction: float = MAX_CHANGED_FRACTION
) -> AppliedRewrite:
    """Replace every mention of each checked span of ``source`` in one pass (longest span first where they nest).

    Raises:
        ValueError: see :func:`check_span_edits`; also when the edits change more than ``max_changed_fraction`` of
            the document's characters, or leave it unchanged.
    """
    pairs = check_span_edits(source, edits)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]), reverse=True)  # longer nested span wins
    combined = re.compile("|".join(f"(?P<e{i}>{_pattern(pairs[i][0]).pattern})" for i in order), re.IGNORECASE)
    counts = [0] * len(pairs)
    changed = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal changed
        i = int(str(match.lastgroup)[1:])
        counts[i] += 1
        changed += len(match[0])
        return _cased(pairs[i][1], match[0], pairs[i][0])

    text = combined.sub(swap, source)
    if changed > max_changed_fraction * len(source):
        raise ValueError(
            f"the edits replace {changed} of the document's {len(source)} characters (at most "
            f"{max_changed_fraction:.0%}); change one detail with a few words, not whole sentences"
        )
    if _same(text, source):
        raise ValueError("the edited document is identical to the original; change one detail")
    applied = tuple(AppliedEdit(o, r, n) for (o, r), n in zip(pairs, counts, strict=True))
    return AppliedRewrite(text=text, edits=applied, changed_chars=changed)
