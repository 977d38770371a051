"""llama.cpp's own server (through the prebuilt ``xllamacpp`` wheel) as a local OpenAI-compatible generator.

Why a child process rather than ``xllamacpp.Server`` in this one: the server must survive nothing of ours
and we must survive everything of its (a crash, a kill, a model that fails to load); a child can be health-
checked, restarted mid-build and shared. Each server is a ``python -m negsynth_hf.generators.llamacpp`` child
that loads the GGUF, listens on a loopback port and exits when its owner process is gone (a watchdog thread
polls the owner's pid, so even a SIGKILLed owner leaves no server behind).

Sharing: one server per :class:`LlamaCppServerSpec` per process group. A process keeps its servers in a
module-level registry, and also records each one in ``<negsynth cache>/llamacpp/<spec key>.json`` under a
file lock, so ``datasets.map(num_proc=...)`` workers and repeated ``map`` calls find a live, healthy server
and reuse it instead of loading the model again. The process that started a server stops it at exit.

Requests go through :class:`OpenAIChatGenerator` (same retries, concurrency, response format), and this
class adds what only a local server allows: requests are checked against the slot's context with the
server's own tokenizer (``max_tokens`` is lowered to fit, a prompt that cannot fit fails its row with a
reason instead of a server 400), and requests that failed because the server died are re-sent once it has
been restarted (``restarts`` counts it).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import paths
from ._sync import run_sync
from .base import ChatRequest, ChatResponse, prompt_token_count, surely_fits
from .gguf_models import model_id_for, recommended_synthesis, resolve_gguf
from .openai_chat import OpenAIChatGenerator, httpx

logger = logging.getLogger(__name__)

#: below this many new tokens a request is not worth sending (it could not finish a JSON object)
MIN_NEW_TOKENS = 16


class ServerStartError(RuntimeError):
    """The llama.cpp server did not come up; the message carries the server's own error lines."""


@dataclass(frozen=True)
class LlamaCppServerSpec:
    """What defines one server (two equal specs share a server).

    Args:
        model: a known model name (``negsynth_hf.generators.gguf_models.KNOWN_MODELS``) or a GGUF path.
        n_parallel: parallel slots (requests decoded together).
        ctx_per_slot: context tokens per slot (llama.cpp's ``n_ctx`` is this times ``n_parallel``).
        n_threads: CPU threads for decoding and prompt processing.
        port: fixed port, or ``None`` for a free loopback port.
    """

    model: str
    n_parallel: int = 2
    ctx_per_slot: int = 4096
    n_threads: int = 2
    port: int | None = None

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(base: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=timeout).status_code == 200
    except Exception:
        return False


class LlamaCppServer:
    """A running llama.cpp server child (``owner`` is True in the process that started it)."""

    def __init__(self, spec: LlamaCppServerSpec, *, port: int, pid: int, owner: bool, log_path: Path) -> None:
        self.spec, self.port, self.pid, self.owner, self.log_path = spec, port, pid, owner, log_path
        self._process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"LlamaCppServer(model={self.spec.model!r}, port={self.port}, pid={self.pid}, owner={self.owner})"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def alive(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            return False
        return _pid_alive(self.pid) and _healthy(self.root)

    @classmethod
    def start(cls, spec: LlamaCppServerSpec, *, timeout: float = 120.0) -> LlamaCppServer:
        """Start a child server and wait until ``/health`` answers; raise :class:`ServerStartError` if not."""
        gguf = resolve_gguf(spec.model)
        port = spec.port if spec.port is not None else _free_port()
        log_path = paths.cache_dir("llamacpp", "logs") / f"{spec.key()}-{port}.log"
        command = [sys.executable, "-m", "negsynth_hf.generators.llamacpp", "--serve", "--model", str(gguf)]
        command += ["--port", str(port), "--ctx", str(spec.ctx_per_slot * spec.n_parallel)]
        command += ["--parallel", str(spec.n_parallel), "--threads", str(spec.n_threads), "--owner", str(os.getpid())]
        with log_path.open("wb") as log:
            # own session: a Ctrl-C in the terminal reaches us, and we stop the server ourselves
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(spec, port=port, pid=process.pid, owner=True, log_path=log_path)
        server._process = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(server._failure_message(f"exited with code {process.returncode}"))
            if _healthy(server.root, timeout=1.0):
                return server
            time.sleep(0.1)
        server.stop()
        raise ServerStartError(server._failure_message(f"did not answer /health within {timeout:.0f} s"))

    def _failure_message(self, what: str) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line.strip() for line in lines if " E " in line or "Error" in line][-4:]
        hint = ""
        if any("bind" in line for line in errors):
            hint = f" Port {self.port} is taken: pass another `port` or leave it None for a free one."
        elif any("magic" in line or "failed to load model" in line for line in errors):
            hint = f" The model file {self.spec.model!r} is not a loadable GGUF."
        detail = "; ".join(errors) or "no error lines"
        return (
            f"llama.cpp server for {self.spec.model!r} on port {self.port} {what}: {detail}.{hint} Log: {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (then kill it if it does not exit); a no-op for a server we do not own."""
        if not self.owner:
            return
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        elif _pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)
        _REGISTRY.forget(self)


class _Registry:
    """This process's servers, plus the cross-process record in the cache folder (under a file lock)."""

    def __init__(self) -> None:
        self._servers: dict[str, LlamaCppServer] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _folder(self) -> Path:
        return paths.cache_dir("llamacpp")

    @contextlib.contextmanager
    def _file_lock(self, key: str):
        with (self._folder() / f"{key}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, spec: LlamaCppServerSpec, *, restart: bool = False) -> LlamaCppServer:
        key = spec.key()
        with self._lock:
            if os.getpid() != self._pid:  # a forked worker: the parent's handles are not ours to stop
                self._servers = {k: _as_guest(s) for k, s in self._servers.items()}
                self._pid = os.getpid()
            server = self._servers.get(key)
            if server is not None and not restart and server.alive():
                return server
            with self._file_lock(key):
                if not restart:
                    found = self._read_record(spec)
                    if found is not None:
                        self._servers[key] = found
                        return found
                if server is not None:
                    server.stop()
                server = LlamaCppServer.start(spec)
                self._write_record(server)
                self._servers[key] = server
                return server

    def _record_path(self, spec: LlamaCppServerSpec) -> Path:
        return self._folder() / f"{spec.key()}.json"

    def _read_record(self, spec: LlamaCppServerSpec) -> LlamaCppServer | None:
        try:
            record = json.loads(self._record_path(spec).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        log_path = Path(record.get("log", ""))
        server = LlamaCppServer(spec, port=int(record["port"]), pid=int(record["pid"]), owner=False, log_path=log_path)
        return server if server.alive() else None

    def _write_record(self, server: LlamaCppServer) -> None:
        record = {"port": server.port, "pid": server.pid, "owner_pid": os.getpid(), "log": str(server.log_path)}
        self._record_path(server.spec).write_text(json.dumps(record), encoding="utf-8")

    def forget(self, server: LlamaCppServer) -> None:
        key = server.spec.key()
        if self._servers.get(key) is server:
            self._servers.pop(key, None)

    def stop_all(self) -> None:
        if os.getpid() != self._pid:
            return
        for server in list(self._servers.values()):
            with contextlib.suppress(Exception):
                server.stop()


def _as_guest(server: LlamaCppServer) -> LlamaCppServer:
    return LlamaCppServer(server.spec, port=server.port, pid=server.pid, owner=False, log_path=server.log_path)


_REGISTRY = _Registry()
atexit.register(_REGISTRY.stop_all)


def shared_server(spec: LlamaCppServerSpec) -> LlamaCppServer:
    """The live server for ``spec`` in this process group, started if there is none."""
    return _REGISTRY.get(spec)


def stop_servers() -> None:
    """Stop every server this process started (also runs at interpreter exit)."""
    _REGISTRY.stop_all()


class LlamaCppGenerator:
    """A :class:`ChatGenerator` on a local llama.cpp server it starts (or shares) on first use.

    Args:
        spec: the server to use (model, slots, context per slot, threads, port).
        max_retries: retries of transient HTTP failures (as :class:`OpenAIChatGenerator`).
        timeout: seconds per HTTP attempt; a CPU decodes ~25 tokens/s, so allow for the longest reply.
        max_restarts: how often one ``generate`` call restarts a server that died under it.
        response_format: how schemas are sent; llama.cpp turns ``json_schema`` into a grammar.
    """

    def __init__(
        self,
        spec: LlamaCppServerSpec,
        *,
        max_retries: int = 2,
        timeout: float = 600.0,
        max_restarts: int = 2,
        response_format: str = "json_schema",
    ) -> None:
        self.spec = spec
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_restarts = max_restarts
        self.response_format = response_format
        self.restarts = 0  # servers restarted after dying under a call
        self.resent = 0  # requests sent again to a restarted server
        self._client: OpenAIChatGenerator | None = None
        self._server: LlamaCppServer | None = None

    def __repr__(self) -> str:
        return f"LlamaCppGenerator({self.spec!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = state["_server"] = None  # a worker finds the shared server itself
        return state

    @property
    def model_id(self) -> str:
        return model_id_for(self.spec.model)

    def recommended_synthesis(self) -> tuple[str, str] | None:
        """What ``strategy="auto"`` uses with this model (known small models carry a measured choice)."""
        return recommended_synthesis(self.spec.model)

    @property
    def context_window(self) -> int:
        """Tokens one request may use, prompt and reply together (one slot's context)."""
        return self.spec.ctx_per_slot

    def cache_key_extra(self) -> dict[str, Any]:
        """Settings that change outputs (the port, threads and slot count do not)."""
        return {"backend": "llamacpp", "response_format": self.response_format}

    @property
    def server(self) -> LlamaCppServer:
        """The server, started (or found) on first use."""
        if self._server is None or self._client is None:
            self._connect(restart=False)
        assert self._server is not None
        return self._server

    def _connect(self, *, restart: bool) -> None:
        self._server = _REGISTRY.get(self.spec, restart=restart)
        self._client = OpenAIChatGenerator(
            self._server.base_url,
            model=self.model_id,
            api_key_env=None,
            max_concurrency=self.spec.n_parallel,
            timeout=self.timeout,
            max_retries=self.max_retries,
            response_format=self.response_format,  # type: ignore[arg-type]
        )

    # -- tokens and context -------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` under the served model's own tokenizer."""
        root = self.server.root
        with httpx.Client(timeout=self.timeout) as client:
            return [len(client.post(f"{root}/tokenize", json={"content": t}).json()["tokens"]) for t in texts]

    def prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of ``request``'s messages (contents plus a per-message bound for the template)."""
        return prompt_token_count(request.messages, self.count_tokens)

    def fit(self, request: ChatRequest) -> tuple[ChatRequest | None, str | None]:
        """``request`` with ``max_new_tokens`` lowered to fit the slot, or ``(None, reason)`` when it cannot."""
        if surely_fits(request.messages, request.max_new_tokens, self.context_window):
            return request, None  # no tokenizer round trip for the common case
        prompt = self.prompt_tokens(request)
        room = self.context_window - prompt
        if room < MIN_NEW_TOKENS:
            return None, (
                f"prompt of {prompt} tokens leaves {max(room, 0)} of the {self.context_window}-token context for the "
                f"reply: shorten the inputs or raise ctx_per_slot"
            )
        if request.max_new_tokens > room:
            return replace(request, max_new_tokens=room), None
        return request, None

    # -- generation ----------------------------------------------------------------------------

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer all requests (at most ``n_parallel`` in flight); restart a dead server and re-send its rows."""
        requests = list(requests)
        if not requests:
            return []
        _ = self.server
        loop = asyncio.get_running_loop()
        fitted = await loop.run_in_executor(None, self._fit_all, requests)
        out: list[ChatResponse | None] = [None] * len(requests)
        todo = []
        for i, (request, reason) in enumerate(fitted):
            if request is None:
                out[i] = ChatResponse(text=None, error=f"context: {reason}")
            else:
                todo.append((i, request))
        for attempt in range(self.max_restarts + 1):
            assert self._client is not None
            answers = await self._client.agenerate([r for _, r in todo])
            failed = []
            for (i, request), answer in zip(todo, answers, strict=True):
                out[i] = answer
                if not answer.ok:
                    failed.append((i, request))
            if not failed or attempt == self.max_restarts:
                break
            alive = await loop.run_in_executor(None, self.server.alive)
            if alive:
                break
            logger.warning(
                "llama.cpp server %s died; restarting and re-sending %d request(s).", self._server, len(failed)
            )
            await loop.run_in_executor(None, lambda: self._connect(restart=True))
            self.restarts += 1
            self.resent += len(failed)
            todo = failed
        return [r if r is not None else ChatResponse(text=None, error="not answered") for r in out]

    def _fit_all(self, requests: list[ChatRequest]) -> list[tuple[ChatRequest | None, str | None]]:
        try:
            return [self.fit(r) for r in requests]
        except Exception as err:  # tokenizer unreachable (server dying): send as is, the retry path handles it
            logger.debug("could not fit requests to the context: %s", err)
            return [(r, None) for r in requests]

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Synchronous twin of :meth:`agenerate` (a worker thread when an event loop is already running)."""
        requests = list(requests)
        return run_sync(lambda: self._generate_and_close(requests), thread_name="negsynth-llamacpp")

    async def _generate_and_close(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        try:
            return await self.agenerate(requests)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


# --------------------------------------------------------------------------- the child process


def _watch_owner(owner: int) -> None:
    while _pid_alive(owner):
        time.sleep(0.5)
    os._exit(0)


def _serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m negsynth_hf.generators.llamacpp")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx", type=int, required=True)
    parser.add_argument("--parallel", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--owner", type=int, required=True)
    args = parser.parse_args(argv)
    threading.Thread(target=_watch_owner, args=(args.owner,), daemon=True).start()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.port = args.port
    server = xllamacpp.Server(params)  # noqa: F841 - serves from its own threads while we sleep
    print(f"negsynth: llama.cpp server ready on 127.0.0.1:{args.port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    _serve(sys.argv[1:])
