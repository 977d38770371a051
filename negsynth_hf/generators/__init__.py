"""LLM generator backends behind one protocol, plus an on-disk response cache.

- :class:`GeneratorConfig`: plain, picklable settings; ``build()`` makes a (cached) generator.
- :class:`OpenAIChatGenerator`: any OpenAI-compatible server (vLLM, TGI, hosted APIs, ``transformers serve``).
- :class:`TransformersGenerator`: in-process transformers model, optional outlines JSON constraints.
- :func:`default_generator`: the embedded SmolLM2-135M-Instruct (offline).
- :class:`CachingGenerator` / :class:`ResponseCache`: resume interrupted runs without re-asking the LLM.

Backends are imported lazily, so using one never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ChatGenerator, ChatRequest, ChatResponse

_LAZY: dict[str, str] = {
    "GeneratorConfig": ".config",
    "OpenAIChatGenerator": ".openai_chat",
    "TransformersGenerator": ".transformers_local",
    "CachingGenerator": ".caching",
    "ResponseCache": ".caching",
    "request_key": ".caching",
    "default_generator": ".embedded",
    "embedded_generator_folder": ".embedded",
}

__all__ = ["ChatGenerator", "ChatRequest", "ChatResponse", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
