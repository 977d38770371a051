"""Fault injection against a loopback OpenAI-compatible server (tests/fault_server.py, a scripted test double).

Every input row must end in the output with either valid negatives or a recorded failure reason; retries are
bounded; a second run over the same response cache sends requests only for the rows that failed (counted on
the server side) and ends with the same dataset as a run that never saw a fault.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from datasets import Dataset
from fault_server import REFUSAL, Fault, FaultServer, LoopbackSpec, schema_name

from negsynth_hf.generators import GeneratorConfig
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

MAX_RETRIES = 2  # HTTP-level: at most 3 tries per call
MAX_ATTEMPTS = 2  # synthesizer-level: a failed call is asked again once
G = 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def rows(n: int) -> dict[str, list[str]]:
    """Rows whose queries carry a unique token ``row-NNN;`` that the server scripts faults on."""
    return {
        "anchor": [f"row-{i:03d}; does compound {i} lower blood pressure in adults" for i in range(n)],
        "positive": [
            f"In a trial of 300 adults, compound {i} lowered systolic pressure by {i % 9 + 2} mmHg." for i in range(n)
        ],
    }


def config(server: FaultServer, cache_dir, **kwargs) -> GeneratorConfig:
    """The public config (its default backoff: 0.25-0.5 s, then 0.5-1 s)."""
    kwargs.setdefault("timeout", 0.3)
    kwargs.setdefault("max_retries", MAX_RETRIES)
    kwargs.setdefault("max_concurrency", 8)
    return GeneratorConfig(
        backend="openai",
        model="fault-model",
        base_url=server.base_url,
        api_key_env=None,
        cache_dir=str(cache_dir),
        **kwargs,
    )


def fast(server: FaultServer, cache_dir, **kwargs) -> LoopbackSpec:
    """A config-only spec with 20 ms backoff (same generator classes, faster tests)."""
    return LoopbackSpec(server.base_url, cache_dir=str(cache_dir), max_retries=MAX_RETRIES, **kwargs)


def transform(cfg, strategy: str = "naive") -> CounterfactualNegatives:
    return CounterfactualNegatives(cfg, strategy=strategy, num_generated=G, max_attempts=MAX_ATTEMPTS)


def run_map(ds: Dataset, t: CounterfactualNegatives, batch_size: int = 8) -> Dataset:
    return ds.map(t, batched=True, batch_size=batch_size, load_from_cache_file=False)


def records(out: Dataset) -> list[dict]:
    return [json.loads(r) for r in out[PROVENANCE_COLUMN]]


def generated(out: Dataset) -> list[list[str]]:
    return [[out[f"generated_{k}"][i] for k in range(1, G + 1)] for i in range(len(out))]


# row -> (faults scripted for that row's requests, expected outcome: "ok" or a regex for the failure reason)
PERSISTENT = 50  # "always" for this test's bounded number of attempts
SCENARIOS: dict[int, tuple[list[Fault], str]] = {
    0: ([Fault.http(503), Fault.http(502)], "ok"),  # 5xx burst, then fine
    1: ([Fault.http(429, retry_after="0")] * 2, "ok"),  # rate limited with Retry-After, then fine
    2: ([Fault.http(500)] * PERSISTENT, r"HTTP 500.*after 3 attempt"),  # server keeps failing
    3: ([Fault.slow(0.8)], "ok"),  # slower than the 0.5 s timeout once
    4: ([Fault.truncated()], "ok"),  # body cut short, connection closed
    5: ([Fault.not_json()], "ok"),  # 200 with an HTML body: re-asked
    6: ([Fault.reply(REFUSAL)] * PERSISTENT, r"naive:.*after 2 attempts"),  # the model refuses every time
    7: ([Fault.empty_choices()], "ok"),  # 200 with "choices": []
    8: ([Fault.reply('{"answer": "yes", "confidence": 0.9}')] * PERSISTENT, r"passages"),  # schema violation
    9: ([Fault.drop()] * PERSISTENT, r"(RemoteProtocolError|ReadError|Disconnected|closed).*after 3 attempt"),
    10: ([Fault.http(400)] * PERSISTENT, r"HTTP 400.*after 1 attempt"),  # client error: never retried
    11: ([Fault.slow(0.8)] * PERSISTENT, r"Timeout.*after 3 attempt"),  # always too slow
    12: ([Fault.reply('{"passages": []}')] * PERSISTENT, r"passages"),  # valid JSON, empty list
    13: ([Fault.empty_choices()] * PERSISTENT, r"malformed response"),
}
CLEAN = range(14, 20)


def _script(server: FaultServer) -> None:
    for row, (faults, _) in SCENARIOS.items():
        server.script(f"row-{row:03d};", *faults)


def _body_key(seen) -> str:
    body = dict(seen.body)
    return json.dumps({"messages": body["messages"], "seed": body.get("seed")}, sort_keys=True)


# rows that failed on transport/HTTP errors (never cached), and rows that failed on a 200 reply with unusable
# content (a refusal, JSON of the wrong shape): the cache policy keeps refusals and JSON without the required keys
# out of the cache, and the synthesizer discards the cached replies it rejected (valid JSON failing validation)
TRANSPORT_FAILURES = {2, 9, 10, 11, 13}
CONTENT_FAILURES = {6, 8, 12}


def test_every_row_ends_valid_or_with_a_reason_and_rerun_completes_only_failures(tmp_path):
    n = 20
    ds = Dataset.from_dict(rows(n))
    with FaultServer() as reference_server:  # what a run that never saw a fault produces
        reference = run_map(ds, transform(config(reference_server, tmp_path / "reference-cache")))
    assert all(r["failure_reason"] is None for r in records(reference))

    with FaultServer() as server:
        _script(server)
        cache = tmp_path / "cache"
        start = time.perf_counter()
        first = run_map(ds, transform(config(server, cache, max_concurrency=n)), batch_size=n)
        elapsed = time.perf_counter() - start
        assert len(first) == n  # no row lost
        failed = set()
        for i, (record, texts) in enumerate(zip(records(first), generated(first), strict=True)):
            expected = SCENARIOS[i][1] if i in SCENARIOS else "ok"
            reason = record["failure_reason"]
            if expected == "ok":
                assert reason is None, (i, reason)
                assert all(t.strip() for t in texts), (i, texts)
            else:
                failed.add(i)
                assert reason and texts == [""] * G and record["negatives"] == [], (i, record)
                assert re.search(expected, reason), (i, reason)
        # bounded: no row ever costs more than MAX_ATTEMPTS x (MAX_RETRIES + 1) requests
        per_row = {i: server.count(f"row-{i:03d};") for i in range(n)}
        assert max(per_row.values()) <= MAX_ATTEMPTS * (MAX_RETRIES + 1), per_row
        assert per_row[10] == MAX_ATTEMPTS  # a 400 is not retried at the HTTP level
        assert per_row[6] == per_row[8] == MAX_ATTEMPTS  # bad content: re-asked by the synthesizer, no HTTP retry
        assert all(per_row[i] == 1 for i in CLEAN)
        assert elapsed < 30, elapsed  # backoff is bounded too
        answered = {_body_key(s) for s in server.requests if s.fault == "ok"}

        # second run, same response cache, server healthy now
        server.scripts.clear()
        server.reset_counts()
        second = run_map(ds, transform(config(server, cache, max_concurrency=n)), batch_size=n)
        resent = [_body_key(s) for s in server.requests]
        assert not answered & set(resent)  # no call that got a usable answer is ever sent again
        asked = {i for i in range(n) if server.count(f"row-{i:03d};")}
        # rows that failed on transport errors, and rows whose first attempt failed (5, 7), are asked once more;
        # no row whose calls all got a usable answer is asked at all
        assert failed == TRANSPORT_FAILURES | CONTENT_FAILURES
        assert TRANSPORT_FAILURES | {5, 7} <= asked <= failed | {5, 7}, asked
        assert all(server.count(f"row-{i:03d};") == 1 for i in asked)
        assert CONTENT_FAILURES <= asked  # no rejected reply is replayed from the cache
        recs = records(second)
        for i in range(n):
            assert recs[i]["failure_reason"] is None, (i, recs[i])
            assert generated(second)[i] == generated(reference)[i]  # same as the fault-free run
            if i not in asked:
                assert recs[i]["cached_calls"] == recs[i]["llm_calls"] >= 1


def test_rerun_reasks_rows_whose_replies_were_refusals(tmp_path):
    ds = Dataset.from_dict(rows(3))
    with FaultServer() as server:
        server.script("row-001;", *[Fault.reply(REFUSAL)] * MAX_ATTEMPTS)
        cache = tmp_path / "cache"
        first = run_map(ds, transform(config(server, cache)))
        assert records(first)[1]["failure_reason"]
        server.reset_counts()
        second = run_map(ds, transform(config(server, cache)))
        assert server.count("row-001;") == 1 and server.count() == 1
        assert records(second)[1]["failure_reason"] is None


def test_rerun_reasks_rows_whose_cached_replies_were_rejected(tmp_path):
    ds = Dataset.from_dict(rows(3))
    with FaultServer() as server:
        server.script("row-001;", *[Fault.reply('{"passages": []}')] * MAX_ATTEMPTS)
        cache = tmp_path / "cache"
        first = run_map(ds, transform(config(server, cache)))
        assert records(first)[1]["failure_reason"]
        server.reset_counts()
        second = run_map(ds, transform(config(server, cache)))
        assert server.count("row-001;") >= 1
        assert records(second)[1]["failure_reason"] is None


def test_keep_rejected_replays_a_failed_row_without_the_llm(tmp_path):
    """``keep_rejected=True`` (a committed benchmark cache): the rerun replays the same failure, no LLM call."""
    ds = Dataset.from_dict(rows(3))
    with FaultServer() as server:
        server.script("row-001;", *[Fault.reply('{"passages": []}')] * MAX_ATTEMPTS)
        cache = tmp_path / "cache"
        first = run_map(ds, transform(config(server, cache, keep_rejected=True)))
        assert records(first)[1]["failure_reason"]
        server.reset_counts()
        second = run_map(ds, transform(config(server, cache, keep_rejected=True)))
        assert server.count() == 0
        assert records(second)[1]["failure_reason"] == records(first)[1]["failure_reason"]
        assert generated(second) == generated(first)


def test_rerun_replays_the_rejected_reply_of_a_row_that_then_succeeded(tmp_path):
    """Only failed rows forget their rejected replies: a row completed by a re-ask is replayed, no LLM call."""
    ds = Dataset.from_dict(rows(3))
    with FaultServer() as server:
        server.script("row-001;", Fault.reply('{"passages": []}'))  # cached (valid JSON), rejected, then re-asked
        cache = tmp_path / "cache"
        first = run_map(ds, transform(config(server, cache)))
        assert records(first)[1]["failure_reason"] is None and records(first)[1]["attempts"] == 2
        server.reset_counts()
        second = run_map(ds, transform(config(server, cache)))
        assert server.count() == 0
        assert records(second)[1]["cached_calls"] == records(second)[1]["llm_calls"] == 2
        assert generated(second) == generated(first)


def test_connection_refused_mid_run_then_resume(tmp_path):
    n = 24
    ds = Dataset.from_dict(rows(n))
    with FaultServer(delay=0.02) as server:
        port = server.port
        server.refuse_after = 10  # the server goes away after 10 requests
        cfg = fast(server, tmp_path / "cache", max_concurrency=2)
        start = time.perf_counter()
        first = run_map(ds, transform(cfg), batch_size=6)
        assert time.perf_counter() - start < 40
        recs = records(first)
        ok = {i for i, r in enumerate(recs) if r["failure_reason"] is None}
        failed = set(range(n)) - ok
        assert len(first) == n and 5 <= len(ok) <= 12 and failed
        for i in failed:
            assert "Connect" in recs[i]["failure_reason"] or "Error" in recs[i]["failure_reason"], recs[i]
        seen_before = server.count()
        # bounded: refused connections are retried at most MAX_RETRIES times per attempt (and never reach the server)
        assert seen_before <= 12

        server.start_listening()  # back on the same port
        assert server.port == port
        server.reset_counts()
        second = run_map(ds, transform(cfg), batch_size=6)
        asked = {i for i in range(n) if server.count(f"row-{i:03d};")}
        assert asked == failed  # successful rows were answered from the response cache
        assert all(r["failure_reason"] is None for r in records(second))
    with FaultServer() as clean:
        reference = run_map(ds, transform(fast(clean, tmp_path / "reference")), batch_size=6)
    assert generated(second) == generated(reference)


def test_counterfactual_rerun_repeats_neither_stage_that_succeeded(tmp_path):
    """Two-stage strategy: rows whose generation stage failed reuse their cached analysis on the rerun."""
    n = 6
    ds = Dataset.from_dict(rows(n))
    with FaultServer() as server:
        # row 1 fails in analysis (503s), row 2 in generation (500s), row 3 in generation (timeouts)
        server.script("row-001;", *[Fault.http(503)] * PERSISTENT)
        cache = tmp_path / "cache"

        # faults for stage 2 only: a rule that looks at the schema name
        def stage_two_faults(body):
            prompt = body["messages"][1]["content"]
            if schema_name(body) == "generation" and "row-002;" in prompt:
                return Fault.http(500)
            if schema_name(body) == "generation" and "row-003;" in prompt:
                return Fault.slow(0.8)
            return None

        server.rule = stage_two_faults
        first = run_map(ds, transform(fast(server, cache), "counterfactual"))
        recs = records(first)
        assert [r["failure_reason"] is None for r in recs] == [True, False, False, False, True, True]
        assert recs[1]["failure_reason"].startswith("analysis:") and "HTTP 503" in recs[1]["failure_reason"]
        assert recs[2]["failure_reason"].startswith("generation:") and "HTTP 500" in recs[2]["failure_reason"]
        assert recs[3]["failure_reason"].startswith("generation:") and "Timeout" in recs[3]["failure_reason"]
        assert server.count("row-001;", stage="generation") == 0  # a row that failed stage 1 never reaches stage 2

        server.rule = None
        server.scripts.clear()
        server.reset_counts()
        second = run_map(ds, transform(fast(server, cache), "counterfactual"))
        assert all(r["failure_reason"] is None for r in records(second))
        assert server.count(stage="analysis") == 1 and server.count("row-001;", stage="analysis") == 1
        assert {i for i in range(n) if server.count(f"row-{i:03d};", stage="generation")} == {1, 2, 3}
        for i in (0, 4, 5):
            assert generated(second)[i] == generated(first)[i]


def test_retry_after_is_capped_and_http_dates_are_honoured():
    from email.utils import formatdate

    from negsynth_hf.generators import ChatRequest, OpenAIChatGenerator

    def req(content: str) -> ChatRequest:
        return ChatRequest(messages=({"role": "user", "content": content},), max_new_tokens=8)

    with FaultServer() as server:
        gen = OpenAIChatGenerator(
            server.base_url, model="fault-model", api_key_env=None, max_retries=1, backoff_base=0.01, backoff_max=0.3
        )
        server.script("hostile", Fault.http(429, retry_after="3600"))  # an hour: capped at backoff_max
        start = time.perf_counter()
        (out,) = gen.generate([req("hostile")])
        assert out.ok and out.extra["attempts"] == 2 and time.perf_counter() - start < 2.0
        server.script("dated", Fault.http(503, retry_after=formatdate(time.time() + 1.2, usegmt=True)))
        start = time.perf_counter()
        (out,) = gen.generate([req("dated")])
        assert out.ok and 0.25 <= time.perf_counter() - start < 2.0  # waited (capped at 0.3 s), then succeeded


def test_429_storm_on_every_row_completes_with_bounded_requests(tmp_path):
    n = 16
    ds = Dataset.from_dict(rows(n))
    with FaultServer() as server:
        for i in range(n):
            server.script(f"row-{i:03d};", Fault.http(429, retry_after="0"), Fault.http(429, retry_after="0"))
        out = run_map(ds, transform(fast(server, tmp_path / "cache", max_concurrency=16)), batch_size=n)
        assert all(r["failure_reason"] is None for r in records(out))
        assert server.count() == 3 * n  # two rate-limited tries and one answer per row, nothing more
        assert server.max_in_flight <= 16
