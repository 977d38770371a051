"""OpenAIChatGenerator against a scriptable loopback recorder (stdlib http.server) and a REAL `transformers serve`.

Everything runs with HF_HUB_OFFLINE=1 (the setting that breaks huggingface_hub's InferenceClient on loopback).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from negsynth_hf.generators import ChatRequest, GeneratorConfig, OpenAIChatGenerator

SCHEMA = {"type": "object", "properties": {"passage": {"type": "string"}}, "required": ["passage"]}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder(ThreadingHTTPServer):
    """Loopback OpenAI-compatible stub: records bodies/headers, scripts failures per message, measures concurrency."""

    daemon_threads = True

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        self.delay = delay
        self.bodies: list[dict] = []
        self.headers_seen: list[dict] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}  # content -> [(status, headers), ...]
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _RecorderHandler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        content = body["messages"][-1]["content"]
        with server.lock:
            server.bodies.append(body)
            server.headers_seen.append(dict(self.headers))
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            script = server.scripts.get(content)
            status, headers = script.pop(0) if script else (200, {})
        try:
            time.sleep(server.delay)
            if status == 200:
                answer = {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"echo:{content}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
                }
                payload = json.dumps(answer).encode()
            else:  # like some gateways, echo the credentials back in the error body
                payload = json.dumps(
                    {"error": f"scripted {status}", "auth": self.headers.get("Authorization")}
                ).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with server.lock:
                server.in_flight -= 1


@pytest.fixture
def recorder():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _req(content: str, **kwargs) -> ChatRequest:
    kwargs.setdefault("max_new_tokens", 16)
    return ChatRequest(messages=({"role": "user", "content": content},), **kwargs)


def _gen(server: Recorder, **kwargs) -> OpenAIChatGenerator:
    kwargs.setdefault("backoff_base", 0.01)
    return OpenAIChatGenerator(server.base_url, model="stub-model", api_key_env=None, **kwargs)


@pytest.mark.parametrize(
    ("response_format", "check"),
    [
        (
            "json_schema",
            lambda b: (
                b["response_format"]
                == {"type": "json_schema", "json_schema": {"name": "negative", "schema": SCHEMA, "strict": True}}
            ),
        ),
        ("tgi", lambda b: b["response_format"] == {"type": "json_object", "value": SCHEMA}),
        ("guided_json", lambda b: b["guided_json"] == SCHEMA and "response_format" not in b),
        ("none", lambda b: "response_format" not in b and "guided_json" not in b),
    ],
)
def test_body_carries_schema_in_configured_form(recorder, response_format, check):
    gen = _gen(recorder, response_format=response_format)
    out = gen.generate([_req("q", json_schema=SCHEMA, schema_name="negative", seed=5, temperature=0.3)])
    assert out[0].ok and out[0].text == "echo:q"
    assert (out[0].prompt_tokens, out[0].completion_tokens) == (11, 4) and out[0].latency_s > 0
    body = recorder.bodies[-1]
    assert check(body), body
    assert body["model"] == "stub-model" and body["seed"] == 5 and body["temperature"] == 0.3
    assert body["max_tokens"] == 16 and body["messages"] == [{"role": "user", "content": "q"}]


def test_api_key_from_env_is_sent_but_never_shown(recorder, monkeypatch):
    secret = "sk-loopback-SECRET-42"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    gen = OpenAIChatGenerator(recorder.base_url, model="stub-model", api_key_env="MY_LLM_KEY", max_retries=0)
    recorder.scripts["bad"] = [(401, {})]
    out = gen.generate([_req("ok"), _req("bad")])
    assert recorder.headers_seen[0]["Authorization"] == f"Bearer {secret}"
    assert out[0].ok and not out[1].ok and "401" in out[1].error
    assert "Bearer ***" in out[1].error  # the echoed key is redacted from the server's text
    assert all(secret not in (r.error or "") + repr(r) for r in out) and secret not in repr(gen)


def test_concurrency_is_bounded_and_used():
    server = Recorder(delay=0.3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = _gen(server, max_concurrency=4)
        start = time.perf_counter()
        out = gen.generate([_req(f"r{i}") for i in range(12)])
        elapsed = time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    assert [r.text for r in out] == [f"echo:r{i}" for i in range(12)]
    assert server.max_in_flight == 4
    assert elapsed < 12 * 0.3 / 2  # serial would be 3.6 s; ideal 0.9 s


def test_retries_on_429_and_500_then_succeeds(recorder):
    recorder.scripts["flaky"] = [(429, {"Retry-After": "0"}), (500, {}), (503, {})]
    gen = _gen(recorder, max_retries=3)
    out = gen.generate([_req("flaky"), _req("steady")])
    assert out[0].ok and out[0].extra["attempts"] == 4
    assert out[1].ok and out[1].extra["attempts"] == 1  # one flaky row never costs the others
    assert sum(b["messages"][0]["content"] == "flaky" for b in recorder.bodies) == 4


def test_retry_after_is_honoured(recorder):
    recorder.scripts["slow-down"] = [(429, {"Retry-After": "1"})]
    gen = _gen(recorder, max_retries=1)
    start = time.perf_counter()
    out = gen.generate([_req("slow-down")])
    assert out[0].ok and time.perf_counter() - start >= 0.95


def test_bounded_attempts_and_no_retry_on_client_errors(recorder):
    recorder.scripts["always-500"] = [(500, {})] * 10
    recorder.scripts["bad-request"] = [(400, {})] * 10
    gen = _gen(recorder, max_retries=2)
    out = gen.generate([_req("always-500"), _req("bad-request")])
    assert not out[0].ok and "HTTP 500" in out[0].error and "3 attempt" in out[0].error
    assert not out[1].ok and "HTTP 400" in out[1].error and "1 attempt" in out[1].error
    assert len(recorder.bodies) == 4


def test_timeout_is_an_error_response():
    server = Recorder(delay=1.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = _gen(server, timeout=0.2, max_retries=1)
        start = time.perf_counter()
        out = gen.generate([_req("hang")])
        elapsed = time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    assert not out[0].ok and "Timeout" in out[0].error and elapsed < 1.5


def test_server_down_gives_errors_in_bounded_time():
    gen = OpenAIChatGenerator(f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=2, backoff_base=0.05)
    start = time.perf_counter()
    out = gen.generate([_req(f"r{i}") for i in range(5)])
    assert all(not r.ok and r.text is None and "Connect" in r.error for r in out)
    assert time.perf_counter() - start < 5


def test_generate_inside_a_running_event_loop(recorder):
    gen = _gen(recorder)

    async def notebook_cell():
        return gen.generate([_req("from-jupyter")]), await gen.agenerate([_req("async")])

    sync_out, async_out = asyncio.run(notebook_cell())
    assert sync_out[0].text == "echo:from-jupyter" and async_out[0].text == "echo:async"


def test_agenerate_calls_share_one_concurrency_bound():
    server = Recorder(delay=0.2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = _gen(server, max_concurrency=3)

        async def many_rows():  # what datasets' async map does: many calls at once
            try:
                return await asyncio.gather(*(gen.agenerate([_req(f"r{i}"), _req(f"s{i}")]) for i in range(5)))
            finally:
                await gen.aclose()

        results = asyncio.run(many_rows())
    finally:
        server.shutdown()
        server.server_close()
    assert all(r.ok for batch in results for r in batch)
    assert server.max_in_flight == 3


def test_config_builds_cached_openai_generator(recorder, tmp_path):
    config = GeneratorConfig(
        backend="openai", model="stub-model", base_url=recorder.base_url, cache_dir=str(tmp_path), api_key_env=None
    )
    gen = config.build()
    assert gen.generate([_req("c")])[0].text == "echo:c"
    again = gen.generate([_req("c")])
    assert again[0].cached and len(recorder.bodies) == 1


# -- a REAL OpenAI-compatible server: `transformers serve` on loopback ---------------------------------


@pytest.fixture(scope="module")
def served_tiny_model(tmp_path_factory):
    if importlib_find("fastapi") is None or importlib_find("uvicorn") is None:
        pytest.skip("transformers[serving] not installed")
    from test_generators_transformers import build_tiny_chat_lm

    folder = build_tiny_chat_lm(tmp_path_factory.mktemp("served-tiny-lm"))
    port = _free_port()
    cli = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [cli, "serve", str(folder), "--port", str(port), "--device", "cpu"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def importlib_find(name: str):
    import importlib.util

    return importlib.util.find_spec(name)


@pytest.mark.slow
def test_real_transformers_serve_with_hub_offline(served_tiny_model):
    base_url, model = served_tiny_model
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    gen = OpenAIChatGenerator(base_url, model=model, api_key_env=None, max_concurrency=4, timeout=120)
    requests = [_req(f"question {i}", temperature=0.0, max_new_tokens=6, json_schema=SCHEMA) for i in range(4)]
    out = gen.generate(requests)
    assert all(r.ok for r in out), [r.error for r in out]
    assert all(r.completion_tokens == 6 and r.prompt_tokens > 20 for r in out)  # chat template applied server-side
    assert all(r.extra["finish_reason"] == "length" for r in out)


def test_retry_policy_helpers():
    import email.utils
    import random

    from negsynth_hf.generators._retry import backoff_delay, is_retryable_status, parse_retry_after

    assert [is_retryable_status(s) for s in (429, 500, 503, 408, 400, 401, 404)] == [True] * 4 + [False] * 3
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(date) <= 30
    rng = random.Random(0)
    delays = [backoff_delay(a, base=0.5, maximum=4.0, rng=rng) for a in range(6)]
    assert all(0.25 <= d <= 4.0 for d in delays) and delays[3] >= 2.0  # grows, jittered, capped
    assert backoff_delay(0, retry_after=100.0, maximum=30.0) == 30.0


def test_lone_surrogate_fails_only_its_row(recorder):
    out = _gen(recorder).generate([_req("fine"), _req("bad \ud800")])
    assert out[0].ok and not out[1].ok and "UnicodeEncodeError" in out[1].error


def test_asyncio_run_per_batch_leaks_no_connections(recorder, tmp_path):
    """What a datasets transform does: asyncio.run(...) per batch, never calling aclose()."""
    from negsynth_hf.generators import CachingGenerator

    def sockets() -> int:
        fd_dir = Path("/proc/self/fd")
        if not fd_dir.is_dir():
            pytest.skip("needs /proc")
        count = 0
        for fd in fd_dir.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except OSError:
                pass
        return count

    gen = _gen(recorder, max_concurrency=4)
    asyncio.run(gen.agenerate([_req("warm")]))
    before = sockets()
    for batch in range(5):
        out = asyncio.run(gen.agenerate([_req(f"b{batch}-{i}") for i in range(6)]))
        assert all(r.ok for r in out)
    assert len(gen._loops) == 0  # every loop's pool was closed at its shutdown
    assert sockets() - before <= 0

    cached = CachingGenerator(_gen(recorder), tmp_path)

    async def explicit_close():
        await cached.inner.agenerate([_req("x")])
        await cached.aclose()  # forwarded to the HTTP generator
        return len(cached.inner._loops)

    assert asyncio.run(explicit_close()) == 0
