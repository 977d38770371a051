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


# --------------------------------------------------------------------------- edit checks
# A one-place edit can pass the diff check and still make no counterfactual: the edited query is nonsense
# ("has anyone" -> "lacks anyone", "aged 32 to 24") or means what the original meant (a qualifier added,
# "non-infertile" for "fertile"). A passage written for it is then junk or still answers the original.

_AUXILIARY = frozenset({"has", "have", "had"})
_LACK = frozenset({"lack", "lacks", "lacked"})
_QUESTION_START = frozenset(
    "what which how why when where who whose has have had is are was were does do did can could should would will"
    .split()
)  # fmt: skip
#: past participles that follow an auxiliary "have" ("have been", "has shown"); regular ones end in -ed/-en
_PARTICIPLES = frozenset(
    "been made done found shown seen given taken become had got led met set put held kept left lost won begun brought"
    " built caught drawn felt grown heard known laid meant paid read run said sent spent stood taught thought told"
    " understood written anyone any".split()
)  # fmt: skip
_VAGUE = re.compile(r"^(?:(?:a|an|some)\s+)?(?:different|other|another|various|unspecified)\b", re.IGNORECASE)
_NEGATING_PREFIX = re.compile(r"^(?:non-?|un|in|im|il|ir|dis|a)(?=\w)", re.IGNORECASE)
_RANGE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*%?\s*(?:-|–|to|and)\s*(\d+(?:\.\d+)?)(?!\w|\.\d)", re.IGNORECASE)
_HEALTHY_WITH_CONDITION = re.compile(r"^\s*(?:with|who (?:have|had|suffer)|suffering)\b", re.IGNORECASE)


@dataclass(frozen=True)
class EditProblem:
    """Why an edit makes no counterfactual: ``code`` (counted, in provenance) and a message (for a re-ask)."""

    code: str
    message: str


def _span_start(query: str, old: str, new: str, edited: str | None) -> int:
    """Where the changed span starts in ``query`` (word-level diff; the first occurrence of ``old`` otherwise)."""
    if edited is not None:
        for tag, i1, _, _, _ in difflib.SequenceMatcher(None, query, edited, autojunk=False).get_opcodes():
            if tag != "equal":
                return i1
    idx = query.lower().find(old.lower()) if old else -1
    return max(idx, 0)


def _words_of(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _ranges(text: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in _RANGE.findall(text)]


def edit_problem(query: str, old: str, new: str, *, edited: str | None = None) -> EditProblem | None:
    """The reason the one-span edit ``old -> new`` of ``query`` cannot make a true counterfactual, or ``None``.

    Pure code, in order: an insertion (``old`` empty: a qualifier narrows the query, and a passage about the
    narrower query still answers the original); a vague replacement ("a different shape"); a replacement that
    only flips a negating prefix twice ("infertile" -> "non-infertile") or only spelling/inflection; a replacement
    already present elsewhere in the query ("before and after" -> "before and before"); an auxiliary "has/have"
    turned into "lacks" ("has anyone developed" -> "lacks anyone developed"); "healthy volunteers" given a
    condition ("healthy volunteers with lupus"); a number range turned upside down ("16 to 24" -> "32 to 24").

    Args:
        edited: the edited query, when known (locates the span exactly; else the first occurrence of ``old``).
    """
    old, new = old.strip(), new.strip()
    wo, wn = _words_of(old), _words_of(new)
    if not wo:
        return EditProblem("insertion", "the edit only adds words; a narrower query is still answered by passages "
                           "about the original; replace one detail with a different value instead")  # fmt: skip
    if _VAGUE.match(new):
        return EditProblem("vague_replacement", f"the replacement {new!r} names no concrete detail; name one")
    if _same_meaning(old, new):
        return EditProblem("same_meaning", f"{old!r} -> {new!r} keeps the meaning; change what the query asks")
    start = _span_start(query, old, new, edited)
    rest = query[:start] + " " + query[start + len(old) :]
    if re.search(rf"(?<![\w.]){re.escape(new)}(?!\w|\.\d)", rest, re.IGNORECASE):
        return EditProblem("replacement_in_query", f"{new!r} already occurs in the query; pick another value")
    before, after = _words_of(query[:start]), _words_of(query[start + len(old) :])
    if wo[-1] in _AUXILIARY and wn[-1] in _LACK and _auxiliary_use(before, after):
        return EditProblem("auxiliary_flip", f"{old!r} is an auxiliary here; {new!r} makes the query ungrammatical")
    if "healthy" in wn and _HEALTHY_WITH_CONDITION.match(query[start + len(old) :]):
        return EditProblem("contradictory_population", f"{new!r} cannot have the condition the query names")
    new_query = edited if edited is not None else query[:start] + new + query[start + len(old) :]
    if any(a < b for a, b in _ranges(query)) and any(a >= b for a, b in _ranges(new_query)):
        return EditProblem("inverted_range", "the edit turns a number range upside down; keep ranges ascending")
    return None


def _same_meaning(old: str, new: str) -> bool:
    """Only inflection, spelling or a doubled negating prefix differs ("Alzheimers"/"Alzheimer's",
    "non-infertile"/"fertile")."""

    def core(s: str) -> str:
        return re.sub(r"(?:'s|s)$", "", re.sub(r"[^\w']|_", "", s.lower()))

    if core(old) == core(new):
        return True
    for a, b in ((old, new), (new, old)):
        if a.lower().startswith(("non-", "non ", "not ")):
            inner = a[4:].strip()
            stripped = _NEGATING_PREFIX.sub("", inner, count=1)
            if stripped != inner and core(stripped) == core(b):
                return True
    return False


def _auxiliary_use(before: list[str], after: list[str]) -> bool:
    """An auxiliary "has/have": it opens a question, or a participle (or "anyone"/"any") follows it."""
    if not before or (before[0] in _QUESTION_START and len(before) <= 4):
        return True
    nxt = after[0] if after else ""
    return nxt in _PARTICIPLES or bool(re.fullmatch(r"\w{3,}(?:ed|en|wn)", nxt))
