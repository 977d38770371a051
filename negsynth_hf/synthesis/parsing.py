"""Turn an LLM reply into a validated stage model, repairing the defects models commonly make.

Repairs, in order: drop ``<think>...</think>`` blocks, unwrap a code fence, cut leading/trailing
prose down to the first balanced JSON value, then (only if ``json.loads`` still fails) remove
trailing commas, map Python literals, and turn single quotes into double quotes when the text has
no double quotes at all (the only case where that swap cannot corrupt content). A bare list where an
object was expected is wrapped under the model's single list field. Whatever cannot be repaired
becomes a precise error string, which the synthesizer feeds back in its re-ask.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"^\s*<think>.*", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
# only in value position, so a word "None" inside a string is never touched
_PY_LITERAL = re.compile(r"([:\[,]\s*)(True|False|None)(?=\s*[,}\]])")
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i won'?t|i am unable|i'?m unable|"
    r"as an ai\b|i apologi[sz]e|unfortunately,? i)",
    re.IGNORECASE,
)


@dataclass
class ParseOutcome(Generic[M]):
    """Result of parsing one reply: ``value`` or ``error`` (never both), plus the repairs applied."""

    value: M | None = None
    error: str | None = None
    repairs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None


def strip_think(text: str) -> tuple[str, bool]:
    """Remove reasoning blocks; an unterminated leading ``<think>`` hides everything after it."""
    out = _THINK.sub("", text)
    if _THINK_OPEN.match(out):
        return "", True
    return out, out != text


def looks_like_refusal(text: str) -> bool:
    """True for replies that open with a refusal or apology ("I'm sorry, I can't ...")."""
    return bool(_REFUSAL.match(text.strip()))


def _balanced_span(text: str, start: int) -> str | None:
    """The JSON value starting at ``text[start]`` up to its matching bracket (string-aware), if closed."""
    stack: list[str] = []
    in_str: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == in_str:
                in_str = None
            continue
        if ch in "\"'":
            in_str = ch
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return text[start : i + 1]
    return None


def _fix_literals(text: str) -> str:
    """Python/JS literals outside strings -> JSON; single quotes -> double when no double quotes exist."""
    if '"' not in text and "'" in text:
        text = text.replace("'", '"')
    text = _TRAILING_COMMA.sub(r"\1", text)
    return _PY_LITERAL.sub(lambda m: m[1] + {"True": "true", "False": "false", "None": "null"}[m[2]], text)


def extract_json(text: str) -> tuple[Any, list[str]]:
    """Find and decode the first JSON object or array in ``text``.

    Returns:
        (decoded value, names of the repairs applied).

    Raises:
        ValueError: with a short reason when no JSON value can be recovered.
    """
    repairs: list[str] = []
    body, had_think = strip_think(text)
    if had_think:
        repairs.append("think_block")
    try:  # a reply that is valid JSON as a whole wins: a fence may sit INSIDE one of its strings
        return json.loads(body.strip()), repairs
    except json.JSONDecodeError:
        pass
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1)
        repairs.append("code_fence")
    body = body.strip()
    if not body:
        raise ValueError("empty response" if not repairs else "no content outside the <think> block")
    try:
        return json.loads(body), repairs
    except json.JSONDecodeError:
        pass
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        if looks_like_refusal(body):
            raise ValueError(f"refusal instead of JSON: {body[:120]!r}")
        raise ValueError(f"no JSON object found in the reply: {body[:120]!r}")
    start = min(starts)
    span = _balanced_span(body, start)
    if span is None:
        raise ValueError("truncated or unbalanced JSON (no matching closing bracket)")
    if span != body:
        repairs.append("surrounding_text")
    try:
        return json.loads(span), repairs
    except json.JSONDecodeError:
        pass
    fixed = _fix_literals(span)
    try:
        value = json.loads(fixed)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    repairs.append("syntax")
    return value, repairs


def format_validation_error(exc: ValidationError, *, limit: int = 6) -> str:
    """Compact, model-readable summary: ``path.to.field: message; ...``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "schema violation: " + "; ".join(parts)


def _list_field(model: type[BaseModel]) -> str | None:
    """The model's only list-typed field, where a bare list can be wrapped."""
    names = [n for n, f in model.model_fields.items() if getattr(f.annotation, "__origin__", None) is list]
    return names[0] if len(names) == 1 else None


def parse_reply(text: str | None, model: type[M]) -> ParseOutcome[M]:
    """Extract, repair and validate one reply against ``model``; never raises."""
    if text is None or not text.strip():
        return ParseOutcome(error="empty response")
    try:
        data, repairs = extract_json(text)
    except ValueError as exc:
        return ParseOutcome(error=str(exc))
    if isinstance(data, list):
        key = _list_field(model)
        if key is None:
            return ParseOutcome(error="expected a JSON object, got a list", repairs=repairs)
        data = {key: data}
        repairs.append("bare_list")
    if not isinstance(data, dict):
        return ParseOutcome(error=f"expected a JSON object, got {type(data).__name__}", repairs=repairs)
    try:
        return ParseOutcome(value=model.model_validate(data), repairs=repairs)
    except ValidationError as exc:
        return ParseOutcome(error=format_validation_error(exc), repairs=repairs)
