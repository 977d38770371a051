"""A content-addressed on-disk response cache and the generator wrapper that uses it.

A crashed or interrupted synthesis run resumes where it stopped: every successful response is
stored under ``sha256(prompt_version, messages, json_schema, model id, sampling params, package
version)``. Entries are written atomically (temporary file + ``os.replace``) into sharded folders,
so several processes (``datasets.map(num_proc=...)``) can share one directory; a corrupt or partial
entry is treated as a miss and counted. Failed responses are never cached.

Entries are not ``fsync``'ed: a killed process loses nothing it wrote (the kernel holds the data), and what a
power loss may truncate is read as a corrupt entry, counted and asked again. An ``fsync`` per answer cost more
than the whole client (3.4 ms each, 200,000 answers per 100,000 rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .base import ChatGenerator, ChatRequest, ChatResponse

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def _package_version() -> str:
    from negsynth_hf import __version__

    return __version__


def request_key(request: ChatRequest, *, model_id: str, extra: dict[str, Any] | None = None) -> str:
    """The cache key of ``request`` answered by ``model_id`` (hex sha256; no secret ever enters it)."""
    payload = {
        "format": CACHE_FORMAT,
        "package": _package_version(),
        "model": model_id,
        "prompt_version": request.prompt_version,
        "messages": [dict(m) for m in request.messages],
        "json_schema": request.json_schema,
        "schema_name": request.schema_name if request.json_schema is not None else None,
        "temperature": float(request.temperature),
        "max_new_tokens": int(request.max_new_tokens),
        "seed": request.seed,
        "backend": extra or {},
    }
    if request.top_logprobs:  # only when asked for, so keys of plain requests are unchanged
        payload["top_logprobs"] = int(request.top_logprobs)
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    # surrogatepass: a lone surrogate in one row must not make its key (and with it the whole batch) fail
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    """Successful :class:`ChatResponse` objects on disk, one JSON file per key in ``<dir>/<key[:2]>/<key>.json``.

    Args:
        directory: cache folder (created).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.corrupt = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"

    def __reduce__(self):
        return (type(self), (str(self.directory),))

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResponse | None:
        """The stored response for ``key`` (``cached=True``), or ``None`` on a miss or an unreadable entry."""
        path = self.path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") != key or not isinstance(data.get("text"), str):
                raise ValueError("entry does not match its key or has no text")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as err:
            self.corrupt += 1
            logger.warning("Ignoring unreadable response-cache entry %s (%s); it will be regenerated.", path, err)
            return None
        return ChatResponse(
            text=data["text"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            latency_s=float(data.get("latency_s", 0.0)),
            cached=True,
            extra=dict(data.get("extra") or {}),
        )

    def put(self, key: str, response: ChatResponse, *, model_id: str | None = None, prompt_version: str = "") -> bool:
        """Store ``response`` atomically if it succeeded; returns whether it was written."""
        if not response.ok:
            return False
        entry = {
            "key": key,
            "model_id": model_id,
            "prompt_version": prompt_version,
            "text": response.text,
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "latency_s": response.latency_s,
            "extra": response.extra,
            "created": time.time(),
        }
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, ensure_ascii=True, default=str)  # any str, lone surrogates included
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return True

    def delete(self, key: str) -> bool:
        """Remove the entry for ``key``; returns whether one existed."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))


_NO_JSON = object()


def _first_json_value(text: str) -> Any:
    """The JSON value in ``text`` (bare, in code fences or after prose), or ``_NO_JSON``."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, char in enumerate(stripped):
        if char in "{[":
            try:
                return decoder.raw_decode(stripped, i)[0]
            except ValueError:
                continue
    return _NO_JSON


def usable_response(request: ChatRequest, response: ChatResponse) -> bool:
    """Default cache policy: successful and, when a JSON schema was asked for, the text holds JSON with the
    schema's top-level ``required`` keys.

    Refusals, free text and wrong-shape JSON are returned but not cached, so a rerun asks again instead
    of replaying them. Finer rejections are the caller's: see :meth:`CachingGenerator.discard`.
    """
    if not response.ok:
        return False
    schema = request.json_schema
    if schema is None:
        return True
    value = _first_json_value(response.text or "")
    if value is _NO_JSON:
        return False
    required = schema.get("required") if isinstance(schema, dict) else None
    if isinstance(required, list) and required:
        return isinstance(value, dict) and all(key in value for key in required)
    return True


#: what each of :attr:`CachingGenerator.stats` counts, in the words a build summary shows next to the key
STATS_MEANING: dict[str, str] = {
    "hits": "requests answered from the response cache",
    "misses": "requests the LLM answered (not in the cache)",
    "calls": "batches of those requests sent to the LLM",
    "errors": "requests the LLM failed to answer",
    "uncached": "answers returned but not cached (unusable)",
    "write_errors": "answers whose cache write failed",
    "discarded": "rejected answers removed from the cache (a rerun asks again)",
    "kept_rejected": "rejected answers kept in the cache (keep_rejected)",
    "corrupt": "unreadable cache entries (treated as misses)",
}


class CachingGenerator:
    """Wraps a :class:`ChatGenerator`: cache hits come back with ``cached=True`` without calling ``inner``.

    Misses (deduplicated by key) go to ``inner`` in one batch per call. ``stats`` counts ``hits``,
    ``misses``, ``calls`` (batches sent to ``inner``), ``errors`` (failed responses, not cached),
    ``uncached`` (successful but unusable replies, returned and not cached), ``write_errors`` (cache
    writes that failed: the answer is still returned), ``discarded`` and ``corrupt`` (unreadable
    entries treated as misses).

    Args:
        inner: the generator answering misses.
        cache: a :class:`ResponseCache` or a folder for one.
        cache_if: which responses to store (default :func:`usable_response`).
        flush_every: misses go to ``inner`` in chunks of this many, each chunk stored as soon as it is answered,
            so an interrupted long batch (a build, a calibration) keeps what was already answered. On the async
            path, as many chunks are in flight at once as fill the inner generator's ``max_concurrency`` (one
            chunk when it declares none), so a kill loses at most the requests in flight.
        keep_rejected: make :meth:`discard` a no-op (counted as ``kept_rejected``), so replies a stage rejected
            stay cached and a rerun replays the same failures instead of asking the LLM again. For a committed
            cache that must reproduce a build exactly (a benchmark); off by default, since then a failed row
            can never succeed on a rerun.
    """

    def __init__(
        self,
        inner: ChatGenerator,
        cache: ResponseCache | str | os.PathLike[str],
        *,
        cache_if: Callable[[ChatRequest, ChatResponse], bool] = usable_response,
        flush_every: int = 16,
        keep_rejected: bool = False,
    ) -> None:
        if flush_every < 1:
            raise ValueError(f"CachingGenerator: flush_every must be >= 1, got {flush_every}")
        self.flush_every = flush_every
        self.keep_rejected = keep_rejected
        self.inner = inner
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self.cache_if = cache_if
        self._lock = threading.Lock()
        self._stats = {
            "hits": 0,
            "misses": 0,
            "calls": 0,
            "errors": 0,
            "uncached": 0,
            "write_errors": 0,
            "discarded": 0,
            "kept_rejected": 0,
        }

    def __repr__(self) -> str:
        return f"CachingGenerator({self.inner!r}, {self.cache!r})"

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def context_window(self) -> int | None:
        """The wrapped generator's context window (``None`` when it declares none)."""
        return getattr(self.inner, "context_window", None)

    def recommended_synthesis(self) -> tuple[str, str] | None:
        """The wrapped generator's recommendation for ``strategy="auto"`` (``None`` when it has none)."""
        recommend = getattr(self.inner, "recommended_synthesis", None)
        return recommend() if callable(recommend) else None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts under the wrapped generator's tokenizer (only when it has a ``context_window``)."""
        return self.inner.count_tokens(texts)  # type: ignore[attr-defined]

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "corrupt": self.cache.corrupt}

    def _key_extra(self) -> dict[str, Any] | None:
        extra = getattr(self.inner, "cache_key_extra", None)
        return extra() if callable(extra) else extra

    def _lookup(self, requests: Sequence[ChatRequest]):
        model_id = self.inner.model_id
        extra = self._key_extra()
        keys = [request_key(r, model_id=model_id, extra=extra) for r in requests]
        results: list[ChatResponse | None] = [self.cache.get(k) for k in keys]
        pending: dict[str, list[int]] = {}
        for i, (key, hit) in enumerate(zip(keys, results, strict=True)):
            if hit is None:
                pending.setdefault(key, []).append(i)
        with self._lock:
            self._stats["hits"] += len(requests) - sum(len(v) for v in pending.values())
            self._stats["misses"] += len(pending)
            self._stats["calls"] += -(-len(pending) // self.flush_every)  # one per chunk sent
        return model_id, results, pending

    def _store(self, requests, model_id, results, pending, answers: Sequence[ChatResponse]) -> list[ChatResponse]:
        counts = {"errors": 0, "uncached": 0, "write_errors": 0}
        if len(answers) != len(pending):  # a broken inner generator: answer every row with the reason
            reason = f"{type(self.inner).__name__} returned {len(answers)} responses for {len(pending)} requests"
            answers = [ChatResponse(text=None, error=reason) for _ in pending]
        for (key, indices), answer in zip(pending.items(), answers, strict=True):
            request = requests[indices[0]]
            if not answer.ok:
                counts["errors"] += 1
            elif not self.cache_if(request, answer):
                counts["uncached"] += 1
            else:
                try:
                    self.cache.put(key, answer, model_id=model_id, prompt_version=request.prompt_version)
                except Exception as err:  # disk full, read-only folder...: the answer itself is not lost
                    counts["write_errors"] += 1
                    logger.warning("Could not write response-cache entry %s: %s", key, err)
            for i in indices:
                results[i] = answer
        with self._lock:
            for name, value in counts.items():
                self._stats[name] += value
        return results  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Forward to ``inner.aclose()`` when the inner generator has one (HTTP clients)."""
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()

    def discard(self, requests: Sequence[ChatRequest]) -> int:
        """Forget the cached replies to ``requests`` (e.g. ones the caller rejected); returns how many existed.

        With ``keep_rejected`` nothing is forgotten: the requests are counted as ``kept_rejected`` and 0 returned.
        """
        if self.keep_rejected:
            with self._lock:
                self._stats["kept_rejected"] += len(requests)
            return 0
        model_id, extra = self.inner.model_id, self._key_extra()
        removed = sum(self.cache.delete(request_key(r, model_id=model_id, extra=extra)) for r in requests)
        with self._lock:
            self._stats["discarded"] += removed
        return removed

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        requests = list(requests)
        model_id, results, pending = self._lookup(requests)
        if not pending:
            return results  # type: ignore[return-value]
        for chunk in self._chunks(pending):
            answers = self.inner.generate([requests[idx[0]] for idx in chunk.values()])
            self._store(requests, model_id, results, chunk, answers)
        return results  # type: ignore[return-value]

    def _chunks(self, pending: dict[str, list[int]]) -> list[dict[str, list[int]]]:
        items = list(pending.items())
        return [dict(items[i : i + self.flush_every]) for i in range(0, len(items), self.flush_every)]

    def _chunks_in_flight(self) -> int:
        """Chunks sent at once on the async path: enough to fill the inner generator's parallel slots."""
        parallel = getattr(self.inner, "max_concurrency", None)
        return max(1, -(-parallel // self.flush_every)) if isinstance(parallel, int) else 1

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        requests = list(requests)
        model_id, results, pending = self._lookup(requests)
        if not pending:
            return results  # type: ignore[return-value]
        # one chunk at a time would leave all but flush_every of the server's slots idle while it waits for
        # its slowest answer; a few chunks in flight keep them busy, each stored as it lands
        gate = asyncio.Semaphore(self._chunks_in_flight())

        async def send(chunk: dict[str, list[int]]) -> None:
            async with gate:
                answers = await self.inner.agenerate([requests[idx[0]] for idx in chunk.values()])
            self._store(requests, model_id, results, chunk, answers)

        tasks = [asyncio.ensure_future(send(chunk)) for chunk in self._chunks(pending)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return results  # type: ignore[return-value]
