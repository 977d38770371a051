"""negsynth_hf: train better retrievers with LLM-synthesized counterfactual hard negatives.

Public names are imported lazily, so ``import negsynth_hf`` stays cheap and a backend you do not use
(a server client, plotting) is never imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # loss
    "CausalNegLoss": "negsynth_hf.losses",
    "CachedCausalNegLoss": "negsynth_hf.losses",
    "query_view_entropy": "negsynth_hf.losses",
    # label column shared by the transform and the loss
    "LABEL_COLUMN": "negsynth_hf.labels",
    "encode_negative_labels": "negsynth_hf.labels",
    "decode_negative_labels": "negsynth_hf.labels",
    # generators
    "ChatGenerator": "negsynth_hf.generators",
    "ChatRequest": "negsynth_hf.generators",
    "ChatResponse": "negsynth_hf.generators",
    "GeneratorConfig": "negsynth_hf.generators",
    "OpenAIChatGenerator": "negsynth_hf.generators",
    "TransformersGenerator": "negsynth_hf.generators",
    "CachingGenerator": "negsynth_hf.generators",
    "default_generator": "negsynth_hf.generators",
    # synthesis
    "Synthesizer": "negsynth_hf.synthesis",
    "DatasetProfile": "negsynth_hf.synthesis",
    # dataset transform and build
    "CounterfactualNegatives": "negsynth_hf.transform",
    "build_dataset": "negsynth_hf.build",
    "BuiltDataset": "negsynth_hf.artifacts",
    # a build split over processes (one shard each, then one assembly)
    "build_shard": "negsynth_hf.build",
    "ShardedBuild": "negsynth_hf.build",
    # the false-negative guard
    "GuardPolicy": "negsynth_hf.verification",
    "RelevanceJudge": "negsynth_hf.verification",
    "CrossEncoderJudge": "negsynth_hf.verification",
    # diagnostics
    "diagnose": "negsynth_hf.diagnostics",
    "GapDiagnosticsCallback": "negsynth_hf.diagnostics",
    "LossComponentsCallback": "negsynth_hf.diagnostics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'negsynth_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
