"""ResponseCache / CachingGenerator with a scripted inner generator (a mock standing in for an LLM), plus GeneratorConfig."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from collections.abc import Sequence

import pytest

from negsynth_hf.generators import (
    CachingGenerator,
    ChatGenerator,
    ChatRequest,
    ChatResponse,
    GeneratorConfig,
    OpenAIChatGenerator,
    ResponseCache,
)
from negsynth_hf.generators.caching import request_key


class ScriptedGenerator:
    """Mock LLM: answers ``echo:<last message>``; content starting with 'fail' gets an error, with 'refuse' a refusal."""

    def __init__(self, model_id: str = "mock-llm") -> None:
        self._model_id = model_id
        self.seen: list[ChatRequest] = []
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.calls += 1
        self.seen.extend(requests)
        out = []
        for r in requests:
            content = r.messages[-1]["content"]
            if content.startswith("fail"):
                out.append(ChatResponse(text=None, error="scripted failure"))
            elif content.startswith("refuse"):
                out.append(ChatResponse(text="I'm sorry, I can't help with that."))
            elif r.json_schema is not None:
                out.append(ChatResponse(text=f'Sure! ```json\n{{"echo": "{content}"}}\n```'))
            else:
                out.append(ChatResponse(text=f"echo:{content}", prompt_tokens=3, completion_tokens=2))
        return out

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return self.generate(requests)


def _req(content: str, **kwargs) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": content},), **kwargs)


def test_hits_skip_the_inner_generator(tmp_path):
    inner = ScriptedGenerator()
    gen = CachingGenerator(inner, tmp_path)
    assert isinstance(gen, ChatGenerator)
    reqs = [_req("a"), _req("b"), _req("a")]  # duplicate key answered once
    first = gen.generate(reqs)
    assert [r.text for r in first] == ["echo:a", "echo:b", "echo:a"]
    assert not any(r.cached for r in first)
    assert len(inner.seen) == 2
    assert gen.stats == {
        "hits": 0,
        "misses": 2,
        "calls": 1,
        "errors": 0,
        "uncached": 0,
        "write_errors": 0,
        "discarded": 0,
        "kept_rejected": 0,
        "corrupt": 0,
    }

    rerun = CachingGenerator(ScriptedGenerator(), ResponseCache(tmp_path))  # a new process, same folder
    again = rerun.generate(reqs)
    assert [r.text for r in again] == ["echo:a", "echo:b", "echo:a"] and all(r.cached for r in again)
    assert rerun.inner.calls == 0 and rerun.stats["hits"] == 3 and rerun.stats["calls"] == 0
    assert again[0].prompt_tokens == 3 and again[0].completion_tokens == 2


def test_async_path_and_errors_not_cached(tmp_path):
    inner = ScriptedGenerator()
    gen = CachingGenerator(inner, tmp_path)
    out = asyncio.run(gen.agenerate([_req("x"), _req("fail-1")]))
    assert out[0].ok and not out[1].ok and out[1].error == "scripted failure"
    assert gen.stats["errors"] == 1
    out = asyncio.run(gen.agenerate([_req("x"), _req("fail-1")]))
    assert out[0].cached and not out[1].cached  # the failure is asked again
    assert inner.seen[-1].messages[0]["content"] == "fail-1" and len(inner.seen) == 3


def test_key_depends_on_everything_that_changes_the_answer():
    base = _req("q", temperature=0.2, max_new_tokens=64, seed=1, prompt_version="p1")
    key = request_key(base, model_id="m")
    variants = [
        request_key(_req("q", temperature=0.2, max_new_tokens=64, seed=1, prompt_version="p2"), model_id="m"),
        request_key(base, model_id="other-model"),
        request_key(_req("q", temperature=0.7, max_new_tokens=64, seed=1, prompt_version="p1"), model_id="m"),
        request_key(_req("q", temperature=0.2, max_new_tokens=65, seed=1, prompt_version="p1"), model_id="m"),
        request_key(_req("q", temperature=0.2, max_new_tokens=64, seed=2, prompt_version="p1"), model_id="m"),
        request_key(_req("q2", temperature=0.2, max_new_tokens=64, seed=1, prompt_version="p1"), model_id="m"),
        request_key(
            _req("q", temperature=0.2, max_new_tokens=64, seed=1, prompt_version="p1", json_schema={"type": "object"}),
            model_id="m",
        ),
        request_key(base, model_id="m", extra={"constrained": False}),
    ]
    assert len({key, *variants}) == len(variants) + 1
    assert request_key(_req("q", temperature=0.2, max_new_tokens=64, seed=1, prompt_version="p1"), model_id="m") == key


def test_prompt_version_change_misses(tmp_path):
    inner = ScriptedGenerator()
    gen = CachingGenerator(inner, tmp_path)
    gen.generate([_req("q", prompt_version="v1")])
    gen.generate([_req("q", prompt_version="v2")])
    assert gen.stats["misses"] == 2 and inner.calls == 2


def test_corrupt_and_partial_entries_are_misses(tmp_path):
    cache = ResponseCache(tmp_path)
    gen = CachingGenerator(ScriptedGenerator(), cache)
    gen.generate([_req("a"), _req("b")])
    key_a = request_key(_req("a"), model_id="mock-llm")
    key_b = request_key(_req("b"), model_id="mock-llm")
    cache.path(key_a).write_text('{"key": "', encoding="utf-8")  # truncated write
    cache.path(key_b).write_text('{"key": "someone-else", "text": "x"}', encoding="utf-8")
    out = gen.generate([_req("a"), _req("b")])
    assert [r.text for r in out] == ["echo:a", "echo:b"] and not any(r.cached for r in out)
    assert gen.stats["corrupt"] == 2
    assert cache.get(key_a).text == "echo:a"  # rewritten atomically
    assert not list(tmp_path.rglob("*.tmp"))


def _worker(args):
    folder, worker = args
    gen = CachingGenerator(ScriptedGenerator(), folder)
    out = gen.generate([_req(f"row {i}") for i in range(40)])
    return worker, [r.text for r in out]


def test_several_processes_share_one_folder(tmp_path):
    ctx = multiprocessing.get_context(
        "spawn" if multiprocessing.get_start_method(allow_none=True) == "spawn" else "fork"
    )
    with ctx.Pool(3) as pool:
        results = pool.map(_worker, [(str(tmp_path), w) for w in range(3)])
    expected = [f"echo:row {i}" for i in range(40)]
    assert all(texts == expected for _, texts in results)
    cache = ResponseCache(tmp_path)
    assert len(cache) == 40
    gen = CachingGenerator(ScriptedGenerator(), cache)
    assert all(r.cached for r in gen.generate([_req(f"row {i}") for i in range(40)]))
    assert cache.corrupt == 0 and not list(tmp_path.rglob("*.tmp"))


def test_api_key_never_in_cache_key_repr_or_pickle(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-123456"
    monkeypatch.setenv("NEGSYNTH_TEST_KEY", secret)
    explicit = OpenAIChatGenerator("http://127.0.0.1:9/v1", model="m", api_key=secret + "x")
    from_env = OpenAIChatGenerator("http://127.0.0.1:9/v1", model="m", api_key_env="NEGSYNTH_TEST_KEY")
    for gen in (explicit, from_env):
        assert secret not in repr(gen) and secret not in repr(CachingGenerator(gen, tmp_path))
        assert secret.encode() not in pickle.dumps(gen)
        assert secret not in request_key(_req("q"), model_id=gen.model_id, extra=gen.cache_key_extra())
        assert secret not in str(gen.cache_key_extra())
    config = GeneratorConfig(
        backend="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="NEGSYNTH_TEST_KEY"
    )
    assert secret not in repr(config) and secret.encode() not in pickle.dumps(config)
    # a cached answer through a keyed generator leaves no trace of the key on disk
    gen = CachingGenerator(ScriptedGenerator(model_id=from_env.model_id), tmp_path)
    gen.generate([_req("q")])
    for path in tmp_path.rglob("*"):
        assert secret not in path.name
        if path.is_file():
            assert secret not in path.read_text(encoding="utf-8")


def test_generator_config_round_trip_and_validation(tmp_path):
    config = GeneratorConfig(
        backend="openai", model="served", base_url="http://127.0.0.1:1/v1", cache_dir=str(tmp_path)
    )
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    assert pickle.loads(pickle.dumps(config)) == config and hash(config) == hash(GeneratorConfig(**config.to_dict()))
    with pytest.raises(ValueError, match="unknown GeneratorConfig keys"):
        GeneratorConfig.from_dict({**config.to_dict(), "api_key": "x"})
    with pytest.raises(ValueError):
        GeneratorConfig(backend="openai")  # no model
    with pytest.raises(ValueError):
        GeneratorConfig(backend="nope")  # type: ignore[arg-type]
    built = config.build()
    assert isinstance(built, CachingGenerator) and isinstance(built.inner, OpenAIChatGenerator)
    assert built.cache.directory == tmp_path and built.inner.response_format == "json_schema"
    uncached = GeneratorConfig(backend="openai", model="served", cache_dir="").build()
    assert isinstance(uncached, OpenAIChatGenerator) and uncached.base_url == "https://api.openai.com/v1"
    assert all(f.metadata.get("help") for f in __import__("dataclasses").fields(GeneratorConfig))


def test_generator_config_fingerprint_is_stable():
    from datasets.fingerprint import Hasher

    a = Hasher.hash(GeneratorConfig(backend="openai", model="m", base_url="http://x/v1"))
    b = Hasher.hash(GeneratorConfig(backend="openai", model="m", base_url="http://x/v1"))
    c = Hasher.hash(GeneratorConfig(backend="openai", model="m2", base_url="http://x/v1"))
    assert a == b != c


def test_unusable_replies_are_returned_not_cached_and_discard_forgets(tmp_path):
    inner = ScriptedGenerator()
    gen = CachingGenerator(inner, tmp_path)
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    wrong_shape = {"type": "object", "required": ["passages"]}
    reqs = [
        _req("refuse-1", json_schema=schema),
        _req("good", json_schema=schema),
        _req("refuse-2"),
        _req("shape", json_schema=wrong_shape),
    ]
    out = gen.generate(reqs)
    assert all(r.ok for r in out) and gen.stats["uncached"] == 2  # refusal / wrong-shape JSON are not stored
    again = gen.generate(reqs)
    assert [r.cached for r in again] == [False, True, True, False]  # fenced JSON counts; free text w/o schema too
    assert gen.discard([reqs[1], _req("never-asked")]) == 1 and gen.stats["discarded"] == 1
    assert not gen.generate([reqs[1]])[0].cached


def test_cache_write_failure_keeps_the_answers(tmp_path, monkeypatch):
    import tempfile

    gen = CachingGenerator(ScriptedGenerator(), tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device (mocked)")

    monkeypatch.setattr(tempfile, "mkstemp", disk_full)
    out = gen.generate([_req("a"), _req("b")])
    assert [r.text for r in out] == ["echo:a", "echo:b"] and gen.stats["write_errors"] == 2


def test_lone_surrogate_costs_only_its_row(tmp_path):
    gen = CachingGenerator(ScriptedGenerator(), tmp_path)
    out = gen.generate([_req("ok"), _req("bad \ud800 row")])
    assert out[0].text == "echo:ok" and out[1].text == "echo:bad \ud800 row"
    assert gen.generate([_req("bad \ud800 row")])[0].cached  # stored (ASCII-escaped) and read back intact


def test_an_interrupted_long_batch_keeps_the_chunks_already_answered(tmp_path):
    """Misses go out in chunks of ``flush_every``, each stored before the next: a crash mid-batch loses one chunk."""

    class DiesOnThirdChunk(ScriptedGenerator):  # mock LLM whose process dies mid-batch
        def generate(self, requests):
            if self.calls == 2:
                raise KeyboardInterrupt("killed mid-batch")
            return super().generate(requests)

    reqs = [_req(f"q{i}") for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        CachingGenerator(DiesOnThirdChunk(), tmp_path, flush_every=4).generate(reqs)
    resumed = ScriptedGenerator()
    gen = CachingGenerator(resumed, tmp_path, flush_every=4)
    out = gen.generate(reqs)
    assert [r.text for r in out] == [f"echo:q{i}" for i in range(10)]
    assert [r.cached for r in out] == [True] * 8 + [False] * 2  # the first two chunks survived
    assert [r.messages[-1]["content"] for r in resumed.seen] == ["q8", "q9"] and gen.stats["calls"] == 1
    with pytest.raises(ValueError, match="flush_every"):
        CachingGenerator(ScriptedGenerator(), tmp_path, flush_every=0)


class ParallelScripted(ScriptedGenerator):
    """Mock LLM with ``max_concurrency`` slots whose answers land out of order; it records how many batches
    were in flight at once and dies (``KeyboardInterrupt``, a kill) on the batch holding ``die_on``."""

    def __init__(self, max_concurrency: int, die_on: str | None = None) -> None:
        super().__init__()
        self.max_concurrency = max_concurrency
        self.die_on = die_on
        self.in_flight = self.max_in_flight = 0

    async def agenerate(self, requests):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            first = int(requests[0].messages[-1]["content"][1:])
            if self.die_on is not None and any(r.messages[-1]["content"] == self.die_on for r in requests):
                await asyncio.sleep(0.2)  # every batch sent before it has landed by then
                raise KeyboardInterrupt("killed mid-batch")
            await asyncio.sleep(0.02 * (first % 3))  # later batches may land first
            return self.generate(requests)
        finally:
            self.in_flight -= 1


def test_async_batches_fill_the_inner_slots_and_each_is_stored_as_it_lands(tmp_path):
    reqs = [_req(f"q{i}") for i in range(20)]
    inner = ParallelScripted(max_concurrency=6)
    out = asyncio.run(CachingGenerator(inner, tmp_path, flush_every=2).agenerate(reqs))
    assert [r.text for r in out] == [f"echo:q{i}" for i in range(20)]  # in request order despite out-of-order answers
    assert inner.max_in_flight == 3  # 6 slots / 2 per chunk
    assert len(ResponseCache(tmp_path)) == 20
    serial = ParallelScripted(max_concurrency=6)
    serial.max_concurrency = None  # a generator that declares no parallelism gets one chunk at a time
    asyncio.run(CachingGenerator(serial, tmp_path / "serial", flush_every=2).agenerate(reqs))
    assert serial.max_in_flight == 1


def test_a_killed_async_batch_keeps_every_chunk_that_landed(tmp_path):
    reqs = [_req(f"q{i}") for i in range(20)]
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(CachingGenerator(ParallelScripted(6, die_on="q10"), tmp_path, flush_every=2).agenerate(reqs))
    resumed = ParallelScripted(max_concurrency=6)
    out = asyncio.run(CachingGenerator(resumed, tmp_path, flush_every=2).agenerate(reqs))
    assert [r.text for r in out] == [f"echo:q{i}" for i in range(20)]
    cached = [r.cached for r in out]
    assert all(cached[:10]) and not any(cached[10:12])  # everything before the killed chunk was stored
    # only what was in flight with the killed chunk (3 chunks of 2), and what was never sent, is asked again
    assert len(resumed.seen) == cached.count(False) and cached.count(False) <= 20 - 10
