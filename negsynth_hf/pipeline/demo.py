"""``negsynth demo``'s run: build -> train -> evaluate -> publish (dry run), with a timing table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from negsynth_hf.pipeline.build import run_build
from negsynth_hf.pipeline.config import RecipeConfig
from negsynth_hf.pipeline.publish import run_publish
from negsynth_hf.pipeline.steps import run_evaluate, run_train


@dataclass
class DemoResult:
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: Any = None
    staging_dir: str = ""


def run_demo(cfg: RecipeConfig) -> DemoResult:
    """build -> train -> evaluate -> publish (dry run unless configured otherwise), with a timing table."""
    result = DemoResult()
    total = time.perf_counter()
    steps = (
        ("build", run_build, "mine + synthesize + verify + weight hard negatives"),
        ("train", run_train, f"LoRA fine-tuning with loss={cfg.train.loss}"),
        ("evaluate", run_evaluate, "base vs trained on the test split"),
        (
            "publish",
            run_publish,
            "stage dataset, merged model and adapter with cards" + (" (dry run)" if cfg.publish.dry_run else ""),
        ),
    )
    print(f"negsynth demo: run folder {cfg.path()}", flush=True)
    for i, (name, fn, what) in enumerate(steps, 1):
        print(f"\n=== [{i}/{len(steps)}] {name}: {what} ===", flush=True)
        start = time.perf_counter()
        out = fn(cfg)
        result.timings[name] = round(time.perf_counter() - start, 1)
        print(f"=== {name} done in {result.timings[name]:.0f}s ===", flush=True)
        if name == "evaluate":
            result.evaluation = out
        if name == "publish" and out is not None:
            result.staging_dir = out.root
    result.timings["total"] = round(time.perf_counter() - total, 1)
    print("\n" + "=" * 72)
    print("negsynth demo finished\n")
    if result.evaluation is not None:
        print(result.evaluation.to_markdown())
    print("| step | seconds |\n| --- | ---: |")
    for name, seconds in result.timings.items():
        print(f"| {name} | {seconds:.0f} |")
    print(
        f"\nOutputs: dataset {cfg.dataset_dir}, model {cfg.model_dir}, results {cfg.eval_dir}, staging {cfg.staging_dir}"
    )
    return result
