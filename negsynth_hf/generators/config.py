"""``GeneratorConfig``: everything needed to (re)build a generator, and nothing live or secret.

It is a frozen dataclass of plain values, so it pickles into ``datasets.map(num_proc=...)`` workers
and hashes to the same fingerprint on every run. API keys are never stored: only the NAME of the
environment variable that holds one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from .base import ChatGenerator

Backend = Literal["llamacpp", "embedded", "transformers", "openai"]
BACKENDS: tuple[str, ...] = get_args(Backend)
ResponseFormat = Literal["json_schema", "tgi", "guided_json", "none"]

OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class GeneratorConfig:
    """How to build a :class:`ChatGenerator`; :meth:`build` creates it (wrapped in a response cache)."""

    backend: Backend = field(
        default="llamacpp",
        metadata={
            "help": "'llamacpp' (a local GGUF model served by llama.cpp; the offline default), 'openai' (any "
            "OpenAI-compatible server: vLLM, TGI, transformers serve, hosted APIs), 'transformers' (any local causal "
            "LM in-process) or 'embedded' (SmolLM2-135M through transformers)."
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "llamacpp: a known model name (qwen2.5-coder-1.5b-instruct, the default, or "
            "smollm2-135m-instruct) or a .gguf path; transformers: model folder/Hub id; openai: served model name. "
            "Unused for 'embedded'."
        },
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL ending in /v1 (openai backend). None: api.openai.com."},
    )
    api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Name of the environment variable holding the API key (the key itself is never stored)."},
    )
    max_concurrency: int = field(default=8, metadata={"help": "Requests in flight at once (openai backend)."})
    timeout: float | None = field(
        default=None,
        metadata={
            "help": "Seconds per HTTP request. None: 60 (openai), 600 (llamacpp: CPU decoding is slow, so allow for the longest reply)."
        },
    )
    max_retries: int = field(
        default=3, metadata={"help": "Retries on 429/5xx/timeouts/connection errors, with exponential backoff."}
    )
    response_format: ResponseFormat = field(
        default="json_schema",
        metadata={
            "help": "How a JSON schema is sent: 'json_schema' (OpenAI/vLLM response_format), 'tgi' "
            "(TGI grammar {'type': 'json_object', 'value': schema}), 'guided_json' (vLLM body field), 'none'."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per generate() call (local backends)."})
    device: str = field(default="cpu", metadata={"help": "torch device (local backends)."})
    dtype: str = field(default="float32", metadata={"help": "torch dtype name (local backends)."})
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file inside `model` (transformers backend; de-quantized on load)."}
    )
    constrained: bool = field(
        default=True, metadata={"help": "JSON-schema constrained decoding with outlines (local backends)."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Response cache folder. None: <negsynth cache>/responses; '' disables caching."},
    )
    keep_rejected: bool = field(
        default=False,
        metadata={
            "help": "Keep replies a stage rejected in the response cache, so a rerun replays the same failures "
            "without asking the LLM (reproducible replays of a committed cache). False: forget them, so a rerun "
            "asks again and a failed row may succeed."
        },
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads of local generation (torch; llamacpp: None = all cores). 1 on a shared CPU."},
    )
    n_parallel: int = field(
        default=2, metadata={"help": "llamacpp: parallel slots (requests decoded together; also the concurrency)."}
    )
    ctx_per_slot: int = field(
        default=4096,
        metadata={"help": "llamacpp: context tokens per slot; every request is fitted to it before it is sent."},
    )
    port: int | None = field(
        default=None, metadata={"help": "llamacpp: loopback port of the server; None picks a free one."}
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {self.backend!r}")
        if self.response_format not in ("json_schema", "tgi", "guided_json", "none"):
            raise ValueError(f"unknown response_format {self.response_format!r}")
        if self.backend in ("transformers", "openai") and not self.model:
            raise ValueError(f"backend={self.backend!r} needs `model`")
        if self.max_concurrency < 1 or self.batch_size < 1 or self.max_retries < 0 or (self.timeout or 1) <= 0:
            raise ValueError("max_concurrency and batch_size must be >= 1, max_retries >= 0, timeout > 0")
        if self.n_parallel < 1 or self.ctx_per_slot < 256:
            raise ValueError(
                f"n_parallel must be >= 1 and ctx_per_slot >= 256, got {self.n_parallel}, {self.ctx_per_slot}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos do not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys: {sorted(unknown)}")
        return cls(**data)

    def build_uncached(self) -> ChatGenerator:
        """The backend generator itself, without the response cache."""
        if self.backend == "llamacpp":
            return self._build_llamacpp()
        if self.backend == "openai":
            from .openai_chat import OpenAIChatGenerator

            return OpenAIChatGenerator(
                self.base_url or OPENAI_BASE_URL,
                model=self.model,  # type: ignore[arg-type]
                api_key_env=self.api_key_env,
                max_concurrency=self.max_concurrency,
                timeout=self.timeout or 60.0,
                max_retries=self.max_retries,
                response_format=self.response_format,
            )
        local = {
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "constrained": self.constrained,
            "num_threads": self.num_threads,
        }
        if self.backend == "transformers":
            from .transformers_local import TransformersGenerator

            return TransformersGenerator(self.model, gguf_file=self.gguf_file, **local)  # type: ignore[arg-type]
        from .embedded import default_generator

        if self.num_threads is None:
            local.pop("num_threads")  # keep default_generator's own default (1 thread)
        return default_generator(**local)

    def recommended_synthesis(self) -> tuple[str, str] | None:
        """(strategy, query_editor) that ``strategy="auto"`` picks for this generator, without building it."""
        from .gguf_models import DEFAULT_GGUF_MODEL, recommended_synthesis

        if self.backend == "llamacpp":
            return recommended_synthesis(self.model or DEFAULT_GGUF_MODEL)
        if self.backend == "embedded":  # the same SmolLM2, through transformers
            return recommended_synthesis("smollm2-135m-instruct")
        return None

    def _build_llamacpp(self) -> ChatGenerator:
        from .gguf_models import DEFAULT_GGUF_MODEL
        from .llamacpp import LlamaCppGenerator, LlamaCppServerSpec

        spec = LlamaCppServerSpec(
            model=self.model or DEFAULT_GGUF_MODEL,
            n_parallel=self.n_parallel,
            ctx_per_slot=self.ctx_per_slot,
            n_threads=self.num_threads or os.cpu_count() or 2,
            port=self.port,
        )
        return LlamaCppGenerator(spec, max_retries=self.max_retries, timeout=self.timeout or 600.0)

    def build(self) -> ChatGenerator:
        """The generator, wrapped in a :class:`CachingGenerator` unless ``cache_dir == ""``."""
        generator = self.build_uncached()
        if self.cache_dir == "":
            return generator
        from .. import paths
        from .caching import CachingGenerator, ResponseCache

        directory = self.cache_dir if self.cache_dir is not None else paths.cache_dir("responses")
        return CachingGenerator(generator, ResponseCache(directory), keep_rejected=self.keep_rejected)
