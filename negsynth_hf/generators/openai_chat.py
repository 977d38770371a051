"""OpenAI chat-completions client for any compatible server: vLLM, TGI, hosted APIs, ``transformers serve``.

Why not ``huggingface_hub.InferenceClient``? Checked against huggingface_hub 2.4.0's sources:

1. Every request goes through the hub's shared ``httpx2`` session whose request hook
   (``utils/_http.py: hf_request_event_hook``) raises ``OfflineModeIsEnabled`` whenever
   ``HF_HUB_OFFLINE=1``, even for a loopback ``base_url``; there is no per-call opt-out.
2. ``chat_completion`` merges ``extra_body`` into the parameters BEFORE the provider helper runs,
   and the default helper (``_providers/hf_inference.py``) rewrites any
   ``response_format={"type": "json_schema", ...}`` into TGI's ``{"type": "json_object", "value": schema}``,
   which OpenAI and vLLM do not read as a schema. So the OpenAI form cannot be sent through it.

We therefore post the JSON body ourselves with ``httpx2``, the HTTP client huggingface_hub itself
depends on (falling back to ``httpx`` for older hubs), on a private client without the hub's hooks.
The schema is sent in the form the server understands (``response_format``):

- ``"json_schema"``: ``{"response_format": {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}}`` (OpenAI, vLLM)
- ``"tgi"``: ``{"response_format": {"type": "json_object", "value": schema}}`` (TGI grammar)
- ``"guided_json"``: ``{"guided_json": schema}`` (vLLM extension)
- ``"none"``: no schema sent (callers still validate)

Concurrency is bounded per event loop by a pool of ``max_concurrency`` single-connection clients,
closed when that loop shuts down (so ``asyncio.run`` per batch leaks nothing) or on ``aclose()``.
Transient failures (429, 5xx, timeouts, connection errors) are retried with exponential backoff and
jitter, honouring ``Retry-After``, at most ``max_retries + 1`` tries. Every failure comes back as
``ChatResponse(text=None, error=...)``; nothing raises. The API key is read from the argument or the
environment at call time and never appears in repr, pickle, logs, cache keys or errors (server text
that echoes it is redacted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._retry import backoff_delay, is_retryable_status, parse_retry_after
from ._sync import run_sync
from .base import ChatRequest, ChatResponse

try:  # huggingface_hub >= 2 depends on httpx2; older stacks have httpx with the same API
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

ResponseFormat = Literal["json_schema", "tgi", "guided_json", "none"]
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.TransportError)
_PERMANENT_ERRORS = (httpx.UnsupportedProtocol, httpx.InvalidURL)


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key and len(key) >= 4 else text


_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One default SSL context per process: loading the CA bundle costs ~0.1-0.2 s, and sync
    ``generate()`` opens a client per call."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


def _token_logprobs(data: Any) -> list[dict[str, Any]] | None:
    """OpenAI's ``choices[0].logprobs`` as ``[{"token", "logprob", "top": {token: logprob}}]`` (None if absent)."""
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for entry in content:
        if not isinstance(entry, dict) or "token" not in entry:
            continue
        top = {t["token"]: float(t["logprob"]) for t in entry.get("top_logprobs") or [] if "token" in t}
        out.append({"token": entry["token"], "logprob": float(entry.get("logprob", 0.0)), "top": top})
    return out


class OpenAIChatGenerator:
    """A :class:`ChatGenerator` speaking the OpenAI chat-completions protocol.

    Args:
        base_url: server root including the API prefix, e.g. ``http://127.0.0.1:8000/v1``.
        model: served model name (sent as ``model``; also the :attr:`model_id`).
        api_key: explicit key (kept in memory only; dropped when pickled). Default: ``$api_key_env``.
        api_key_env: environment variable holding the key; ``None`` disables the lookup.
        max_concurrency: requests in flight at once (per event loop).
        timeout: seconds per HTTP attempt.
        max_retries: extra attempts after a transient failure (so at most ``max_retries + 1`` tries).
        response_format: how the JSON schema is sent (see module docstring).
        backoff_base: first backoff in seconds (doubles per retry, with jitter).
        backoff_max: cap on one wait, ``Retry-After`` included.
        extra_body: fields merged into every request body (e.g. ``{"top_p": 0.9}``).
        headers: extra HTTP headers (not for secrets: they show up in repr).
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        response_format: ResponseFormat = "json_schema",
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if response_format not in ("json_schema", "tgi", "guided_json", "none"):
            raise ValueError(f"unknown response_format {response_format!r}")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.response_format = response_format
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self._api_key = api_key
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (
            f"OpenAIChatGenerator({self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"max_concurrency={self.max_concurrency}, response_format={self.response_format!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_api_key"] = None  # never pickled: workers read the key from the environment
        state["_loops"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loops = weakref.WeakKeyDictionary()

    @property
    def model_id(self) -> str:
        return self.model

    def cache_key_extra(self) -> dict[str, Any]:
        """Backend settings that change outputs (part of the response-cache key; never the key or URL)."""
        return {"backend": "openai", "response_format": self.response_format, "extra_body": self.extra_body}

    # -- request building ----------------------------------------------------------------------

    def _key(self) -> str | None:
        return self._api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body sent for ``request`` (public so users can see exactly what goes over the wire)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "stream": False,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = int(request.top_logprobs)
        schema = request.json_schema
        if schema is not None:
            if self.response_format == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": schema, "strict": True},
                }
            elif self.response_format == "tgi":
                body["response_format"] = {"type": "json_object", "value": schema}
            elif self.response_format == "guided_json":
                body["guided_json"] = schema
        body.update(self.extra_body)
        return body

    # -- async core ----------------------------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        # one keep-alive connection per client: httpcore's pool rescans every connection on every request,
        # so C single-connection clients cost O(1) per request where one C-connection client costs O(C)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), limits=limits, verify=_ssl_context())

    async def _slots(self) -> asyncio.Queue:
        """The running loop's pool of ``max_concurrency`` clients; taking one is taking a concurrency slot.

        Pools live per event loop and are closed when that loop shuts down (``asyncio.run`` finalizes async
        generators before closing the loop, and a guard generator holds the pool), so a caller that runs
        ``asyncio.run(...)`` per batch leaks no connections.
        """
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            for stale in [other for other in list(self._loops) if other.is_closed()]:
                self._loops.pop(stale, None)  # closed without finalizing async generators: drop the references
            slots: asyncio.Queue = asyncio.Queue()
            for _ in range(self.max_concurrency):
                slots.put_nowait(self._new_client())
            guard = self._close_at_shutdown(loop, slots)
            await guard.__anext__()
            state = (slots, guard)
            self._loops[loop] = state
        return state[0]

    async def _close_at_shutdown(self, loop: asyncio.AbstractEventLoop, slots: asyncio.Queue):
        try:
            yield
        finally:
            state = self._loops.get(loop) if self._loops is not None else None
            if state is not None and state[0] is slots:
                self._loops.pop(loop, None)
            clients = []
            while not slots.empty():
                clients.append(slots.get_nowait())
            await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)

    async def _one(self, slots: asyncio.Queue, request: ChatRequest) -> ChatResponse:
        url = f"{self.base_url}/chat/completions"
        try:
            body = self.request_body(request)
        except Exception as err:  # e.g. a schema that is not JSON-serializable
            return ChatResponse(text=None, error=f"bad request: {type(err).__name__}: {err}")
        key = self._key()
        headers = self._auth_headers(key)
        start = time.perf_counter()
        error = "no attempt made"
        attempts = 0
        for attempt in range(self.max_retries + 1):
            attempts = attempt + 1
            retry_after: float | None = None
            client = await slots.get()
            try:
                try:
                    response = await client.post(url, json=body, headers=headers)
                except _PERMANENT_ERRORS as err:
                    error = f"{type(err).__name__}: {err}"
                    break
                except _TRANSIENT_ERRORS as err:
                    error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                except Exception as err:  # never raise into the caller
                    error = f"{type(err).__name__}: {err}"
                    break
                else:
                    if response.status_code == 200:
                        return self._parse(response, start=start, attempts=attempts)
                    error = f"HTTP {response.status_code}: {_redact(response.text, key)[:300]}"
                    if not is_retryable_status(response.status_code):
                        break
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
            finally:
                slots.put_nowait(client)
            error = _redact(error, key)  # servers and gateways may echo the Authorization header
            if attempt < self.max_retries:
                delay = backoff_delay(
                    attempt, base=self.backoff_base, maximum=self.backoff_max, retry_after=retry_after
                )
                logger.debug("Retrying %s in %.2fs after: %s", url, delay, error)
                await asyncio.sleep(delay)
        return ChatResponse(
            text=None,
            error=_redact(f"{error} (after {attempts} attempt(s))", key),
            latency_s=time.perf_counter() - start,
            extra={"attempts": attempts},
        )

    @staticmethod
    def _parse(response: Any, *, start: float, attempts: int) -> ChatResponse:
        latency = time.perf_counter() - start
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            return ChatResponse(text=None, error=f"malformed response: {type(err).__name__}: {err}", latency_s=latency)
        usage = data.get("usage") or {}
        extra = {"attempts": attempts, "finish_reason": choice.get("finish_reason")}
        if not isinstance(text, str):
            return ChatResponse(text=None, error="response has no text content", latency_s=latency, extra=extra)
        logprobs = _token_logprobs(choice.get("logprobs"))
        if logprobs is not None:
            extra["logprobs"] = logprobs
        return ChatResponse(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            extra=extra,
        )

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Send all requests concurrently (at most ``max_concurrency`` in flight); results in order."""
        slots = await self._slots()
        return list(await asyncio.gather(*(self._one(slots, r) for r in requests)))

    async def aclose(self) -> None:
        """Close the running event loop's HTTP clients now (otherwise they close when the loop shuts down)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[1].aclose()

    async def _generate_and_close(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        try:
            return await self.agenerate(requests)
        finally:
            await self.aclose()

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Synchronous twin of :meth:`agenerate`; safe inside a running event loop (Jupyter): it then uses a worker thread."""
        requests = list(requests)
        if not requests:
            return []
        return run_sync(lambda: self._generate_and_close(requests), thread_name="negsynth-openai")
