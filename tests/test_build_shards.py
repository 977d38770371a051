"""A build split into shards (``build_shard`` per process, then ``build_dataset(..., shards=...)``) sends each LLM
request once and assembles the same dataset as one process does.

Real components: a tiny retriever built in code, the OpenAI-compatible client against a loopback HTTP server
(tests/fault_server.py, a scripted test double) that refuses some queries, so some replies fail validation.
The shards run one after another in this process; tests/test_recipes_multiprocess.py runs them as two ranks.
"""

from __future__ import annotations

import hashlib

import pytest
from datasets import Dataset
from fault_server import REFUSAL, Fault, FaultServer, prompt_query

from negsynth_hf import build_dataset
from negsynth_hf.build import ShardedBuild, build_shard
from negsynth_hf.generators import GeneratorConfig

PAIRS = Dataset.from_dict(
    {
        "anchor": [f"does treatment {i} lower blood pressure in trial {i}?" for i in range(7)],
        "positive": [f"trial {i}: treatment {i} lowered systolic blood pressure by {i + 3} mmHg." for i in range(7)],
        "query_id": [str(i) for i in range(7)],
    }
)
CORPUS = [f"trial {i} of drug {i % 5} on cholesterol in {i + 20} adults" for i in range(30)] + list(PAIRS["positive"])


def refuse_some(body) -> Fault | None:
    """Every third query (by content) is refused: its replies fail validation and its row records the reason."""
    digest = int(hashlib.sha256(prompt_query(body).encode()).hexdigest(), 16)
    return Fault.reply(REFUSAL) if digest % 3 == 0 else None


def _kwargs(server: FaultServer, cache) -> dict:
    generator = GeneratorConfig(
        backend="openai", model="fault-model", base_url=server.base_url, api_key_env=None, cache_dir=str(cache)
    )
    return dict(
        corpus=CORPUS, generator=generator, strategy="naive", num_mined=2, num_generated=2, max_attempts=1,
        relative_margin=None, cache_dir="", show_progress_bar=False, seed=3,
    )  # fmt: skip


def test_shards_send_each_request_once_and_assemble_the_single_process_dataset(tmp_path, tiny_model_path):
    with FaultServer() as server:
        server.rule = refuse_some
        single = build_dataset(PAIRS, retriever=tiny_model_path, **_kwargs(server, tmp_path / "cache1"))
        single_calls = server.count()
        refused = sum(1 for seen in server.requests if seen.fault == "content")
        server.reset_counts()
        kwargs = _kwargs(server, tmp_path / "cache2")
        for index in range(3):
            shard = ShardedBuild(tmp_path / "shards", 3, index=index)
            path = build_shard(PAIRS, retriever=tiny_model_path, shards=shard, **kwargs)
            assert path.is_file()
        shard_calls = server.count()
        merged = build_dataset(PAIRS, retriever=tiny_model_path, shards=ShardedBuild(tmp_path / "shards", 3), **kwargs)
        assert server.count() == shard_calls  # assembling asks the LLM nothing
    assert refused > 0 and single_calls > refused  # some replies were rejected, some accepted
    assert shard_calls == single_calls
    assert merged.train.to_list() == single.train.to_list()
    assert merged.provenance.to_list() == single.provenance.to_list()
    assert merged.summary.counts == single.summary.counts


def test_assembling_names_a_missing_or_foreign_shard(tmp_path, tiny_model_path):
    kwargs = dict(
        corpus=CORPUS, generator=None, num_mined=2, relative_margin=None, cache_dir="", show_progress_bar=False
    )
    build_shard(PAIRS, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 2, index=0), **kwargs)
    with pytest.raises(FileNotFoundError, match=r"shard-00001-of-00002\.pkl is missing.*index=1"):
        build_dataset(PAIRS, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 2), **kwargs)
    other = PAIRS.map(lambda row: {"anchor": row["anchor"] + " (other run)"})
    build_shard(other, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 2, index=1), **kwargs)
    with pytest.raises(ValueError, match=r"shard-00001-of-00002\.pkl does not hold rows 4\.\.6 of these pairs"):
        build_dataset(PAIRS, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 2), **kwargs)
    with pytest.raises(TypeError, match="num_minned"):
        build_shard(PAIRS, shards=ShardedBuild(tmp_path, 2, index=0), num_minned=2)


def test_shard_rows_match_datasets_contiguous_shards():
    for n in (1, 5, 7, 16):
        rows = Dataset.from_dict({"i": list(range(n))})
        for shards in range(1, min(n, 4) + 1):
            spec = ShardedBuild("x", shards)
            for index in range(shards):
                start, stop = spec.rows_of(index, n)
                assert list(range(start, stop)) == rows.shard(shards, index, contiguous=True)["i"]


def test_more_processes_than_rows(tmp_path, tiny_model_path):
    pairs = PAIRS.select(range(2))
    kwargs = dict(
        corpus=CORPUS, generator=None, num_mined=2, relative_margin=None, cache_dir="", show_progress_bar=False
    )
    for index in range(3):
        build_shard(pairs, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 3, index=index), **kwargs)
    merged = build_dataset(pairs, retriever=tiny_model_path, shards=ShardedBuild(tmp_path, 3), **kwargs)
    assert merged.train.to_list() == build_dataset(pairs, retriever=tiny_model_path, **kwargs).train.to_list()
