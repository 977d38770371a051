#!/usr/bin/env python
"""Build the hard-negative training set (mine + synthesize + verify + weight) and save it (``BuiltDataset.save``).

With N processes each rank mines and synthesizes its shard of the pairs against its own endpoint
(build.base_urls[rank]) and saves it beside the dataset folder; rank 0 then reads the shards (no LLM request is sent
twice) and runs verification, the cross-row weighting and assembly on the merged rows.

Usage:
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/build_dataset.py \\
        --config recipes/scifact/config.yaml [--key value ...]

Same as `negsynth build --config ...` (one implementation: negsynth_hf.cli). `--help` lists every key.
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
    sys.exit(recipe_main("build", prog="recipes/build_dataset.py"))
