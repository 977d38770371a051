"""Rule-based one-detail query edits for the ``query_edit`` strategy (small generators).

Small models (SmolLM2-135M) write fluent on-topic text but almost never pass the one-place edit check
(0 of 20 SciFact claims). Here the violation is made in code instead: typed operators replace exactly
one span, every result is verified with :func:`~negsynth_hf.synthesis.edits.diff_one_place`, and the
LLM only writes the passage for the edited query. Output is deterministic given (query, seed, k).

Operator preference (earlier first; the K edits round-robin over the types present):
``number`` (scale or shift a number, units untouched), ``population`` (children<->adults, mice<->rats...),
``setting`` (in vitro<->in vivo, acute<->chronic, before<->after, UK<->US...), and LAST ``direction``
(increases<->decreases, lack<->have...). Direction flips are the riskiest: for fact-checking
collections (SciFact, climate-fever) a passage answering the flipped claim may *refute* the original
claim, and refuting abstracts are judged relevant there, so such a "negative" can be a false negative.
They are therefore used only when no other operator supplies enough edits, and are typed ``direction``
so that callers can drop them: a profile's ``relevant_edit_kinds`` (``scientific``: direction) are passed as
``avoid`` and never made. :func:`edit_kind` types any change span (an LLM's too, whatever it calls it), so the
guard can mask an avoided kind that an LLM editor made anyway.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection
from dataclasses import dataclass

from .edits import diff_one_place, edit_problem

#: bump when operators or lexicons change (goes into the prompt version / cache keys)
RULE_EDITS_VERSION = "rules-v4"  # v4: edits failing edits.edit_problem (nonsense, same meaning) are skipped
#: preference order of the edit types; ``direction`` last on purpose (see the module docstring)
EDIT_TYPE_ORDER = ("number", "population", "setting", "direction")


def _pairs(*groups: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each term maps to the other members of its group (in order), so swaps go both ways."""
    out: dict[str, tuple[str, ...]] = {}
    for group in groups:
        for term in group:
            out.setdefault(term, tuple(t for t in group if t != term))
    return out


_POPULATION = _pairs(
    ("children", "adults"),
    ("child", "adult"),
    ("childhood", "adulthood"),
    ("men", "women"),
    ("man", "woman"),
    ("boys", "girls"),
    ("male", "female"),
    ("males", "females"),
    ("mice", "rats", "humans"),
    ("mouse", "rat"),
    ("murine", "human"),
    ("patients", "healthy volunteers"),
    ("elderly", "young"),
    ("older adults", "young adults"),
    ("infants", "adolescents"),
    ("neonates", "adolescents"),
    ("pregnant women", "postmenopausal women"),
    ("smokers", "non-smokers"),
    ("obese", "lean"),
)
_SETTING = _pairs(
    ("in vitro", "in vivo"),
    ("acute", "chronic"),
    ("before", "after"),
    ("early", "late"),
    ("short-term", "long-term"),
    ("systolic", "diastolic"),
    ("primary", "secondary"),
    ("benign", "malignant"),
    ("urban", "rural"),
    ("UK", "US"),
    ("Europe", "Asia"),
    ("China", "India"),
    ("Africa", "South America"),
    ("daily", "weekly"),
    ("oral", "intravenous"),
)
_DIRECTION = _pairs(
    ("increases", "decreases"),
    ("increase", "decrease"),
    ("increased", "decreased"),
    ("increasing", "decreasing"),
    ("reduces", "raises"),
    ("reduce", "raise"),
    ("reduced", "elevated"),
    ("lowers", "raises"),
    ("higher", "lower"),
    ("more", "less"),
    ("greater", "smaller"),
    ("promotes", "inhibits"),
    ("activates", "suppresses"),
    ("enhances", "impairs"),
    ("upregulates", "downregulates"),
    ("positively", "negatively"),
    ("lack", "have"),
    ("lacks", "has"),
)
_LEXICONS = (("population", _POPULATION), ("setting", _SETTING), ("direction", _DIRECTION))

# "have no role" -> "lack no role" is nonsense: no direction flip right before a negation
_NEGATION_AFTER = re.compile(r"\s+(?:no|not|none|neither|nothing|never)\b", re.IGNORECASE)
# a standalone number: not glued to a letter/digit/hyphen before it (p53, IL-6, COVID-19), and not
# followed by letters (2nd, 5mg) -- a following hyphen is fine (0-dimensional, 3-fold), except before a capital:
# a name like 4-PBA, 5-HT or 6-OHDA is an identifier, and 4-PBA -> 8-PBA names another compound, not a detail
_NUMBER = re.compile(r"(?<![\w\-/.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)(?![\w/]|[.,]\d|-[A-Z])")


@dataclass(frozen=True)
class RuleEdit:
    """One rule-made edit: the edited query, its type and the changed span as the diff check sees it."""

    edited_query: str
    edit_type: str
    old: str
    new: str


@dataclass(frozen=True)
class _Candidate:
    edit_type: str
    start: int
    end: int
    replacement: str
    alt: int  # 0 = the first alternative for this span


def _number_alternatives(whole: str, frac: str, pct: str) -> list[str]:
    if frac:
        value, places = float(whole.replace(",", "") + frac), len(frac) - 1
        alts = [value * 2, value / 2]
        if pct:
            alts = [a for a in alts if a <= 100] or [value / 2]
        return [f"{a:.{places}f}{pct}" for a in alts if f"{a:.{places}f}" != f"{value:.{places}f}"]
    n = int(whole.replace(",", ""))
    if 1900 <= n <= 2099 and not pct and "," not in whole:  # a year: shift, don't scale
        alts = [n - 10, n + 10]
    elif n == 0:
        alts = [1, 3]
    elif n == 1:
        alts = [2, 3]
    else:
        alts = [n * 2, n // 2, n + 1]
    if pct:
        alts = [a for a in alts if 0 <= a <= 100]
    fmt = "{:,}" if "," in whole else "{}"
    seen, out = {n}, []
    for a in alts:
        if a not in seen:
            seen.add(a)
            out.append(fmt.format(a) + pct)
    return out


def _match_case(found: str, replacement: str) -> str:
    if found.isupper() and len(found) > 1:
        return replacement if replacement.isupper() else replacement.upper()
    if found[:1].isupper() and not replacement[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _candidates(query: str) -> list[_Candidate]:
    out = []
    for m in _NUMBER.finditer(query):
        for alt, new in enumerate(_number_alternatives(m[1], m[2] or "", m[3])):
            out.append(_Candidate("number", m.start(), m.end(), new, alt))
    for edit_type, lexicon in _LEXICONS:
        # longest terms first, so "older adults" wins over a shorter overlapping term
        taken: list[tuple[int, int]] = []
        for term in sorted(lexicon, key=len, reverse=True):
            flags = 0 if term.isupper() else re.IGNORECASE
            for m in re.finditer(rf"(?<![\w\-]){re.escape(term)}(?![\w\-])", query, flags):
                if any(m.start() < e and s < m.end() for s, e in taken):
                    continue
                if edit_type == "direction" and _NEGATION_AFTER.match(query, m.end()):
                    continue
                taken.append((m.start(), m.end()))
                for alt, new in enumerate(lexicon[term]):
                    out.append(_Candidate(edit_type, m.start(), m.end(), _match_case(m[0], new), alt))
    return out


def rule_edits(query: str, k: int, *, seed: int = 0, avoid: Collection[str] = ()) -> list[RuleEdit]:
    """Up to ``k`` distinct one-span edits of ``query``; ``[]`` when no operator applies.

    Types alternate in :data:`EDIT_TYPE_ORDER` (so K=2 mixes e.g. a number and a population edit), the
    spans within a type are ordered by ``seed``, and direction flips come only after all other edits.
    Edit types in ``avoid`` (a profile's ``relevant_edit_kinds``) are never made. Every returned edit passed
    :func:`diff_one_place` and :func:`~negsynth_hf.synthesis.edits.edit_problem` (no nonsense, no same-meaning
    edit).
    """
    by_type: dict[str, list[_Candidate]] = {t: [] for t in EDIT_TYPE_ORDER}
    for cand in _candidates(query):
        if cand.edit_type not in avoid:
            by_type[cand.edit_type].append(cand)
    ordered: list[_Candidate] = []
    for edit_type in EDIT_TYPE_ORDER:
        cands = by_type[edit_type]
        spans = sorted({c.start for c in cands})
        random.Random(f"{seed}\x00{edit_type}\x00{query}").shuffle(spans)
        rank = {s: i for i, s in enumerate(spans)}
        cands.sort(key=lambda c: (c.alt, rank[c.start]))
    # round-robin over the non-direction types, then every direction edit
    queues = [by_type[t] for t in EDIT_TYPE_ORDER if t != "direction"]
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    ordered.extend(by_type["direction"])

    out: list[RuleEdit] = []
    seen = {query.strip().lower()}
    for cand in ordered:
        if len(out) >= k:
            break
        edited = query[: cand.start] + cand.replacement + query[cand.end :]
        if edited.strip().lower() in seen:
            continue
        try:
            diff = diff_one_place(query, edited)
        except ValueError:  # e.g. a span too long for a very short query: not a one-place edit
            continue
        if edit_problem(query, diff.old, diff.new, edited=edited) is not None:  # "has anyone" -> "lacks anyone"
            continue
        seen.add(edited.strip().lower())
        out.append(RuleEdit(edited, cand.edit_type, diff.old, diff.new))
    return out


def rule_edit(query: str, k: int, *, seed: int = 0, avoid: Collection[str] = ()) -> RuleEdit | None:
    """The k-th (0-based) rule edit of ``query``, or ``None`` when there are not that many."""
    edits = rule_edits(query, k + 1, seed=seed, avoid=avoid)
    return edits[k] if len(edits) > k else None


#: words whose appearance or disappearance in an edit flips the claim's direction ("has a role" -> "has no role")
NEGATIONS = frozenset({"no", "not", "never", "none", "neither", "nor", "without", "cannot", "lack", "lacks", "fails"})
_DIRECTION_TERMS = frozenset(_DIRECTION) | frozenset(t for alts in _DIRECTION.values() for t in alts)
_KIND_LEXICONS = (("population", _POPULATION), ("setting", _SETTING))


def _words(text: str) -> list[str]:
    return re.findall(r"[\w%.\-]+", text.lower().replace("n't", " not"))


def edit_kind(old: str, new: str, declared: str | None = None) -> str:
    """The kind of a one-span edit ``old -> new``, judged from the words, not from what an editor called it.

    ``direction`` when a negation appears or disappears or a direction term is swapped (an LLM labelling such an
    edit "other" must not slip past a profile that avoids direction flips); then ``number``, ``population`` and
    ``setting`` by the rule lexicons; else the ``declared`` kind (or ``"other"``).
    """
    wo, wn = _words(old), _words(new)
    if (set(wo) ^ set(wn)) & NEGATIONS:
        return "direction"
    if (set(wo) & _DIRECTION_TERMS) and (set(wn) & _DIRECTION_TERMS) and set(wo) != set(wn):
        return "direction"
    if wo and wn and all(re.fullmatch(r"[\d.,%]+", w) for w in wo + wn):
        return "number"
    for kind, lexicon in _KIND_LEXICONS:
        lo, ln = old.strip().lower(), new.strip().lower()
        if lo in {t.lower() for t in lexicon} and ln in {t.lower() for t in lexicon}:
            return kind
    return declared or "other"
