"""The pipeline layer: one function per step (build, train, evaluate, diagnose, publish, demo).

Each takes a :class:`~negsynth_hf.pipeline.config.RecipeConfig` and calls the library; ``negsynth`` (the CLI,
:mod:`negsynth_hf.cli`), the ``recipes/`` scripts and the demo all come here. Nothing in this package reads
``argv`` or YAML (that is :mod:`negsynth_hf.recipe_config`), and no library module imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from negsynth_hf.pipeline.build import BuildOutput, run_build
from negsynth_hf.pipeline.config import ConfigError, RecipeConfig
from negsynth_hf.pipeline.demo import DemoResult, run_demo
from negsynth_hf.pipeline.publish import run_publish
from negsynth_hf.pipeline.sources import load_collection
from negsynth_hf.pipeline.steps import run_diagnose, run_evaluate, run_train

#: step name -> its function (``demo`` runs build, train, evaluate and publish in turn)
RUNNERS: dict[str, Callable[[RecipeConfig], Any]] = {
    "build": run_build,
    "train": run_train,
    "evaluate": run_evaluate,
    "diagnose": run_diagnose,
    "publish": run_publish,
}

__all__ = [
    "RUNNERS",
    "BuildOutput",
    "ConfigError",
    "DemoResult",
    "RecipeConfig",
    "load_collection",
    "run_build",
    "run_demo",
    "run_diagnose",
    "run_evaluate",
    "run_publish",
    "run_train",
]
