"""The one small protocol every LLM backend implements, and its request/response records.

Strategies (``negsynth_hf.synthesis``) only ever talk to a :class:`ChatGenerator`; backends (an
OpenAI-compatible server, in-process transformers, the embedded SmolLM2) only ever see
:class:`ChatRequest` objects. Caching and retries wrap a generator without either side knowing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completion call.

    Args:
        messages: OpenAI-style messages, ``({"role": "system"|"user"|"assistant", "content": str}, ...)``.
        json_schema: a JSON Schema the answer must follow; backends that support structured output
            send or enforce it, all callers still validate what comes back.
        schema_name: name of the schema (OpenAI's ``json_schema.name``).
        max_new_tokens: generation budget.
        temperature: sampling temperature; 0 means greedy.
        seed: sampling seed where the backend honours one.
        prompt_version: id of the prompt template that rendered ``messages``; part of the cache key.
        top_logprobs: alternatives per generated token to return with their log-probabilities (0: none). The
            reply then carries ``extra["logprobs"]``: one ``{"token", "logprob", "top": {token: logprob}}``
            per generated token (backends that cannot give them leave it out; a judge then counts votes).
    """

    messages: tuple[dict[str, str], ...]
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    max_new_tokens: int = 512
    temperature: float = 0.2
    seed: int | None = None
    prompt_version: str = ""
    top_logprobs: int = 0


@dataclass
class ChatResponse:
    """What one call produced. ``text`` is ``None`` exactly when ``error`` says why."""

    text: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.text is not None and self.error is None


#: template tokens per message (role markers): a safe upper bound for the chat templates of the shipped models
TOKENS_PER_MESSAGE = 8


def prompt_token_count(messages: Sequence[dict[str, str]], count: Callable[[Sequence[str]], list[int]]) -> int:
    """Tokens of ``messages`` under ``count`` (a tokenizer's): contents plus the per-message template bound."""
    return sum(count([m.get("content", "") for m in messages])) + TOKENS_PER_MESSAGE * len(messages)


def surely_fits(messages: Sequence[dict[str, str]], reply_tokens: int, window: int) -> bool:
    """True when ``messages`` plus ``reply_tokens`` cannot exceed ``window`` tokens, without tokenizing: a token is
    at least one UTF-8 byte, so the byte length bounds the token count (a fully cached rerun needs no model)."""
    size = sum(len(m.get("content", "").encode("utf-8")) for m in messages)
    return size + TOKENS_PER_MESSAGE * len(messages) + reply_tokens <= window


@runtime_checkable
class ChatGenerator(Protocol):
    """A chat LLM that answers batches of requests.

    Implementations never raise for a failed call: the matching :class:`ChatResponse` carries the
    reason in ``error`` so one bad row never costs the others.
    """

    @property
    def model_id(self) -> str:
        """Stable identifier of the model (goes into provenance and cache keys; never a secret)."""
        ...

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer every request, in order."""
        ...

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Async twin of :meth:`generate` (drives remote backends concurrently)."""
        ...
