"""Guard policies on a real build: kept / masked counts by reason, margin-only vs the judge policies (one run).

The build is the library's own (``build_dataset``) with the defaults a user gets: Qwen2.5-Coder-1.5B-Instruct on
llama.cpp, ``strategy="auto"`` (query_edit with the LLM editor, rule edits as fallback), M=3 mined and G=2
generated negatives per row, on N training rows (TRAIN split, never test) of SciFact and Cranfield, each with its
profile. The same build runs once per guard policy: the LLM's texts come from the response cache after the first
policy, so the policies decide on exactly the same negatives.

Written, keyed by query and document ids (never copies of the corpora):

- ``benchmarks/data/guard_policies/<collection>-<policy>.jsonl``: every generated slot's provenance row (the
  generated text, the edit, the guard decision, its reason and the judge's scores);
- ``benchmarks/data/guard_policies/responses``: every LLM response (synthesis and judge), so a rerun is free;
- ``benchmarks/results/guard_policies.{json,md}``: counts by reason per policy and the judge's cost.

The judge threshold defaults to the one chosen on the train-split calibration
(``benchmarks/results/judge_calibration.json``, ``benchmarks/calibrate_judge.py``).

    python benchmarks/guard_policies.py --rows 32 --threads 1                       # ~1 h of CPU the first time
    python benchmarks/guard_policies.py --rows 4 --policies margin off --out /tmp/gp --data-dir /tmp/gp-data  # a quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks import reporting  # noqa: E402 - needs the checkout on sys.path
from negsynth_hf.build import build_dataset  # noqa: E402
from negsynth_hf.data import load_beir, pairs_dataset  # noqa: E402
from negsynth_hf.generators import GeneratorConfig  # noqa: E402
from negsynth_hf.verification import GuardPolicy, MinedJudge, RelevanceJudge  # noqa: E402

DATA = ROOT / "data" / "guard_policies"
RESULTS = ROOT / "results"
CALIBRATION = RESULTS / "judge_calibration.json"
MODEL = "qwen2.5-coder-1.5b-instruct"
PROFILES = {"scifact": "scientific", "cranfield": "aeronautics", "cisi": "information_science"}
POLICIES = ("margin", "off", "checks", "combined", "judge")


def calibrated_threshold(path: Path = CALIBRATION) -> float | None:
    """The threshold the train-split calibration chose, if it has been run."""
    report = reporting.read_json(path, default=None)
    return None if not report else float(report["threshold"]["chosen"]["threshold"])


def _policy(mode: str, cfg: GeneratorConfig, profile: str, args: argparse.Namespace) -> Any:
    if mode in ("margin", "off", "checks"):
        return mode
    judge = RelevanceJudge(cfg, profile, max_chars=args.max_chars)
    return GuardPolicy(mode=mode, judge=judge, threshold=args.threshold, contrastive=args.contrastive)


def run_policy(collection: str, mode: str, col: Any, pairs: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One build under one policy: its summary counts, and its generated slots written to ``--data-dir``."""
    data = Path(args.data_dir)
    cfg = GeneratorConfig(model=args.model, cache_dir=str(data / "responses"), num_threads=args.threads)
    profile = PROFILES[collection]
    result = build_dataset(
        pairs, corpus=[col.doc_text(d) for d in col.corpus], generator=cfg, profile=profile, num_mined=3,
        num_generated=2, guard_policy=_policy(mode, cfg, profile, args), seed=args.seed, show_progress_bar=True,
    )  # fmt: skip
    slots = reporting.write_generated_slots(data / f"{collection}-{mode}.jsonl", result.provenance)
    summary = result.summary.to_dict()
    written = [s for s in slots if s["guard_decision"] is not None]
    return {
        "examples": examples(written, args.examples),
        "rows": len(pairs),
        "generated_slots": len(slots),
        "texts": len(written),
        "kept": sum(s["guard_decision"] == "kept" for s in written),
        "masked": sum(s["guard_decision"] == "masked" for s in written),
        "by_reason": _by_reason(written),
        "guard": summary.get("guard", {}),
        "counts": summary["counts"],
        "timings": summary["timings"],
        "generator_stats": summary["generator_stats"],
    }


def run_mined_judge(collection: str, col: Any, pairs: Any, args: argparse.Namespace) -> dict[str, Any]:
    """RLHN on the same rows: M=3 mined negatives each, judged; the ones judged relevant, by document id."""
    cfg = GeneratorConfig(model=args.model, cache_dir=str(Path(args.data_dir) / "responses"), num_threads=args.threads)
    judge = MinedJudge(RelevanceJudge(cfg, PROFILES[collection], max_chars=args.max_chars), threshold=args.threshold)
    texts = {col.doc_text(d): d for d in col.corpus}
    result = build_dataset(
        pairs, corpus=list(texts), generator=None, num_mined=3, mined_judge=judge, seed=args.seed,
        show_progress_bar=True,
    )  # fmt: skip
    masked = [r for r in result.provenance.to_list() if r["source"] == "mined" and r["status"] == "masked"]
    counts = result.summary.counts
    return {
        "rows": len(pairs),
        **{k: counts[k] for k in ("mined_judged", "mined_masked_judge", "mined_judge_failed")},
        "masked": [
            {"query_id": r["query_id"], "doc_id": texts.get(r["original_text"]), "p": r["judge_p_relevant"]}
            for r in masked
        ],  # fmt: skip
        "cost": result.config["guard"]["mined_judge_cost"],
    }


def examples(slots: list[dict[str, Any]], n: int) -> dict[str, list[dict[str, Any]]]:
    """Up to ``n`` kept and ``n`` masked texts verbatim (in row order), with the scores that decided them."""
    keys = ("query_id", "edited_query", "text", "original_text", "guard_reason", "sim_query", "sim_positive",
            "sim_query_positive", "judge_p_relevant", "judge_p_original", "edit_check", "edit_kind")  # fmt: skip
    out: dict[str, list[dict[str, Any]]] = {"kept": [], "masked": []}
    for s in slots:
        bucket = out[s["guard_decision"]]
        if len(bucket) < n:
            bucket.append({k: s.get(k) for k in keys})
    return out


def _example_lines(key: str, ex: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    for decision in ("kept", "masked"):
        lines += ["", f"### {key}: {decision} ({len(ex.get(decision, []))} shown)", ""]
        for e in ex.get(decision, []):
            text = (e["text"] if decision == "kept" else e["original_text"] or e["text"]) or ""
            p = "/".join(reporting.fmt(e[k]) for k in ("judge_p_relevant", "judge_p_original"))
            lines.append(
                f"- q{e['query_id']} `{e['guard_reason']}` sim(q,neg) {reporting.fmt(e['sim_query'])}, "
                f"sim(q,pos) {reporting.fmt(e['sim_query_positive'])}, judge p(rel)/p(orig) {p}, edit "
                f"{e['edit_kind']}/{e['edit_check']}; edited query: {e['edited_query']!r}; text: {text[:400]!r}"
            )
    return lines


def _by_reason(slots: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in slots:
        key = f"{s['guard_decision']}: {s['guard_reason']}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Guard policies on a {report['model']} build (train rows, M=3 mined + G=2 generated, strategy auto)",
        "",
        f"Judge threshold {report['threshold']} (train-split calibration), contrastive={report['contrastive']}.",
        "",
        "| collection | policy | rows | texts | kept | masked | kept / masked by reason |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, r in report["runs"].items():
        collection, mode = key.split("/")
        reasons = "; ".join(f"{k} {v}" for k, v in r["by_reason"].items())
        lines.append(
            f"| {collection} | {mode} | {r['rows']} | {r['texts']} | {r['kept']} | {r['masked']} | {reasons} |"
        )
    if report.get("mined_judge"):
        lines += ["", "Mined negatives judged (RLHN, `--mined-judge`; M=3 per row, same threshold):", "",
                  "| collection | rows | mined judged | judged relevant (masked) | failed | s / judgment |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for collection, m in report["mined_judge"].items():
            per = (m.get("cost") or {}).get("per_judgment", {})
            lines.append(f"| {collection} | {m['rows']} | {m['mined_judged']} | {m['mined_masked_judge']} | "
                         f"{m['mined_judge_failed']} | {reporting.fmt(per.get('seconds'), 2)} |")  # fmt: skip
    for key, r in report["runs"].items():
        if key.split("/")[1] != "off" and r.get("examples"):
            lines += _example_lines(key, r["examples"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="training rows per collection")
    parser.add_argument("--collections", nargs="+", default=["scifact", "cranfield"], choices=list(PROFILES))
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--mined-judge", action="store_true", help="also judge the rows' mined negatives (RLHN)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--threshold", type=float, default=None, help="default: the calibrated one (else 0.5)")
    parser.add_argument("--contrastive", action="store_true", help="query edits judged original vs edited")
    parser.add_argument("--max-chars", type=int, default=1500, help="per-text cap in judge prompts")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (1 when the CPU is shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=10, help="kept and masked texts shown verbatim per run")
    parser.add_argument("--out", default=str(RESULTS / "guard_policies"))
    parser.add_argument("--data-dir", default=str(DATA), help="generated slots and the LLM response cache")
    args = parser.parse_args(argv)
    if args.threshold is None:
        args.threshold = calibrated_threshold() or 0.5
    out = Path(args.out)
    report = reporting.read_json(out.with_suffix(".json"), default={}) or {}
    report.update(model=args.model, threshold=args.threshold, contrastive=args.contrastive)
    report.setdefault("runs", {})
    for collection in args.collections:
        col = load_beir(reporting.data_dir() / collection, splits=["train"])
        pairs = pairs_dataset(col, "train", max_queries=args.rows)
        if args.mined_judge:
            print(f"== {collection} / mined judge", flush=True)
            report.setdefault("mined_judge", {})[collection] = run_mined_judge(collection, col, pairs, args)
            reporting.write_json(out.with_suffix(".json"), report)
        for mode in args.policies:
            print(f"== {collection} / {mode}", flush=True)
            report["runs"][f"{collection}/{mode}"] = run_policy(collection, mode, col, pairs, args)
            reporting.write_json(out.with_suffix(".json"), report)
            out.with_suffix(".md").write_text(to_markdown(report), encoding="utf-8")
    print(to_markdown(report))


if __name__ == "__main__":
    main()
