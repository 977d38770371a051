"""``negsynth demo``'s run: build -> train -> evaluate -> publish (dry run), then what it made and where.

After the steps the demo prints the evaluation table, three kept and three masked generated negatives (query,
edited query, text, the guard's decision and reason), the seconds of each step and the folders it wrote.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

from negsynth_hf.pipeline.build import run_build
from negsynth_hf.pipeline.config import RecipeConfig
from negsynth_hf.pipeline.publish import run_publish
from negsynth_hf.pipeline.steps import run_evaluate, run_train

#: generated negatives of each decision the demo shows
EXAMPLES_PER_DECISION = 3
#: characters of a generated text shown (the full text is in the dataset's provenance config)
TEXT_CHARS = 320


@dataclass
class DemoResult:
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: Any = None
    staging_dir: str = ""
    report: str = ""


def run_demo(cfg: RecipeConfig) -> DemoResult:
    """build -> train -> evaluate -> publish (dry run unless configured otherwise), then :func:`demo_report`."""
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
    result.report = demo_report(cfg, result)
    print("\n" + "=" * 72 + "\nnegsynth demo finished\n\n" + result.report, flush=True)
    return result


def demo_report(cfg: RecipeConfig, result: DemoResult) -> str:
    """The evaluation table, example negatives, seconds per step and the output folders, as printed text."""
    from negsynth_hf.artifacts import BuiltDataset

    parts = []
    if result.evaluation is not None:
        parts.append(result.evaluation.to_markdown())
    if (cfg.dataset_dir / "dataset_dict.json").is_file():
        parts.append(example_negatives(BuiltDataset.load(cfg.dataset_dir), dataset_dir=str(cfg.dataset_dir)))
    parts.append(timing_table(result.timings))
    parts.append(output_folders(cfg, staging_dir=result.staging_dir))
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def example_negatives(built: Any, *, per_decision: int = EXAMPLES_PER_DECISION, dataset_dir: str = "") -> str:
    """Up to ``per_decision`` kept and masked generated negatives, each with its query, edit, text and reason."""
    prov = built.provenance
    if prov is None:
        return "Generated negatives: this dataset has no provenance config."
    generated = [r for r in prov if r["source"] == "generated" and r["status"] in ("ok", "masked")]
    kept = [r for r in generated if r["status"] == "ok"]
    masked = [r for r in generated if r["status"] == "masked"]
    where = f" (every slot: the `provenance` config of {dataset_dir})" if dataset_dir else ""
    lines = [f"Generated negatives: {len(kept)} kept, {len(masked)} masked{where}"]
    if not generated:
        lines.append("  none: the build wrote no generated negative (mined-only, or every row failed).")
    anchors = built.train["anchor"]
    for label, rows in (("KEPT", kept), ("MASKED", masked)):
        for r in _varied(rows, per_decision):
            lines += ["", *_example(label, r, anchors[r["row"]])]
    return "\n".join(lines)


def _varied(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` records in dataset order, preferring a reason not shown yet, then a row not shown yet."""
    chosen: list[dict[str, Any]] = []
    for new_reason in (True, False):
        for r in records:
            if len(chosen) == n:
                return sorted(chosen, key=lambda c: (c["row"], c["column"]))
            reasons, rows = {c["guard_reason"] for c in chosen}, {c["row"] for c in chosen}
            if r not in chosen and r["row"] not in rows and (not new_reason or r["guard_reason"] not in reasons):
                chosen.append(r)
    chosen += [r for r in records if r not in chosen][: n - len(chosen)]
    return sorted(chosen, key=lambda c: (c["row"], c["column"]))


def _example(label: str, r: dict[str, Any], query: str) -> list[str]:
    qid = f", query {r['query_id']}" if r.get("query_id") else ""
    text = r["text"] if r["status"] == "ok" else (r.get("original_text") or "")
    if r.get("edited_query"):
        span = r.get("changed_span") or []
        changed = f'  ("{span[0]}" -> "{span[1]}")' if len(span) == 2 else ""
        edit = f"{r['edited_query']}{changed}"
    elif r.get("violated_requirement"):
        edit = f"breaks requirement {r['violated_requirement']}" + (
            f": {r['explanation']}" if r.get("explanation") else ""
        )
    else:
        edit = "-"
    decision = "kept" if r["status"] == "ok" else "masked"
    if r.get("guard_policy"):
        decision += f" by the {r['guard_policy']} guard ({r.get('guard_reason') or 'no reason recorded'})"
    reason = f"weight {r['weight']:.2f}: {r['weight_reason']}"
    return [
        f"{label}  row {r['row']}, {r['column']}{qid}",
        *_field("query", query),
        *_field("edit", edit),
        *_field("text", _clip(text)),
        *_field("decision", decision),
        *_field("reason", reason),
    ]


def _field(name: str, value: str) -> list[str]:
    return textwrap.wrap(
        " ".join(str(value).split()), width=110, initial_indent=f"  {name + ':':<10}", subsequent_indent=" " * 12
    ) or [f"  {name}:"]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 3].rstrip() + "..."


def timing_table(timings: dict[str, float]) -> str:
    rows = [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    return "\n".join(["| step | seconds |", "| --- | ---: |", *rows])


def output_folders(cfg: RecipeConfig, *, staging_dir: str = "") -> str:
    """Where each step wrote its files, and what is in them."""
    staging = staging_dir or str(cfg.staging_dir)
    rows = [
        ("dataset", cfg.dataset_dir, "train + provenance configs (load_from_disk), summary.md, build_config.json"),
        ("model", cfg.model_dir, "adapter/ (LoRA) and merged/ (a SentenceTransformer folder)"),
        ("results", cfg.eval_dir, "results.json, results.md"),
        (
            "publish",
            staging,
            "dataset/, model/, adapter/ with cards: what `negsynth publish` uploads"
            + (" (dry run: nothing was uploaded)" if cfg.publish.dry_run else ""),
        ),
    ]
    width = max(len(str(path)) for _, path, _ in rows)
    return "\n".join(["Files:"] + [f"  {name:<8} {str(path):<{width}}  {what}" for name, path, what in rows])
