"""Fit a prompt to the model's context before it is sent: drop candidates, then trim the positive, by tokens.

A request that does not fit is refused by the server (llama.cpp answers HTTP 400 ``exceed_context_size_error``)
or, worse, silently truncated; either way the row is lost. So each counterfactual request is rendered, its
tokens counted with the generator's own tokenizer (``count_tokens``), and, if prompt plus reply budget exceed
the generator's ``context_window``, the least important content goes first: the last mined candidates, then
the end of the positive. What was cut is counted (``trimmed_tokens``, ``dropped_candidates``) and recorded in
the row's provenance.

No tokenizer call is made when the text cannot exceed the window: a token is at least one UTF-8 byte, so
the byte length bounds the token count. A fully cached rerun therefore needs no model for counting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..generators.base import prompt_token_count, surely_fits

Messages = tuple[dict[str, str], ...]
#: slack under the window after trimming, so a tokenization that differs at the cut does not overflow
MARGIN = 16


@dataclass(frozen=True)
class TokenBudget:
    """A generator's context window and tokenizer."""

    window: int
    count: Callable[[Sequence[str]], list[int]]

    @classmethod
    def of(cls, generator: object) -> TokenBudget | None:
        """The budget of ``generator``, or ``None`` when it declares no context window."""
        window = getattr(generator, "context_window", None)
        count = getattr(generator, "count_tokens", None)
        if not window or not callable(count):
            return None
        return cls(int(window), count)

    def prompt_tokens(self, messages: Messages) -> int:
        return prompt_token_count(messages, self.count)


@dataclass(frozen=True)
class Fitted:
    messages: Messages
    trimmed_tokens: int = 0  # prompt tokens removed
    dropped_candidates: int = 0
    fits: bool = True


def fit_prompt(
    render: Callable[[str, Sequence[str]], Messages],
    positive: str,
    candidates: Sequence[str],
    *,
    reply_tokens: int,
    budget: TokenBudget | None,
) -> Fitted:
    """``render(positive, candidates)``, with candidates dropped from the end and the positive shortened until
    the prompt plus ``reply_tokens`` fits ``budget.window``; ``fits=False`` when even an empty positive does not."""
    messages = render(positive, candidates)
    if budget is None or surely_fits(messages, reply_tokens, budget.window):
        return Fitted(messages)
    limit = budget.window - reply_tokens - MARGIN
    original = current = budget.prompt_tokens(messages)
    kept = list(candidates)
    while current > limit and kept:
        kept.pop()
        messages = render(positive, kept)
        current = budget.prompt_tokens(messages)
    text = positive
    for _ in range(4):  # characters per token vary along the text: re-measure after each cut
        if current <= limit or not text:
            break
        tokens = max(budget.count([text])[0], 1)
        keep_tokens = max(tokens - (current - limit), 0)
        text = text[: int(len(text) * keep_tokens / tokens)].rstrip()
        messages = render(text + " ..." if text else "", kept)
        current = budget.prompt_tokens(messages)
    return Fitted(messages, original - current, len(candidates) - len(kept), fits=current <= limit)
