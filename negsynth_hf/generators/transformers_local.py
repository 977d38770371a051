"""In-process generation with a transformers causal LM: chat template, left-padded batches, seeded sampling.

JSON-schema constrained decoding uses outlines' logits processor (``pip install outlines``) on top
of our own ``model.generate`` call, so batching, seeding and token counts stay identical with and
without constraints. Without outlines, generation is unconstrained and callers validate the JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from .base import ChatRequest, ChatResponse

logger = logging.getLogger(__name__)

_OUTLINES_HINT = "pip install outlines==1.3.3"


def _dtype(value: torch.dtype | str | None) -> torch.dtype:
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, str(value).removeprefix("torch."))


class TransformersGenerator:
    """A local chat LLM answering batches of :class:`ChatRequest` with ``model.generate``.

    Requests are grouped by sampling parameters (temperature, max_new_tokens, seed, schema) and sent
    in left-padded batches of ``batch_size``. Temperature 0 is greedy; otherwise sampling is seeded
    with the request's ``seed`` (same requests, same order, same batch size -> same text).

    Args:
        model_name_or_path: a local folder or Hub id (loaded lazily, on first use).
        gguf_file: GGUF file inside ``model_name_or_path`` (de-quantized by transformers).
        device: torch device.
        dtype: torch dtype (or its name).
        batch_size: rows per ``generate`` call.
        constrained: enforce ``request.json_schema`` with outlines when it is installed.
        num_threads: ``torch.set_num_threads`` during generation (1 is best on a shared CPU).
        model_id: stable identifier for provenance and cache keys (default: ``model_name_or_path``).
        top_p: nucleus sampling for non-greedy requests.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        gguf_file: str | None = None,
        device: str = "cpu",
        dtype: torch.dtype | str | None = torch.float32,
        batch_size: int = 8,
        constrained: bool = True,
        num_threads: int | None = None,
        model_id: str | None = None,
        top_p: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_name_or_path = str(model_name_or_path)
        self.gguf_file = gguf_file
        self.device = device
        self.dtype = _dtype(dtype)
        self.batch_size = batch_size
        self.constrained = constrained
        self.num_threads = num_threads
        self.top_p = top_p
        self._model_id = model_id or (
            f"{self.model_name_or_path}/{gguf_file}" if gguf_file else self.model_name_or_path
        )
        self._model = None
        self._tokenizer = None
        self._outlines_model = None
        self._processors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._warned_outlines = False

    def __repr__(self) -> str:
        return (
            f"TransformersGenerator({self.model_name_or_path!r}, gguf_file={self.gguf_file!r}, device={self.device!r}, "
            f"batch_size={self.batch_size}, constrained={self.constrained})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_model=None, _tokenizer=None, _outlines_model=None, _processors={}, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    def cache_key_extra(self) -> dict[str, Any]:
        """Backend settings that change outputs (part of the response-cache key)."""
        return {"backend": "transformers", "constrained": self.constrained and self._outlines_available()}

    # -- loading -------------------------------------------------------------------------------

    @property
    def model(self):
        self._load()
        return self._model

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path, **kwargs)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.model_name_or_path, dtype=self.dtype, **kwargs)
        model.to(self.device).eval()
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        self._tokenizer, self._model = tokenizer, model

    @staticmethod
    def _outlines_available() -> bool:
        import importlib.util

        return importlib.util.find_spec("outlines") is not None

    def _processor(self, schema: dict[str, Any]):
        """A (reset) outlines JSON-schema logits processor, or ``None`` when outlines is missing."""
        try:
            import outlines
            from outlines.backends import get_json_schema_logits_processor
        except ImportError:
            if not self._warned_outlines:
                logger.warning(
                    "outlines is not installed: JSON output is unconstrained (install: `%s`).", _OUTLINES_HINT
                )
                self._warned_outlines = True
            return None
        key = json.dumps(schema)  # property order matters: outlines generates fields in schema order
        processor = self._processors.get(key)
        if processor is None:
            if self._outlines_model is None:
                self._outlines_model = outlines.from_transformers(self.model, self.tokenizer)
            processor = get_json_schema_logits_processor(None, self._outlines_model, key)
            self._processors[key] = processor
        processor.reset()
        return processor

    # -- generation ----------------------------------------------------------------------------

    def _prompt(self, request: ChatRequest) -> str:
        messages = [dict(m) for m in request.messages]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def _run_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        first = requests[0]
        tokenizer, model = self.tokenizer, self.model
        start = time.perf_counter()
        prompts = [self._prompt(r) for r in requests]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if first.temperature > 0:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        constrained = False
        if self.constrained and first.json_schema is not None:
            processor = self._processor(first.json_schema)
            if processor is not None:
                from transformers import LogitsProcessorList

                kwargs["logits_processor"] = LogitsProcessorList([processor])
                constrained = True
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if first.seed is not None:
                torch.manual_seed(first.seed)
            output = model.generate(**inputs, **kwargs)
        latency = (time.perf_counter() - start) / len(requests)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        eos_ids = _eos_ids(model, tokenizer)
        responses = []
        for row, mask in zip(new_tokens.tolist(), inputs["attention_mask"], strict=True):
            n = _completion_length(row, eos_ids, tokenizer.pad_token_id)
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            responses.append(
                ChatResponse(
                    text=text,
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=n,
                    latency_s=latency,
                    extra={"constrained": constrained, "truncated": n >= first.max_new_tokens},
                )
            )
        return responses

    def _run_isolated(self, batch: list[ChatRequest]) -> list[ChatResponse]:
        """One batch; if it fails, each row alone, so a bad row (e.g. untokenizable text) costs only itself."""
        try:
            return self._run_batch(batch)
        except Exception as err:
            if len(batch) > 1:
                logger.warning(
                    "A batch of %d failed (%s: %s); retrying its rows one by one", len(batch), type(err).__name__, err
                )
                return [self._run_isolated([request])[0] for request in batch]
            logger.warning("Generation failed for one request: %s: %s", type(err).__name__, err)
            return [ChatResponse(text=None, error=f"{type(err).__name__}: {err}")]

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer every request, in order; a failed batch yields error responses for its rows only."""
        requests = list(requests)
        results: list[ChatResponse | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            schema = json.dumps(r.json_schema) if (self.constrained and r.json_schema) else None
            groups.setdefault((float(r.temperature), int(r.max_new_tokens), r.seed, schema), []).append(i)
        with self._lock:
            previous_threads = torch.get_num_threads()
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            try:
                for indices in groups.values():
                    for s in range(0, len(indices), self.batch_size):
                        chunk = indices[s : s + self.batch_size]
                        for i, answer in zip(chunk, self._run_isolated([requests[i] for i in chunk]), strict=True):
                            results[i] = answer
            finally:
                if self.num_threads:
                    torch.set_num_threads(previous_threads)
        return results  # type: ignore[return-value]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Runs :meth:`generate` in a worker thread (the event loop stays responsive)."""
        return await asyncio.to_thread(self.generate, list(requests))


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for value in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def _completion_length(row: list[int], eos_ids: set[int], pad_id: int | None) -> int:
    """Generated tokens up to and excluding the first EOS (or trailing padding)."""
    for i, tok in enumerate(row):
        if tok in eos_ids or (pad_id is not None and tok == pad_id and pad_id not in eos_ids):
            return i
    return len(row)
