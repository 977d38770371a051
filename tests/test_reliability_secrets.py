"""Secrets: API keys and Hub tokens come from arguments or the environment and are never written anywhere.

Unique canary values are planted in the environment (LLM key, ``HF_TOKEN``) and passed as an argument; a full
small build (mine -> synthesize against the loopback server -> verify -> weight), ``save``, the recipes'
``BuiltDataset.save`` and the publish staging (dataset card + parquet, what would be uploaded) run with every
log record captured. Then every file under the test's temporary folder (response cache, build cache, datasets
cache, saved and staged datasets), the captured logs and output, and the repr/pickle/dill/fingerprint of every
config and generator object are scanned for the canaries.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from pathlib import Path

import dill
import pytest
from datasets import Dataset
from datasets.fingerprint import Hasher
from fault_server import Fault, FaultServer

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.build import build_dataset
from negsynth_hf.generators import CachingGenerator, GeneratorConfig, OpenAIChatGenerator
from negsynth_hf.publish import hub_token, stage_dataset, upload_targets
from negsynth_hf.publish.staging import UploadTarget
from negsynth_hf.synthesis import Synthesizer
from negsynth_hf.transform import CounterfactualNegatives

ENV_KEY = f"sk-canary-env-{uuid.uuid4().hex}"
ARG_KEY = f"sk-canary-arg-{uuid.uuid4().hex}"
HF_CANARY = f"hf_canary{uuid.uuid4().hex}"
CANARIES = (ENV_KEY, ARG_KEY, HF_CANARY)


@pytest.fixture
def planted(monkeypatch, tmp_path):
    import datasets.config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NEGSYNTH_CANARY_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)  # the default api_key_env too
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)
    monkeypatch.setenv("NEGSYNTH_CACHE", str(tmp_path / "negsynth-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    return tmp_path


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
    return [c for c in CANARIES if c.encode() in data]


def scan_files(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            hit = leaks(path.read_bytes())
            if hit:
                found[str(path.relative_to(root))] = hit
    return found


def pairs(n: int = 8) -> Dataset:
    return Dataset.from_dict(
        {
            "anchor": [f"row-{i:03d}; does compound {i} lower blood pressure in adults" for i in range(n)],
            "positive": [f"In a trial of adults, compound {i} lowered pressure by {i + 2} mmHg." for i in range(n)],
            "query_id": [f"q{i}" for i in range(n)],
        }
    )


CORPUS = [f"Corpus note {i}: compound {i + 40} was studied for kidney outcomes in {1990 + i}." for i in range(30)]


class MockedHfApi:
    """A stand-in for ``huggingface_hub.HfApi`` (no network): records what an upload would send."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return None


def test_keys_never_reach_files_logs_caches_or_fingerprints(planted, tiny_model, caplog, capfd):
    tmp = planted
    caplog.set_level(logging.DEBUG)
    # an in-process CLI test may have raised the package logger's level: capture its debug records regardless
    caplog.set_level(logging.DEBUG, logger="negsynth_hf")
    config = GeneratorConfig(
        backend="openai",
        model="fault-model",
        base_url=None,  # set below
        api_key_env="NEGSYNTH_CANARY_KEY",
        cache_dir=str(tmp / "responses"),
        max_retries=1,
        timeout=5,
    )
    with FaultServer() as server:
        server.script("row-004;", Fault.http(503), Fault.http(401))  # a retry (debug log) and a failed row
        config = GeneratorConfig.from_dict({**config.to_dict(), "base_url": server.base_url})
        result = build_dataset(
            pairs(),
            corpus=CORPUS,
            retriever=tiny_model,
            generator=config,
            strategy="counterfactual",
            num_mined=2,
            num_generated=2,
            max_attempts=1,
            cache_dir=str(tmp / "build-cache"),
            show_progress_bar=True,
        )
        assert server.requests[0].headers["authorization"] == f"Bearer {ENV_KEY}"  # the key was used...
        assert result.summary.counts["rows_generation_failed"] == 1
        result.save(tmp / "saved")
        built = result.with_recipe_info({"recipe": {"generator": config.to_dict()}})
        built.save(tmp / "built")
        staged = stage_dataset(BuiltDataset.load(tmp / "built"), tmp / "staging" / "dataset", repo_id="user/canary")
        api = MockedHfApi()
        upload_targets([UploadTarget(str(staged), "user/canary", "dataset")], token=hub_token("HF_TOKEN"), api=api)
        assert hub_token("HF_TOKEN") == HF_CANARY  # ...and so was the token

        # the key as an ARGUMENT, through a cached generator and the Synthesizer
        server.script("row-arg-1", Fault.http(401))
        gen = OpenAIChatGenerator(server.base_url, model="fault-model", api_key=ARG_KEY, api_key_env=None)
        cached = CachingGenerator(gen, tmp / "arg-responses")
        items = [
            {"query": "row-arg-0; does compound 0 help", "positive": "Compound 0 helped."},
            {"query": "row-arg-1; does compound 1 help", "positive": "Compound 1 helped."},
        ]
        results = Synthesizer(cached, strategy="naive", max_attempts=1).synthesize(items)
        assert results[0].ok and not results[1].ok and "401" in results[1].failure_reason
        assert server.requests[-1].headers["authorization"] == f"Bearer {ARG_KEY}"

    transform = CounterfactualNegatives(config, strategy="counterfactual", num_generated=2)
    objects = [config, gen, cached, transform, result.config, result.summary, results, api.calls]
    for obj in objects:
        assert not leaks(repr(obj)), type(obj)
    for obj in (config, gen, transform):  # (CachingGenerator holds a lock: not picklable, and never pickled)
        assert not leaks(pickle.dumps(obj)), type(obj)
        assert not leaks(dill.dumps(obj)), type(obj)
    assert not leaks(pickle.dumps(cached.inner)) and not leaks(pickle.dumps(cached.cache))
    clone = pickle.loads(pickle.dumps(gen))
    assert clone._api_key is None  # workers read the key from the environment instead
    # the datasets fingerprint does not depend on the key's value (it never sees it)
    fingerprint = Hasher.hash(transform)
    import os

    os.environ["NEGSYNTH_CANARY_KEY"] = "sk-some-other-key"
    assert Hasher.hash(CounterfactualNegatives(config, strategy="counterfactual", num_generated=2)) == fingerprint
    assert not leaks(fingerprint) and not leaks(result.train._fingerprint)
    assert not leaks(str(result.train.to_dict())) and not leaks(str(result.provenance.to_dict()))
    assert not leaks("\n".join(r.to_dict().__repr__() for r in results))

    out, err = capfd.readouterr()
    assert "Built dataset" in out  # the printed summary was captured
    assert not leaks(out + err)
    assert any("Retrying" in r.getMessage() for r in caplog.records)  # debug logs were captured
    assert not leaks(caplog.text)
    assert not leaks("\n".join(str(r.args) for r in caplog.records))

    written = scan_files(tmp)
    assert any(p.startswith("responses") for p in (str(f.relative_to(tmp)) for f in tmp.rglob("*.json")))
    assert (staged / "README.md").is_file()
    assert written == {}, written


def test_key_echoed_by_a_server_error_is_redacted(planted, caplog):
    caplog.set_level(logging.DEBUG)
    with FaultServer() as server:
        server.script(
            "echo",
            Fault.http(502, body="upstream rejected request with {authorization}"),
            Fault.http(401, body="bad key {authorization}"),
        )
        gen = OpenAIChatGenerator(
            server.base_url, model="fault-model", api_key=ARG_KEY, api_key_env=None, max_retries=1, backoff_base=0.01
        )
        results = Synthesizer(gen, strategy="naive", max_attempts=1).synthesize([{"query": "echo q", "positive": "p"}])
    assert not results[0].ok
    assert not leaks(results[0].failure_reason) and not leaks(caplog.text)
