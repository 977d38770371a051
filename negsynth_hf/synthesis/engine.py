"""Sans-IO retry engine: one LLM call per task, validated, re-asked with the error, bounded.

A strategy is a Python generator that *yields* lists of :class:`ChatRequest` and is *sent* the list of
:class:`ChatResponse`. The same plan therefore runs under ``generator.generate`` (sync) and under
``await generator.agenerate`` (async), and every yield is one batch: stage 1 for all rows, then the
re-asks of those that failed, then stage 2, so a batching or concurrent backend sees whole batches.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ..generators.base import ChatRequest, ChatResponse
from .prompts import reask_messages
from .schemas import max_tokens_for

#: parse(text) -> (value, None) on success or (None, error) on failure
Parser = Callable[[str], tuple[Any, "str | None"]]
Plan = Generator[list[ChatRequest], list[ChatResponse], None]


@dataclass
class RowStats:
    """Accounting for one input row, across all its calls.

    ``rejected``: the requests of this row's failed tasks (no value after every attempt) whose replies arrived
    but were rejected (JSON failing the stage's validation, a semantic check). The driver asks a caching
    generator to forget them when the row fails, so a rerun asks the LLM again instead of replaying them
    (``Synthesizer._finish``). A task that ends with a value keeps its whole chain: a rerun replays it.
    """

    llm_calls: int = 0
    cached_calls: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    max_attempts: int = 0
    #: stage -> attempts each of this row's tasks of that stage took (negative: failed after that many)
    stage_attempts: dict[str, list[int]] = field(default_factory=dict)
    rejected: list[ChatRequest] = field(default_factory=list, repr=False)


def reply_budget(schema: dict[str, Any], cap: int | None, *, own: int | None = None) -> int:
    """Enough tokens for any reply ``schema`` allows (so none is cut off mid-JSON), or ``own`` when the stage sets
    one; ``cap`` (the user's ``max_new_tokens``) lowers it."""
    tokens = own or max_tokens_for(schema)
    return tokens if cap is None else min(tokens, cap)


@dataclass
class Task:
    """One call that must end in a valid value; ``error`` holds the last reason when it did not."""

    row: int
    stage: str
    messages: tuple[dict[str, str], ...]
    schema_name: str
    schema: dict[str, Any]
    parse: Parser
    prompt_version: str
    meta: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int | None = None  # the stage's budget; None: sized from ``schema`` (``max_tokens_for``)
    value: Any = None
    error: str | None = None
    previous: str | None = None  # the last rejected reply (shown in the re-ask)
    reply: str | None = None  # the accepted reply (a follow-up turn continues from it)
    attempts: int = 0
    rejected: list[ChatRequest] = field(default_factory=list, repr=False)  # requests whose reply failed parse

    @property
    def ok(self) -> bool:
        return self.value is not None

    def budget(self, cap: int | None) -> int:
        """Tokens this task's reply may take (:func:`reply_budget`; a stage's own cap counts as its schema's)."""
        return reply_budget(self.schema, cap, own=self.max_new_tokens)

    def failure(self) -> str:
        return f"{self.stage}: {self.error} after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"


@dataclass(frozen=True)
class CallSettings:
    max_new_tokens: int | None  # a cap on every stage's budget; None: each stage's schema-sized budget
    temperature: float
    seed: int
    max_attempts: int


def distinct(parse: Parser, seen: set[str], key: Callable[[Any], str], what: str) -> Parser:
    """``parse`` plus a check that the value's ``key`` is new among the tasks sharing ``seen`` (one row's slots).

    The tasks of a row are parsed one after another within a round, so the first of two equal values wins and the
    other is re-asked with the reason: each slot of a row ends with a distinct value or a recorded failure.
    """

    def check(text: str) -> tuple[Any, str | None]:
        value, error = parse(text)
        if error is not None or value is None:
            return value, error
        k = key(value)
        if k in seen:
            return None, f"{what} is the same as one already given for this row; change a different detail"
        seen.add(k)
        return value, None

    return check


def run_tasks(tasks: list[Task], settings: CallSettings, stats: list[RowStats]) -> Plan:
    """Drive ``tasks`` to success or exhaustion, one yielded batch per attempt round."""
    pending = list(tasks)
    for attempt in range(settings.max_attempts):
        if not pending:
            break
        requests = [
            ChatRequest(
                messages=t.messages if attempt == 0 else reask_messages(t.messages, t.previous, t.error or ""),
                json_schema=t.schema,
                schema_name=t.schema_name,
                max_new_tokens=t.budget(settings.max_new_tokens),
                temperature=settings.temperature,
                # a new seed per attempt: a cached or greedy backend must not replay the same bad answer
                seed=settings.seed + attempt,
                prompt_version=t.prompt_version,
            )
            for t in pending
        ]
        responses = yield requests
        if not isinstance(responses, list) or len(responses) != len(requests):
            got = len(responses) if isinstance(responses, list) else type(responses).__name__
            responses = [
                ChatResponse(text=None, error=f"generator returned {got} responses for {len(requests)}")
            ] * len(requests)
        still = []
        for task, request, resp in zip(pending, requests, responses, strict=True):
            task.attempts += 1
            st = stats[task.row]
            st.llm_calls += 1
            st.cached_calls += int(bool(getattr(resp, "cached", False)))
            st.completion_tokens += int(getattr(resp, "completion_tokens", 0) or 0)
            st.prompt_tokens += int(getattr(resp, "prompt_tokens", 0) or 0)
            st.max_attempts = max(st.max_attempts, task.attempts)
            if not resp.ok:
                task.error, task.previous = f"generator error: {resp.error or 'no text'}", None
                still.append(task)
                continue
            try:
                value, error = task.parse(resp.text or "")
            except Exception as exc:  # a parser bug must cost one row, not the batch
                value, error = None, f"internal parse error: {type(exc).__name__}: {exc}"
            if error is None and value is not None:
                task.value, task.error, task.reply = value, None, resp.text
                st.stage_attempts.setdefault(task.stage, []).append(task.attempts)
            else:
                task.error, task.previous = error or "no value", resp.text
                task.rejected.append(request)
                still.append(task)
        pending = still
    for task in pending:  # failed for good: its rejected replies must not be replayed by a rerun
        stats[task.row].rejected.extend(task.rejected)
        stats[task.row].stage_attempts.setdefault(task.stage, []).append(-task.attempts)
