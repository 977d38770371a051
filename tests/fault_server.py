"""A loopback OpenAI-compatible chat-completions server with scriptable faults (a test double, not a model).

``FaultServer`` runs an asyncio HTTP/1.1 server (keep-alive, stdlib only) on ``127.0.0.1`` in a background
thread. Every ``POST /v1/chat/completions`` is answered by a *responder* (default :func:`oracle_content`: a
deterministic, schema-valid reply for each synthesis stage, recognised from the request's schema name) unless
a *fault* applies. Faults are scripted per prompt substring (``server.script("q17", Fault.http(503), ...)``:
consumed one per matching request, in order) or by a rule function for every request (``server.rule``).

Fault kinds: HTTP status (with ``Retry-After`` or any header), a slow answer, a truncated body (fewer bytes than
``Content-Length``, then the connection closes), a 200 with a non-JSON body, a dropped connection without any
response, empty ``choices``, and arbitrary assistant content (refusals, schema violations, injections).

The server counts what it saw (``requests``, :meth:`count`), the connections it accepted and how many are
open, and can stop listening mid-run (:meth:`stop_listening`: new connections are refused, open ones are
cut) and listen again on the same port (:meth:`start_listening`).

``python tests/fault_server.py [--delay S] [--port N]`` serves the oracle in its own process (prints
``PORT <n>``); the load benchmark uses this so that client-side figures exclude the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_QUERY = re.compile(r"<query>\s*(.*?)\s*</query>", re.DOTALL)
_WORDS = "river forest copper lantern violin harbor meadow quartz falcon orchard glacier saddle".split()


# ---------------------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour for one request (build with the class methods)."""

    kind: str  # ok | status | slow | truncate | not_json | drop | empty_choices | content
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    content: str | None = None
    body: str | None = None  # error body for ``http``; "{authorization}" is replaced by the request's header

    @classmethod
    def ok(cls) -> Fault:
        return cls("ok")

    @classmethod
    def http(cls, status: int, *, retry_after: str | None = None, body: str | None = None, **headers: str) -> Fault:
        items = dict(headers)
        if retry_after is not None:
            items["Retry-After"] = retry_after
        return cls("status", status=status, headers=tuple(items.items()), body=body)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls("slow", delay=seconds)

    @classmethod
    def truncated(cls) -> Fault:
        return cls("truncate")

    @classmethod
    def not_json(cls) -> Fault:
        return cls("not_json")

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")

    @classmethod
    def empty_choices(cls) -> Fault:
        return cls("empty_choices")

    @classmethod
    def reply(cls, content: str) -> Fault:
        """A 200 answer whose assistant message is ``content`` (refusal, schema violation, injection...)."""
        return cls("content", content=content)


REFUSAL = "I'm sorry, but I can't help with creating misleading documents."


# ---------------------------------------------------------------------------------------------- oracle
def schema_name(body: dict[str, Any]) -> str | None:
    """The synthesis stage a request is for, from its structured-output field (any of the supported forms)."""
    fmt = body.get("response_format") or {}
    if isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict):
        return fmt["json_schema"].get("name")
    schema = fmt.get("value") if isinstance(fmt, dict) else None
    schema = schema or body.get("guided_json")
    if isinstance(schema, dict):
        return str(schema.get("title", "")).lower() or None
    return None


def prompt_text(body: dict[str, Any]) -> str:
    """The first user message (the rendered prompt; re-asks append turns after it)."""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def prompt_query(body: dict[str, Any]) -> str:
    """The text between the first ``<query>`` tags of the prompt (tag escaping undone), or the whole prompt."""
    text = prompt_text(body)
    match = _QUERY.search(text)
    return match.group(1).replace("&lt;", "<") if match else text


def passage_for(query: str, k: int) -> str:
    """A deterministic corpus-like passage on something else, different per (query, k)."""
    h = int(hashlib.sha256(f"{query}|{k}".encode("utf-8", "surrogatepass")).hexdigest(), 16)
    w = [_WORDS[(h >> (4 * j)) % len(_WORDS)] for j in range(8)]
    return (
        f"Report {h % 997} describes the {w[0]} {w[1]} near the {w[2]} {w[3]}; observers noted "
        f"{w[4]} and {w[5]} patterns, unlike the {w[6]} {w[7]} seen in {h % 50 + 1950}."
    )


def oracle_content(body: dict[str, Any]) -> str:
    """A schema-valid assistant reply for whichever synthesis stage ``body`` is (deterministic per query)."""
    name = schema_name(body) or ""
    query = prompt_query(body)
    if name in ("analysis",):
        breaks = [
            {"type": "entity_shift", "idea": "swap the main entity"},
            {"type": "upstream_downstream", "idea": "describe a consequence instead"},
        ]
        return json.dumps(
            {
                "core_need": "what the query asks",
                "how_positive_answers": "it states the answer",
                "answer_boundary": "the specific finding",
                "critical_requirements": [
                    {"facet": "entity", "description": f"requirement {i} of the query", "break_strategies": breaks}
                    for i in (1, 2)
                ],
                "other_requirements": [
                    {"facet": "constraint", "description": f"requirement {i} of the query"} for i in (3, 4)
                ],
            }
        )
    if name in ("generation",):
        negatives = [
            {
                "node_id": "C1",
                "strategy_type": "entity_shift",
                "candidate_index": None,
                "text": passage_for(query, k),
                "explanation": "it is about a different entity",
            }
            for k in range(2)
        ]
        return json.dumps({"negatives": negatives})
    if name in ("query_edit", "queryedit"):
        # replace one word in the middle of the query (an in-place, one-detail edit); the prompt names a
        # different focus per negative, so the replacement word differs per prompt
        h = int(hashlib.sha256(prompt_text(body).encode("utf-8", "surrogatepass")).hexdigest(), 16)
        new = ["zebras", "walruses", "comets", "tulips", "pistons"][h % 5]
        words = list(re.finditer(r"[A-Za-z]{3,}", query))
        if words:
            middle = words[len(words) // 2]
            edited = query[: middle.start()] + new + query[middle.end() :]
        else:
            edited = f"{new} {query}"
        return json.dumps({"edited_query": edited, "edit_type": "entity"})
    if name in ("edited_passage", "editedpassage"):
        return json.dumps({"passage": passage_for(query, 0)})
    # naive (and anything unrecognised)
    return json.dumps({"passages": [passage_for(query, k) for k in range(3)]})


# ---------------------------------------------------------------------------------------------- server
@dataclass
class Seen:
    """One request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]
    fault: str
    at: float = field(default_factory=time.monotonic)

    @property
    def prompt(self) -> str:
        return prompt_text(self.body)


class FaultServer:
    """Loopback OpenAI-compatible server with scripted faults; use as a context manager.

    Args:
        responder: ``body -> assistant content`` for requests without a fault (default :func:`oracle_content`).
        delay: seconds every answer waits (a slow server).
        port: fixed port (0: pick a free one).
    """

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str] | None = None,
        *,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self.responder = responder or oracle_content
        self.delay = delay
        self.rule: Callable[[dict[str, Any]], Fault | None] | None = None
        self.scripts: list[tuple[str, list[Fault]]] = []
        self.requests: list[Seen] = []
        self.connections_total = 0
        self.connections_open = 0
        self.max_connections_open = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._port = port
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.on_request: Callable[[Seen], None] | None = None
        #: stop listening (connection refused from then on) once this many requests have been seen
        self.refuse_after: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> FaultServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self._port, reuse_address=True, backlog=512
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_listening(self) -> None:
        """Refuse new connections and cut open ones (the server process 'went away')."""
        self._call(self._stop_listening())

    def start_listening(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    async def _shutdown(self) -> None:
        await self._stop_listening()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    # -- scripting and counting --------------------------------------------------------------------------
    def script(self, match: str, *faults: Fault) -> None:
        """Requests whose prompt contains ``match`` consume ``faults`` one by one (then answer normally)."""
        with self._lock:
            self.scripts.append((match, list(faults)))

    def count(self, match: str = "", *, stage: str | None = None) -> int:
        """Requests seen whose prompt contains ``match`` (all for ``""``), optionally of one ``stage`` (schema name)."""
        with self._lock:
            return sum(
                1 for s in self.requests if match in s.prompt and (stage is None or schema_name(s.body) == stage)
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def _fault_for(self, body: dict[str, Any]) -> Fault:
        prompt = prompt_text(body)
        with self._lock:
            for match, queue in self.scripts:
                if match in prompt and queue:
                    return queue.pop(0)
        if self.rule is not None:
            fault = self.rule(body)
            if fault is not None:
                return fault
        return Fault.ok()

    # -- HTTP ---------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections_total += 1
            self.connections_open += 1
            self.max_connections_open = max(self.max_connections_open, self.connections_open)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._respond(method, path, headers, raw, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # server shutdown: end quietly (streams' callback logs a cancelled task)
            pass
        finally:
            self._writers.discard(writer)
            with self._lock:
                self.connections_open -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _write(self, writer, status: int, payload: bytes, *, headers=(), length: int | None = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
        out = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json"]
        out += [f"{k}: {v}" for k, v in headers]
        out.append(f"Content-Length: {len(payload) if length is None else length}")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes, writer) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._write(writer, 200, json.dumps({"data": [{"id": "fault-model"}]}).encode())
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._write(writer, 404, b'{"error": "not found"}')
            return True
        try:
            body = json.loads(raw)
        except ValueError:
            await self._write(writer, 400, b'{"error": "request body is not JSON"}')
            return True
        fault = self._fault_for(body)
        seen = Seen(body=body, headers=headers, fault=fault.kind)
        with self._lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            refuse = self.refuse_after is not None and len(self.requests) >= self.refuse_after
        if refuse:
            self.refuse_after = None
            asyncio.get_running_loop().create_task(self._stop_listening())
        try:
            if self.on_request is not None:
                self.on_request(seen)
            wait = self.delay + (fault.delay if fault.kind == "slow" else 0.0)
            if wait:
                await asyncio.sleep(wait)
            if fault.kind == "drop":
                writer.transport.abort()
                return False
            if fault.kind == "status":
                message = f"scripted {fault.status}"
                if fault.body is not None:  # e.g. a proxy that echoes the request's headers in its errors
                    message = fault.body.replace("{authorization}", headers.get("authorization", ""))
                payload = json.dumps({"error": {"message": message, "code": fault.status}})
                await self._write(writer, fault.status, payload.encode(), headers=fault.headers)
                return True
            if fault.kind == "not_json":
                await self._write(writer, 200, b"<html><body>502 Bad Gateway (upstream)</body></html>")
                return True
            if fault.kind == "empty_choices":
                await self._write(writer, 200, json.dumps({"id": "x", "choices": [], "usage": {}}).encode())
                return True
            content = fault.content if fault.kind == "content" else self.responder(body)
            payload = json.dumps(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                }
            ).encode()
            if fault.kind == "truncate":
                cut = payload[: len(payload) // 2]
                await self._write(writer, 200, cut, length=len(payload))
                writer.transport.close()
                return False
            await self._write(writer, 200, payload, headers=fault.headers)
            return True
        finally:
            with self._lock:
                self.in_flight -= 1


# ---------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class LoopbackSpec:
    """A picklable, config-only generator spec (like ``GeneratorConfig``) for an OpenAI-compatible loopback
    server, exposing the backoff knobs that ``GeneratorConfig`` keeps at their defaults (fast tests)."""

    base_url: str
    model: str = "fault-model"
    cache_dir: str = ""
    timeout: float = 0.3
    max_retries: int = 2
    max_concurrency: int = 8
    backoff_base: float = 0.02
    api_key_env: str | None = None
    backend: str = "openai"  # the transform drives the async path for "openai"

    def build(self):
        from negsynth_hf.generators import CachingGenerator, OpenAIChatGenerator

        gen = OpenAIChatGenerator(
            self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            max_retries=self.max_retries,
            max_concurrency=self.max_concurrency,
            backoff_base=self.backoff_base,
            backoff_max=1.0,
        )
        return CachingGenerator(gen, self.cache_dir) if self.cache_dir else gen

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def open_fds() -> int:
    """File descriptors open in this process (Linux /proc; -1 elsewhere)."""
    import os

    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def open_sockets() -> int:
    """Sockets open in this process (Linux /proc; -1 elsewhere)."""
    import os

    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return -1
    count = 0
    for name in names:
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return count


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - exercised by the load benchmark
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    with FaultServer(delay=args.delay, port=args.port) as server:
        print(f"PORT {server.port}", flush=True)
        try:
            sys.stdin.read()  # serve until the parent closes our stdin (or kills us)
        except KeyboardInterrupt:
            pass
        print(
            f"REQUESTS {server.count()} CONNECTIONS {server.connections_total} OPEN {server.connections_open} "
            f"MAX_OPEN {server.max_connections_open} MAX_IN_FLIGHT {server.max_in_flight}",
            flush=True,
        )


if __name__ == "__main__":  # pragma: no cover
    main()
