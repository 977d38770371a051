"""Guard policies against labelled negatives: how many of the kept texts are true counterfactuals, how many true
counterfactuals are kept.

The generated texts are the committed ones (never regenerated):

- ``benchmarks/data/quality/<c>/counterfactual_guard_off.jsonl``: every generated text of the quality builds, with
  the ``margin`` (``counterfactual.jsonl``) and ``checks`` (``counterfactual_checks.jsonl``) decisions on the same
  texts, matched by query and edited query;
- ``benchmarks/data/guard_policies/<c>-<policy>.jsonl``: the guard-policy builds (SciFact, Cranfield), whose
  ``judge`` and ``combined`` decisions are recorded per text.

Labels (``benchmarks/data/labels/<c>.jsonl``, README there) say per text ``true`` (on topic, does not satisfy the
original query), ``false`` (satisfies or supports it) or ``junk``. Texts are split into development and evaluation
halves by query id (:func:`split_of`); the new ``contrast`` policy's thresholds were chosen on development only.

    python benchmarks/guard_eval.py                 # benchmarks/results/guard_eval.{json,md}
    python benchmarks/guard_eval.py select          # the labelled selection, blind files in /tmp/blind_<c>.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks import reporting  # noqa: E402 - needs the checkout on sys.path
from negsynth_hf import paths  # noqa: E402

QUALITY = ROOT / "data" / "quality"
GUARD_POLICIES = ROOT / "data" / "guard_policies"
LABELS = ROOT / "data" / "labels"
COLLECTIONS = ("scifact", "cranfield", "cisi")
#: texts drawn from the quality builds per collection (``None``: all); the guard-policy builds are taken whole
QUALITY_SAMPLE = {"scifact": 100, "cranfield": 85, "cisi": None}
SEED = 24
QUALITY_POLICIES = {"margin": "counterfactual.jsonl", "checks": "counterfactual_checks.jsonl"}
JUDGE_POLICIES = ("margin", "checks", "judge", "combined")
LABEL_VALUES = ("true", "false", "junk")


def text_sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_of(query_id: str) -> str:
    """``dev`` or ``eval``: the parity of the SHA-1 of the query id (every text of a query in one half)."""
    return "dev" if int(hashlib.sha1(str(query_id).encode("utf-8")).hexdigest(), 16) % 2 == 0 else "eval"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _decisions(path: Path) -> dict[tuple[str, str], str]:
    """``(query_id, edited_query) -> kept | masked`` of one policy's build (masked rows carry another text)."""
    return {
        (r["query_id"], r["edited_query"]): r["guard_decision"]
        for r in _jsonl(path)
        if r.get("guard_decision") and r.get("edited_query")
    }


def _generated(rows: Iterable[dict[str, Any]], source: str, policies: dict[str, dict]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["status"] != "ok":  # filled slots are corpus documents, not generated
            continue
        key = (r["query_id"], r["edited_query"])
        decisions = {"off": "kept", **{p: d[key] for p, d in policies.items() if key in d}}
        out.append({**r, "source": source, "text_sha1": text_sha1(r["text"]), "decisions": decisions})
    return out


def generated_texts(collection: str) -> list[dict[str, Any]]:
    """Every generated text of ``collection`` with each recorded policy's decision on it (deduplicated by text)."""
    folder = QUALITY / collection
    quality = {p: _decisions(folder / f) for p, f in QUALITY_POLICIES.items()}
    items = _generated(_jsonl(folder / "counterfactual_guard_off.jsonl"), "quality", quality)
    off = GUARD_POLICIES / f"{collection}-off.jsonl"
    if off.exists():
        judged = {p: _decisions(GUARD_POLICIES / f"{collection}-{p}.jsonl") for p in JUDGE_POLICIES}
        items += _generated(_jsonl(off), "guard_policies", judged)
    seen: set[str] = set()
    unique = []
    for item in items:
        if item["text_sha1"] not in seen:
            seen.add(item["text_sha1"])
            unique.append(item)
    return unique


def select(items: Sequence[dict[str, Any]], n: int | None, *, seed: int = SEED) -> list[dict[str, Any]]:
    """A seeded draw stratified by edit kind and by what ``margin`` and ``checks`` decide (round robin over strata)."""
    if n is None or n >= len(items):
        return list(items)
    strata: dict[tuple, list] = defaultdict(list)
    for item in items:
        d = item["decisions"]
        strata[(item.get("edit_kind"), d.get("margin"), d.get("checks"))].append(item)
    rng = random.Random(seed)
    pools = [strata[k] for k in sorted(strata, key=str)]
    for pool in pools:
        rng.shuffle(pool)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def labelled_selection(collection: str) -> list[dict[str, Any]]:
    items = generated_texts(collection)
    quality = [i for i in items if i["source"] == "quality"]
    return select(quality, QUALITY_SAMPLE[collection]) + [i for i in items if i["source"] != "quality"]


def write_blind(collection: str, out: Path) -> int:
    """What the labeller sees: the original query, its positive, the edit and the text; no score, flag or decision."""
    from negsynth_hf.data import load_beir

    beir = load_beir(paths.shared_data_dir() / collection)
    rows = []
    for item in labelled_selection(collection):
        span = item.get("changed_span") or [None, None]
        rows.append({
            "id": item["text_sha1"][:12], "query_id": item["query_id"], "query": beir.queries[item["query_id"]],
            "positive": " ".join(beir.corpus[item["positive_id"]].values()), "edited_query": item["edited_query"],
            "changed_span": f"{span[0]!r} -> {span[1]!r}", "text": item["text"],
        })  # fmt: skip
    rng = random.Random(SEED)
    rng.shuffle(rows)  # the labeller sees no order by source or stratum
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


# --------------------------------------------------------------------------- evaluation
PROFILES = {"scifact": "scientific", "cranfield": "aeronautics", "cisi": "information_science"}
RECORDED_POLICIES = ("off", "margin", "checks", "judge", "combined")
NEW_POLICY = "contrast"
#: a diagnosis, not a candidate: ``contrast`` with both thresholds off (its code checks alone)
ABLATION = "contrast_checks_only"
NO_THRESHOLDS = {"min_contrast": -1.0, "min_sim_query": -1.0}
#: the thresholds tried on the development half: min_contrast x min_sim_query
CONTRAST_GRID = tuple(round(-0.05 + 0.005 * i, 3) for i in range(41))
SIM_QUERY_GRID = tuple(round(0.05 * i, 2) for i in range(13))
#: thresholds are chosen by the best pooled development F-beta (beta 0.5: precision counts more than recall;
#: the targets are precision >= 0.8 and recall >= 0.6 on the evaluation half)
BETA = 0.5
TARGETS = {"precision": 0.8, "recall": 0.6}
TUNED = ("scifact", "cranfield")  # CISI has 8 true texts in all: reported, not tuned on


def read_labels(collection: str, folder: Path = LABELS) -> dict[str, dict[str, Any]]:
    """``{text_sha1: record}``; a label other than true/false/junk is an error naming the file and line."""
    path = folder / f"{collection}.jsonl"
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("label") not in LABEL_VALUES:
            raise ValueError(f"{path}:{n}: label must be one of {LABEL_VALUES}, got {rec.get('label')!r}")
        out[rec["text_sha1"]] = rec
    return out


def precision_recall(labels: Sequence[str], kept: Sequence[bool]) -> dict[str, Any]:
    """Counts, precision (share of kept texts labelled ``true``) and recall (share of ``true`` texts kept).

    ``None`` where undefined (nothing kept, no true text).
    """
    if len(labels) != len(kept):
        raise ValueError(f"labels and kept must align, got {len(labels)} and {len(kept)}")
    n_true = sum(lab == "true" for lab in labels)
    n_kept = sum(bool(k) for k in kept)
    kept_true = sum(lab == "true" and bool(k) for lab, k in zip(labels, kept, strict=True))
    return {
        "n_labelled": len(labels), "n_true": n_true, "kept": n_kept, "kept_true": kept_true,
        "true_share": n_true / len(labels) if labels else None,
        "precision": kept_true / n_kept if n_kept else None,
        "recall": kept_true / n_true if n_true else None,
    }  # fmt: skip


def f_beta(row: dict[str, Any], beta: float = BETA) -> float:
    p, r = row["precision"] or 0.0, row["recall"] or 0.0
    return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0


class _CachedEncoder:
    """The retriever with each text embedded once (the threshold grid re-runs the policy many times)."""

    def __init__(self, model: Any) -> None:
        self.model, self.cache = model, {}

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.model.encode(todo, **kwargs), strict=True))
        return np.stack([self.cache[t] for t in texts])


def candidates(collection: str, items: Sequence[dict[str, Any]]) -> list[Any]:
    """What the guard knows about each text (as the build's guard stage would pass it)."""
    from negsynth_hf.data import load_beir
    from negsynth_hf.synthesis.quality import DEGENERATE_FLAGS
    from negsynth_hf.verification import Candidate

    beir = load_beir(paths.shared_data_dir() / collection)
    out = []
    for it in items:
        flags = tuple(it.get("flags") or ())
        out.append(Candidate(
            query=beir.queries[it["query_id"]], positive=" ".join(beir.corpus[it["positive_id"]].values()),
            text=it["text"], near_duplicate="near_duplicate_of_positive" in flags,
            contains_query="contains_query" in flags,
            margin_reason="scores above the positive" if "scores_above_positive" in flags else None,
            strategy_type=it.get("strategy_type"), violated_requirement=it.get("violated_requirement"),
            edited_query=it.get("edited_query"), degenerate=next((g for g in DEGENERATE_FLAGS if g in flags), None),
        ))  # fmt: skip
    return out


def contrast_decisions(collection: str, cands: Sequence[Any], encoder: Any, **thresholds: float) -> list[Any]:
    """The library's ``contrast`` policy on ``cands`` (one :class:`GuardDecision` per candidate)."""
    from negsynth_hf.synthesis.profiles import get_profile
    from negsynth_hf.verification import GuardPolicy, apply_policy

    policy = GuardPolicy(mode="contrast", encoder=encoder, **thresholds)
    return apply_policy(policy, cands, get_profile(PROFILES[collection])).decisions


def labelled_items(collection: str) -> list[dict[str, Any]]:
    """The labelled generated texts with their label, reason and half."""
    labels = read_labels(collection)
    items = [i for i in generated_texts(collection) if i["text_sha1"] in labels]
    missing = set(labels) - {i["text_sha1"] for i in items}
    if missing:
        raise ValueError(f"{LABELS / (collection + '.jsonl')}: {len(missing)} labelled texts are not among the "
                         f"generated texts (e.g. {sorted(missing)[0]})")  # fmt: skip
    for i in items:
        i.update(label=labels[i["text_sha1"]]["label"], reason=labels[i["text_sha1"]]["reason"])
        i["split"] = split_of(i["query_id"])
    return items


def choose_thresholds(dev: dict[str, tuple[list, list]], encoder: Any) -> dict[str, Any]:
    """The (min_contrast, min_sim_query) with the best pooled development F-beta (ties: higher recall, then the
    lower thresholds), and the whole grid. ``dev``: ``{collection: (items, candidates)}``."""
    grid = []
    for mc in CONTRAST_GRID:
        for ms in SIM_QUERY_GRID:
            labels, kept = [], []
            for c, (items, cands) in dev.items():
                labels += [i["label"] for i in items]
                decided = contrast_decisions(c, cands, encoder, min_contrast=mc, min_sim_query=ms)
                kept += [not d.masked for d in decided]
            row = {"min_contrast": mc, "min_sim_query": ms, **precision_recall(labels, kept)}
            grid.append({**row, "f_beta": f_beta(row)})
    best = max(grid, key=lambda r: (round(r["f_beta"], 9), r["recall"] or 0, -r["min_contrast"], -r["min_sim_query"]))
    return {"criterion": f"max pooled development F{BETA} over {list(dev)}", "chosen": best, "grid": grid}


def _table_rows(results: dict[str, Any], split: str) -> list[list[str]]:
    rows = []
    for c, per in results.items():
        for policy, halves in per["policies"].items():
            r = halves[split]
            rows.append([c, policy, str(r["n_labelled"]), str(r["n_true"]), str(r["kept"]), str(r["kept_true"]),
                         reporting.fmt(r["precision"]), reporting.fmt(r["recall"])])  # fmt: skip
    return rows


def evaluate(encoder: Any, *, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Every policy's precision and recall per collection and half; the contrast thresholds chosen on dev."""
    from negsynth_hf.verification.contrast import DEFAULT_MIN_CONTRAST, DEFAULT_MIN_SIM_QUERY

    data = {}
    for c in COLLECTIONS:
        items = labelled_items(c)
        data[c] = (items, candidates(c, items))
    dev = {c: ([i for i in items if i["split"] == "dev"], [x for i, x in zip(items, cands, strict=True)
               if i["split"] == "dev"]) for c, (items, cands) in data.items() if c in TUNED}  # fmt: skip
    choice = choose_thresholds(dev, encoder)
    chosen = thresholds or {k: choice["chosen"][k] for k in ("min_contrast", "min_sim_query")}
    library = {"min_contrast": DEFAULT_MIN_CONTRAST, "min_sim_query": DEFAULT_MIN_SIM_QUERY}
    results: dict[str, Any] = {}
    for c, (items, cands) in data.items():
        decided = contrast_decisions(c, cands, encoder, **chosen)
        checks_only = contrast_decisions(c, cands, encoder, **NO_THRESHOLDS)
        for item, d, d0 in zip(items, decided, checks_only, strict=True):
            item["decisions"][NEW_POLICY], item["decisions"][ABLATION] = d.decision, d0.decision
            item["contrast_reason"] = f"{d.reason}: {d.detail}".rstrip(": ")
            item["contrast_reason_code"] = d.reason
        per: dict[str, Any] = {}
        for policy in (*RECORDED_POLICIES, NEW_POLICY, ABLATION):
            per[policy] = {}
            for split in ("eval", "dev"):
                sub = [i for i in items if i["split"] == split and policy in i["decisions"]]
                if sub:
                    per[policy][split] = precision_recall([i["label"] for i in sub],
                                                          [i["decisions"][policy] == "kept" for i in sub])  # fmt: skip
            if not per[policy]:
                del per[policy]
        results[c] = {"policies": per, "items": items, "edit_checks": edit_check_shares(items, cands)}
    return {"choice": choice, "thresholds": chosen, "library_defaults": library, "results": results}


def edit_check_shares(items: Sequence[dict[str, Any]], cands: Sequence[Any]) -> dict[str, Any]:
    """True share among all labelled texts vs among those whose edit passes
    :func:`~negsynth_hf.synthesis.edits.edit_problem`, per half (what the edit checks buy at generation time)."""
    from negsynth_hf.synthesis.edits import edit_problem

    out: dict[str, Any] = {}
    for split in ("eval", "dev"):
        rows = [(i, c) for i, c in zip(items, cands, strict=True) if i["split"] == split]
        passing = [i for i, c in rows if i.get("changed_span") and edit_problem(
            c.query, *i["changed_span"], edited=i["edited_query"]) is None]  # fmt: skip
        share = {}
        for name, sub in (("all", [i for i, _ in rows]), ("edit_checks_pass", passing)):
            n_true = sum(i["label"] == "true" for i in sub)
            share[name] = {"n": len(sub), "n_true": n_true, "true_share": n_true / len(sub) if sub else None}
        out[split] = share
    return out


def masked_by_reason(items: Sequence[dict[str, Any]], split: str = "eval") -> dict[str, dict[str, int]]:
    """``{reason: {label: count}}`` of the recommended policy on one half: which rule costs which texts."""
    out: dict[str, dict[str, int]] = {}
    for i in items:
        if i["split"] == split:
            row = out.setdefault(i["contrast_reason_code"], {})
            row[i["label"]] = row.get(i["label"], 0) + 1
    return dict(sorted(out.items()))


def _examples(items: Sequence[dict[str, Any]], decision: str, n: int = 5) -> list[dict[str, Any]]:
    """``n`` evaluation-half texts the recommended policy kept (or masked), seeded."""
    pool = [i for i in items if i["split"] == "eval" and i["decisions"][NEW_POLICY] == decision]
    random.Random(SEED).shuffle(pool)
    return [{"query_id": i["query_id"], "edited_query": i["edited_query"], "text": i["text"], "label": i["label"],
             "reason": i["reason"], "guard": i["contrast_reason"]} for i in pool[:n]]  # fmt: skip


def write_results(report: dict[str, Any], results_dir: Path) -> None:
    out = reporting.result_paths(results_dir, "guard_eval")
    summary = {c: {"policies": r["policies"], "edit_checks": r["edit_checks"],
                   "contrast_reasons_eval": masked_by_reason(r["items"]), "kept_examples": _examples(r["items"], "kept"),
                   "masked_examples": _examples(r["items"], "masked")} for c, r in report["results"].items()}  # fmt: skip
    choice = {**report["choice"], "grid": report["choice"]["grid"]}
    reporting.write_json(out["json"], {"thresholds": report["thresholds"], "library_defaults": report["library_defaults"],
                                       "targets": TARGETS, "choice": choice, "collections": summary})  # fmt: skip
    header = ["collection", "policy", "n_labelled", "n_true", "kept", "kept_true", "precision", "recall"]
    t = report["thresholds"]
    lines = [
        "# Guard policies on labelled generated negatives", "",
        "Labels: `benchmarks/data/labels/` (true / false / junk, read blind to scores; README there). A policy's",
        "precision is the share of the texts it keeps that are `true`; recall the share of `true` texts it keeps.",
        "`off` keeps everything: its precision is the true share among the generated texts. `judge`/`combined`",
        "decisions exist for the guard-policy builds' texts only (fewer texts). `contrast_checks_only` is a",
        "diagnosis, not a candidate: `contrast` with both thresholds off (its code checks alone).", "",
        f"`contrast` thresholds, chosen on the development half ({report['choice']['criterion']}): "
        f"min_contrast = {t['min_contrast']}, min_sim_query = {t['min_sim_query']} (library defaults: "
        f"{report['library_defaults']}). Targets on the evaluation half: precision >= {TARGETS['precision']}, "
        f"recall >= {TARGETS['recall']} (SciFact, Cranfield).", "",
        "## Evaluation half", "",
        *reporting.markdown_table(header, _table_rows(report["results"], "eval"), ["l", "l"] + ["r"] * 6), "",
        "## Development half (thresholds chosen here)", "",
        *reporting.markdown_table(header, _table_rows(report["results"], "dev"), ["l", "l"] + ["r"] * 6), "",
    ]  # fmt: skip
    lines += ["## Edit checks: true share among all texts vs texts whose edit passes `edit_problem`", "",
              *reporting.markdown_table(
                  ["collection", "half", "all: n", "all: true share", "passing: n", "passing: true share"],
                  [[c, h, str(v["all"]["n"]), reporting.fmt(v["all"]["true_share"]), str(v["edit_checks_pass"]["n"]),
                    reporting.fmt(v["edit_checks_pass"]["true_share"])]
                   for c, r in summary.items() for h, v in r["edit_checks"].items()], ["l", "l", "r", "r", "r", "r"]),
              ""]  # fmt: skip
    lines += ["## `contrast` decisions by reason and label (evaluation half)", "",
              *reporting.markdown_table(["collection", "reason", "true", "false", "junk"],
                                        [[c, reason, *(str(v.get(lab, 0)) for lab in LABEL_VALUES)]
                                         for c, r in summary.items() for reason, v in r["contrast_reasons_eval"].items()],
                                        ["l", "l", "r", "r", "r"]), ""]  # fmt: skip
    for c, r in summary.items():
        lines += [f"## {c}: examples under `contrast` (evaluation half)", ""]
        for kind in ("kept", "masked"):
            for ex in r[f"{kind}_examples"]:
                text = ex["text"].replace("\n", " ")
                lines += [f"- **{kind}** ({ex['guard']}); label **{ex['label']}** ({ex['reason']})  ",
                          f"  edited query: {ex['edited_query']}  ", f"  > {text}", ""]  # fmt: skip
    out["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="eval", choices=("eval", "select"))
    parser.add_argument("--blind-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--results-dir", type=Path, default=reporting.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.command == "select":
        for c in COLLECTIONS:
            print(c, write_blind(c, args.blind_dir / f"blind_{c}.jsonl"))
        return 0
    from sentence_transformers import SentenceTransformer

    encoder = _CachedEncoder(SentenceTransformer(str(paths.embedded_retriever_path()), device="cpu"))
    report = evaluate(encoder)
    write_results(report, args.results_dir)
    print(json.dumps({"thresholds": report["thresholds"], "library_defaults": report["library_defaults"]}))
    for row in _table_rows(report["results"], "eval"):
        print(" ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
