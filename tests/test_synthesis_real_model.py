"""The synthesizer against a REAL (tiny, random) transformers model through TransformersGenerator.

A random 2-layer Llama writes gibberish, so this checks the mechanics a scripted generator cannot:
real chat templating and batched generation, token accounting, and that garbage output ends in
bounded retries and a precise failure reason per row rather than an exception.
"""

from __future__ import annotations

import asyncio

import pytest
from test_generators_transformers import build_tiny_chat_lm

from negsynth_hf.generators import TransformersGenerator
from negsynth_hf.synthesis import SynthesisInput, Synthesizer


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> TransformersGenerator:
    folder = build_tiny_chat_lm(tmp_path_factory.mktemp("tiny-synth-lm"))
    return TransformersGenerator(str(folder), batch_size=4, num_threads=1, constrained=False)


ITEMS = [
    SynthesisInput(
        "Vitamin D reduces fracture risk in older adults.", "A trial found fewer fractures.", title="Vitamin D"
    ),
    SynthesisInput(
        "Aspirin lowers stroke risk.", "Aspirin reduced strokes by 20%.", candidates=("Statins and strokes.",)
    ),
]


@pytest.mark.parametrize("strategy", ["counterfactual", "naive", "query_edit"])
def test_tiny_real_model_runs_every_strategy(tiny_generator, strategy):
    synth = Synthesizer(tiny_generator, strategy=strategy, num_negatives=2, max_new_tokens=8, max_attempts=2)
    results = synth.synthesize(ITEMS)
    assert len(results) == 2
    for res in results:
        assert res.model_id == tiny_generator.model_id and res.strategy == strategy
        assert res.llm_calls >= 1 and res.completion_tokens > 0
        # gibberish either fails with a stage-prefixed reason or (naive/query_edit plain text) yields flagged text
        assert (res.failure_reason is not None) != bool(res.negatives)
        if res.failure_reason:
            assert res.failure_reason.split(":")[0] in {"analysis", "generation", "naive", "query_edit", "passage"}


def test_tiny_real_model_async(tiny_generator):
    synth = Synthesizer(tiny_generator, strategy="counterfactual", max_new_tokens=8, max_attempts=1)
    results = asyncio.run(synth.asynthesize(ITEMS))
    assert [r.llm_calls for r in results] == [1, 1]
    assert all(r.failure_reason.startswith("analysis: ") for r in results)
