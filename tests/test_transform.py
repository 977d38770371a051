"""CounterfactualNegatives: config-only fingerprint, cache hits, num_proc, failed rows kept, async path."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher
from test_transform_helpers import ScriptedSpec, pairs

from negsynth_hf.generators import GeneratorConfig
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

ROOT = Path(__file__).resolve().parent.parent

_HASH_SNIPPET = """
from datasets.fingerprint import Hasher
from negsynth_hf.generators import GeneratorConfig
from negsynth_hf.transform import CounterfactualNegatives
t = CounterfactualNegatives(GeneratorConfig(backend="embedded", cache_dir=""), strategy="query_edit",
                            num_generated=2, seed=3)
print(Hasher.hash(t))
"""


def _transform(**kwargs) -> CounterfactualNegatives:
    spec = kwargs.pop("spec", ScriptedSpec())
    return CounterfactualNegatives(spec, strategy="naive", num_generated=kwargs.pop("num_generated", 2), **kwargs)


def test_fingerprint_is_equal_across_processes_and_config_sensitive():
    local = CounterfactualNegatives(
        GeneratorConfig(backend="embedded", cache_dir=""), strategy="query_edit", num_generated=2, seed=3
    )
    out = subprocess.run(
        [sys.executable, "-c", _HASH_SNIPPET], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == Hasher.hash(local)
    other = CounterfactualNegatives(
        GeneratorConfig(backend="embedded", cache_dir=""), strategy="query_edit", num_generated=2, seed=4
    )
    assert Hasher.hash(other) != Hasher.hash(local)


def test_live_objects_are_not_pickled_and_do_not_change_the_hash():
    transform = _transform()
    before = Hasher.hash(transform)
    transform(Dataset.from_dict(pairs(2))[:])  # builds the generator and synthesizer in this process
    assert "generator" in transform._live
    assert Hasher.hash(transform) == before
    clone = pickle.loads(pickle.dumps(transform))
    assert clone._live == {} and Hasher.hash(clone) == before
    assert set(transform.__getstate__()) == set(CounterfactualNegatives._CONFIG_FIELDS)


def test_output_columns_provenance_and_candidates():
    data = pairs(3)
    data["negative_1"] = ["mined one", "", "mined three"]
    data["negative_2"] = ["mined two", "", ""]
    transform = _transform()
    out = transform(data)
    assert list(out) == ["generated_1", "generated_2", PROVENANCE_COLUMN]
    assert all(out["generated_1"]) and all(out["generated_2"])
    record = json.loads(out[PROVENANCE_COLUMN][0])
    assert record["failure_reason"] is None
    assert record["model_id"] == "scripted-naive" and record["prompt_version"] == transform.prompt_version
    assert [n["column"] for n in record["negatives"]] == ["generated_1", "generated_2"]
    assert {"violated_requirement", "strategy_type", "explanation", "flags", "rewrote_candidate"} <= set(
        record["negatives"][0]
    )
    items = transform.inputs(data)
    assert items[0].candidates == ("mined one", "mined two")  # negative_* auto-detected, "" skipped
    assert items[1].candidates == ()


def test_failed_rows_keep_schema_and_say_why():
    ds = Dataset.from_dict(pairs(6, fail_rows=[1, 4]))
    out = ds.map(_transform(spec=ScriptedSpec(fail_token="FAIL")), batched=True, batch_size=4)
    assert len(out) == 6 and out.column_names[-3:] == ["generated_1", "generated_2", PROVENANCE_COLUMN]
    for i, row in enumerate(out):
        record = json.loads(row[PROVENANCE_COLUMN])
        if i in (1, 4):
            assert row["generated_1"] == row["generated_2"] == ""
            assert record["failure_reason"] and record["negatives"] == []
        else:
            assert row["generated_1"] and record["failure_reason"] is None


def test_bad_input_names_the_column_and_row():
    transform = _transform()
    with pytest.raises(ValueError, match="'anchor'"):
        transform({"query": ["q"], "positive": ["p"]})
    with pytest.raises(ValueError, match="row 1.*'positive'"):
        transform({"anchor": ["q", "q2"], "positive": ["p", " "]})
    with pytest.raises(ValueError, match="build"):
        CounterfactualNegatives(object())


def test_map_rerun_is_a_cache_hit(tmp_path):
    Dataset.from_dict(pairs(5)).save_to_disk(str(tmp_path / "ds"))
    ds = load_from_disk(str(tmp_path / "ds"))
    first = ds.map(_transform(), batched=True, batch_size=2)
    again = _transform()  # an equal transform built afresh (as another process would)
    second = ds.map(again, batched=True, batch_size=2)
    assert again._live == {}  # never called: datasets loaded the cached result
    assert second.cache_files == first.cache_files
    assert second.to_dict() == first.to_dict()


def test_response_cache_resumes_without_llm_calls(tmp_path):
    spec = ScriptedSpec(cache_dir=str(tmp_path / "responses"))
    ds = Dataset.from_dict(pairs(6))
    first_t = _transform(spec=spec)
    first = ds.map(first_t, batched=True, batch_size=3, load_from_cache_file=False)
    assert first_t.generator_stats()["misses"] == 6
    rerun = _transform(spec=spec)
    second = ds.map(rerun, batched=True, batch_size=3, load_from_cache_file=False)
    stats = rerun.generator_stats()
    assert stats["misses"] == 0 and stats["calls"] == 0 and stats["hits"] == 6
    assert rerun.synthesizer.generator.inner.calls == 0
    assert second["generated_1"] == first["generated_1"]
    assert all(json.loads(r)["cached_calls"] == 1 for r in second[PROVENANCE_COLUMN])


def test_num_proc_two_equals_one():
    ds = Dataset.from_dict(pairs(8, fail_rows=[3]))
    spec = ScriptedSpec(fail_token="FAIL")
    one = ds.map(_transform(spec=spec), batched=True, batch_size=2, load_from_cache_file=False)
    two = ds.map(_transform(spec=spec), batched=True, batch_size=2, num_proc=2, load_from_cache_file=False)
    assert two.to_dict() == one.to_dict()


def test_async_path_matches_sync():
    data = pairs(4)
    sync = _transform(concurrency="sync")(data)
    asynchronous = _transform(concurrency="async")(data)
    assert asynchronous == sync


def test_batch_level_error_is_recorded_per_row():
    class Exploding(CounterfactualNegatives):
        def _make_synthesizer(self, generator):
            class Boom:
                def synthesize(self, items):
                    raise RuntimeError("backend down")

            return Boom()

    out = Exploding(ScriptedSpec(), strategy="naive", num_generated=2)(pairs(3))
    assert out["generated_1"] == ["", "", ""]
    assert all("backend down" in json.loads(r)["failure_reason"] for r in out[PROVENANCE_COLUMN])


def test_hash_follows_prompt_version_and_profile():
    from negsynth_hf.synthesis import PROMPT_VERSIONS, get_profile

    a = _transform()
    assert a.prompt_version == PROMPT_VERSIONS["naive"] and a.synthesis_signature not in ("", "unavailable")
    b = CounterfactualNegatives(ScriptedSpec(), strategy="query_edit", num_generated=2)
    assert b.prompt_version == PROMPT_VERSIONS["query_edit"] and Hasher.hash(a) != Hasher.hash(b)

    other = get_profile("generic")
    custom = type(other)(**{**other.to_dict(), "style": other.style + " Short sentences."})
    c = _transform(profile=custom)
    assert c.synthesis_signature != a.synthesis_signature and Hasher.hash(c) != Hasher.hash(a)
    with pytest.raises(ValueError):
        _transform(profile="no-such-profile")
