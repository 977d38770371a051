"""``negsynth``: build, train, evaluate, diagnose and publish from one YAML config; ``demo`` runs them all.

Arguments only: ``argv`` -> :func:`negsynth_hf.recipe_config.parse_step_args` -> the step's function in
:mod:`negsynth_hf.pipeline`. The recipes in ``recipes/`` call :func:`recipe_main` here, so
``accelerate launch recipes/train.py --config X`` and ``negsynth train --config X`` do the same thing.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from negsynth_hf.pipeline import (
    RUNNERS,
    load_collection,
    run_build,
    run_diagnose,
    run_evaluate,
    run_publish,
    run_train,
)
from negsynth_hf.recipe_config import ConfigError, format_help, parse_step_args

logger = logging.getLogger("negsynth_hf")

COMMANDS: dict[str, str] = {
    "build": "pairs from a judged collection -> mined + LLM-generated hard negatives with gap weights, saved as a dataset folder",
    "train": "LoRA fine-tuning with CausalNegLoss (or a baseline loss) -> <model_dir>/adapter and /merged",
    "evaluate": "base vs trained on the test split: nDCG@10, MRR@10, Recall@100 -> results.json + results.md",
    "diagnose": "generative-discriminative gap report of a built dataset (spectrum, source probes, false negatives)",
    "publish": "stage dataset + merged model + adapter with cards, then upload to the Hub (unless --dry_run)",
    "demo": "the whole pipeline, offline on CPU: SciFact, all-MiniLM-L6-v2, Qwen2.5-Coder-1.5B on llama.cpp",
}

TOP_HELP = """usage: negsynth <command> [--config recipes/<task>/config.yaml] [--key value ...]

Train retrievers with LLM-synthesized counterfactual hard negatives.

commands:
{commands}

Every command reads one YAML task file (sections run, data, build, train, evaluate, diagnose, publish) and
takes --key value overrides; `negsynth <command> --help` lists every key with its default.

Start here:
  negsynth demo                                                      # offline end-to-end run on the CPU
  negsynth build    --config recipes/scifact/config.yaml
  negsynth train    --config recipes/scifact/config.yaml --loss mined  # a baseline
  negsynth evaluate --config recipes/scifact/config.yaml
  negsynth publish  --config recipes/scifact/config.yaml --dataset_repo_id you/scifact-negsynth \\
                    --model_repo_id you/minilm-scifact-causalneg --dry_run   # inspect outputs/.../publish first

Multi-process (same steps): accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml \\
  recipes/train.py --config recipes/scifact/config.yaml
"""


def run_step(step: str, argv: list[str] | None = None, *, prog: str | None = None) -> Any:
    """Parse ``argv`` for ``step`` and run it (the recipes and the CLI both come here)."""
    if step == "demo":
        from negsynth_hf.demo import demo_config
        from negsynth_hf.pipeline import run_demo

        return run_demo(demo_config(argv))
    return RUNNERS[step](parse_step_args(step, argv, prog=prog))


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("negsynth_hf").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def recipe_main(step: str, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point of ``recipes/<step>.py`` and of each ``negsynth <step>``: config errors exit 2 with a message."""
    _setup_logging()
    try:
        run_step(step, argv, prog=prog)
    except ConfigError as err:
        print(f"{prog or 'negsynth ' + step}: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``negsynth <command> [--config FILE] [--key value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(TOP_HELP.format(commands="\n".join(f"  {k:<9} {v}" for k, v in COMMANDS.items())))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"negsynth: unknown command {command!r}; commands: {', '.join(COMMANDS)} (see negsynth --help)",
            file=sys.stderr,
        )
        return 2
    return recipe_main(command, rest, prog=f"negsynth {command}")


__all__ = [
    "COMMANDS",
    "RUNNERS",
    "format_help",
    "load_collection",
    "main",
    "recipe_main",
    "run_build",
    "run_diagnose",
    "run_evaluate",
    "run_publish",
    "run_step",
    "run_train",
]

if __name__ == "__main__":
    sys.exit(main())
