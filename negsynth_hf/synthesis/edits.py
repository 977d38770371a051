"""The query-edit check and plain-text fallbacks for models that cannot emit JSON.

The check is what makes the query-edit strategy trustworthy with weak models: whatever the model
says, the edited query is accepted only if a word-level diff against the original shows exactly one
contiguous changed span, small relative to the query. Identical queries and wholesale rewrites are
rejected (and re-asked with the reason).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

from .parsing import looks_like_refusal, strip_think

_WORD = re.compile(r"\w+(?:[.,'\-/]\w+)*%?")
_FENCE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)
_LABEL = re.compile(
    r"^\s*(?:here(?:'s| is| are)\b[^:\n]*:|(?:the\s+)?(?:original|edited|new|modified|rewritten|changed)\s*"
    r"(?:text|sentence|query|claim|question|version)?(?:\s+is)?\s*:|(?:passage|answer|output|abstract|response)\s*:)\s*",
    re.IGNORECASE,
)

_NUMBERING = re.compile(r"^\s*\d{1,2}[.)]\s+")


@dataclass(frozen=True)
class QueryDiff:
    """The single changed span of an accepted edit (original words, replacement words)."""

    old: str
    new: str
    changed_words: int
    query_words: int


def diff_one_place(original: str, edited: str, *, max_edit_ratio: float = 0.4, min_span: int = 3) -> QueryDiff:
    """Accept ``edited`` only if it differs from ``original`` in one contiguous word span.

    Words are compared case-insensitively, punctuation ignored. The changed span (the longer of its
    two sides) may be at most ``max(min_span, ceil(max_edit_ratio * len(original words)))`` words.

    Raises:
        ValueError: with a reason suitable for a re-ask.
    """
    a_words, b_words = _WORD.findall(original), _WORD.findall(edited)
    a, b = [w.lower() for w in a_words], [w.lower() for w in b_words]
    if not b:
        raise ValueError("the edited query is empty")
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        raise ValueError("the edited query is identical to the original; change exactly one detail")
    if len(ops) > 1:
        raise ValueError(
            f"the edit changes {len(ops)} separate places; change exactly one detail and copy every other word"
        )
    tag, i1, i2, j1, j2 = ops[0]
    if tag == "delete":
        raise ValueError("the edit only deletes words; replace one detail with a different value instead")
    if tag == "insert" and i1 in (0, len(a)):
        # a label ("The original text is: ...") or an appended clause, not a changed detail
        raise ValueError("the edit only adds words before or after the query; change one detail inside it instead")
    changed = max(i2 - i1, j2 - j1)
    limit = max(min_span, math.ceil(max_edit_ratio * len(a)))
    if changed > limit:
        raise ValueError(
            f"the edit rewrites {changed} consecutive words (at most {limit} allowed); change one detail only"
        )
    return QueryDiff(" ".join(a_words[i1:i2]), " ".join(b_words[j1:j2]), changed, len(a))


def apply_replacement(query: str, original: str, replacement: str) -> str:
    """Replace the first case-insensitive occurrence of ``original`` in ``query`` by ``replacement``.

    Raises:
        ValueError: when ``original`` is not copied from the query (the re-ask says so).
    """
    original = original.strip().strip("\"'“”").strip()
    replacement = replacement.strip().strip("\"'“”").strip()
    if not original:
        raise ValueError("'original' is empty; copy the words to change from the query")
    idx = query.lower().find(original.lower())
    if idx < 0:
        raise ValueError(f"'original' ({original!r}) does not occur in the query; copy the words to change exactly")
    return query[:idx] + replacement + query[idx + len(original) :]


def plain_edit(text: str, query: str) -> str | None:
    """An edited query from a non-JSON reply: ``X -> Y`` / ``original: X, replacement: Y`` or a rewritten line."""
    body = plain_text(text)
    if body is None:
        return None
    raw, _ = strip_think(text)
    m = re.search(r"original\W{0,3}\s*[:=]\s*(.+?)\s*[,;\n]\s*\W{0,3}replacement\W{0,3}\s*[:=]\s*(.+)", raw, re.I)
    if m:
        try:
            return apply_replacement(query, m[1], m[2].splitlines()[0])
        except ValueError:
            pass
    for line in body.splitlines():
        if "->" in line or "→" in line:
            left, right = re.split(r"->|→", line, maxsplit=1)
            try:
                return apply_replacement(query, _LABEL.sub("", left.strip(), count=1), right)
            except ValueError:
                break
    return plain_query(text)


def plain_text(text: str) -> str | None:
    """Best-effort prose from a non-JSON reply: no think block, fence, label line or wrapping quotes."""
    body, _ = strip_think(text)
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1)
    body = _LABEL.sub("", body.strip(), count=1).strip()
    body = body.strip().strip('"').strip("“”").strip()
    if not body or looks_like_refusal(body):
        return None
    return body


def plain_query(text: str) -> str | None:
    """First usable line of a non-JSON reply to the edit prompt (after a ``->`` if the model echoed one)."""
    body = plain_text(text)
    if body is None:
        return None
    for line in body.splitlines():
        line = _NUMBERING.sub("", _LABEL.sub("", line.strip(), count=1), count=1)
        if "->" in line:
            line = line.rsplit("->", 1)[1]
        line = line.strip().strip('"').strip("“”").strip()
        if line:
            return line
    return None


def split_passages(text: str) -> list[str]:
    """Split a plain-text reply holding a numbered list of passages; otherwise one passage."""
    parts = re.split(r"(?m)^\s*(?:\d+[.)]|passage\s*\d+\s*:|-\s)\s*", text, flags=re.IGNORECASE)
    parts = [p.strip() for p in parts if p and p.strip()]
    return parts if len(parts) > 1 else [text.strip()]
