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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="eval", choices=("eval", "select"))
    parser.add_argument("--blind-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args(argv)
    if args.command == "select":
        for c in COLLECTIONS:
            print(c, write_blind(c, args.blind_dir / f"blind_{c}.jsonl"))
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
