#!/usr/bin/env python
"""Stage dataset, merged model and LoRA adapter with cards; upload with huggingface_hub unless --dry_run.

Usage:
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/publish.py \\
        --config recipes/scifact/config.yaml [--key value ...]

Same as `negsynth publish --config ...` (one implementation: negsynth_hf.cli). `--help` lists every key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    import negsynth_hf  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# this checkout's judged collections (../shared/data beside it) unless $NEGSYNTH_DATA_DIR or --data_dir names
# another folder; the library itself has no default
os.environ.setdefault("NEGSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

from negsynth_hf.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("publish", prog="recipes/publish.py"))
