"""Retry policy shared by the remote backends: which failures are transient and how long to wait."""

from __future__ import annotations

import email.utils
import random
import time

# 408 request timeout, 409 conflict (some gateways), 425 too early, 429 rate limited, and every 5xx
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth another attempt (rate limits, timeouts, server errors)."""
    return status in RETRYABLE_STATUS or 500 <= status < 600


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    maximum: float = 30.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter for ``attempt`` (0-based); a server's ``Retry-After`` wins, capped at ``maximum``."""
    if retry_after is not None:
        return min(retry_after, maximum)
    cap = min(maximum, base * (2**attempt))
    return (rng or random).uniform(cap / 2, cap)
