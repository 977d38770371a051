"""Retrieval quality of the baselines and the ablation ladder on a judged collection.

One command per collection; every variant shares the base model (embedded all-MiniLM-L6-v2), the training
rows, the steps, batch size, LoRA settings and seed::

    python benchmarks/quality.py --collection cisi
    python benchmarks/quality.py --collection cranfield
    python benchmarks/quality.py --collection scifact

Variants (``--variants``; all by default):

================================== ============================== =============================================
variant                            training set                   loss (``negsynth_hf.training.train``)
================================== ============================== =============================================
``base``                           none                           none (the untrained model; deterministic)
``in_batch``                       mined set, pairs only          ``in_batch`` = MNRL, in-batch negatives only
``mined``                          mined set (M mined)            ``mined`` = MNRL with the M mined columns
``mined_hardness``                 mined set                      MNRL, ``hardness_mode="hard_negatives"``
``naive``                          naive set (M mined + G)        ``causalneg``, weights as a 0/1 mask
``counterfactual_guard_off``       counterfactual, guard ``off``  ``causalneg``, 0/1 mask
``counterfactual_checks``          counterfactual, ``checks``     ``causalneg``, 0/1 mask
``counterfactual_checks_weighted`` counterfactual, ``checks``     ``causalneg``, gap weights
``full_checks``                    counterfactual, ``checks``     gap weights + query-view entropy
``full_checks_hardness``           counterfactual, ``checks``     ``full_checks`` + the MNRL hardness term
``counterfactual``                 counterfactual, ``margin``     ``causalneg``, 0/1 mask
``counterfactual_weighted``        counterfactual, ``margin``     ``causalneg``, gap weights
``full``                           counterfactual, ``margin``     gap weights + query-view entropy
``full_hardness``                  counterfactual, ``margin``     ``full`` + the MNRL hardness term
================================== ============================== =============================================

The earlier table's names (``counterfactual``, ``counterfactual_weighted``, ``full``) belong to the recommended
guard policy, ``RECOMMENDED_GUARD_POLICY`` (margin); the other policies' rows carry their policy's name.

"Plain InfoNCE" (naive, counterfactual*) = ``CausalNegLoss(use_weights="mask", entropy_weight=0)``: every weight
read as 1 if it is > 0 and 0 otherwise, so every real negative counts once, and the slots ``build_dataset`` marks
as filled/masked (weight 0: a generation failed, or the false-negative guard rejected the text) stay
excluded, exactly as in the weighted variants. So ``counterfactual`` -> ``counterfactual_weighted`` changes only
the weight magnitudes and ``counterfactual_weighted`` -> ``full`` only adds the entropy term. The ``mined``
baseline is sentence-transformers' MNRL, which reads no labels: a row with fewer than M mined negatives repeats
one of its own mined negatives in the filler slot.

The training sets are built once per collection with ``negsynth_hf.build_dataset`` (same pairs, same mining
settings) and saved under ``--work-dir``; LLM responses go to the committed response cache (``--llm-cache-dir``),
so a rerun (or an interrupted run) repeats no LLM call:

- mined: ``num_generated=0`` (no generator);
- naive: ``strategy="naive"``, ``guard_policy="off"``, ``source_weights=False`` (method.md: one
  prompt, no decomposition, no verification);
- counterfactual (``COUNTERFACTUAL_SETS``: one per guard policy): the generator's own strategy (Qwen 1.5B on
  llama.cpp: ``query_edit``, edit the query in one detail, then write a passage for the edited query), the
  guard policy of the set's name, source-probe gap weights on. The sets share one synthesis and differ only in
  which texts the guard keeps.

Queries: the collection's train split minus a seeded 20% validation hold-out
(``negsynth_hf.data.split_train_validation``, seed 0), of which ``--max-train-queries`` are sampled with seed 0
exactly as ``benchmarks/build_smollm2_200.py`` does. Test queries: the test split (all of them by default).
``--split validation`` evaluates on the held-out training queries instead (for choosing settings; never
tune on the test split).

Results: ``benchmarks/results/quality_<collection>.json`` (one record per variant and seed; rerunning skips
records already there with the same settings), ``.md`` (mean ± sample std over seeds) and ``.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks import reporting  # noqa: E402 - needs ROOT on sys.path

RESULTS_DIR = reporting.RESULTS_DIR
#: The counterfactual training sets share one synthesis (same strategy, prompts and seed: the response cache replays
#: it) and differ only in ``build_dataset``'s guard policy. ``margin`` is the recommended one: on the validation
#: queries it beat ``checks`` (CISI 0.6302 vs 0.5476, Cranfield 0.4319 vs 0.4243; results/quality_validation/),
#: and ``checks`` keeps texts that score at or above their own positive (Cranfield 92 of 115, CISI 42 of 46).
RECOMMENDED_GUARD_POLICY = "margin"
COUNTERFACTUAL_SETS: dict[str, str] = {
    "counterfactual": RECOMMENDED_GUARD_POLICY,
    "counterfactual_checks": "checks",
    "counterfactual_guard_off": "off",
}
#: the ladder's names are kept from the earlier table for the recommended guard policy (counterfactual*, full);
#: the other policies' rows carry their policy's name, the added rows are named for what they change
VARIANTS: tuple[str, ...] = (
    "base",
    "in_batch",
    "mined",
    "mined_hardness",
    "naive",
    "counterfactual_guard_off",
    "counterfactual_checks",
    "counterfactual_checks_weighted",
    "full_checks",
    "full_checks_hardness",
    "counterfactual",
    "counterfactual_weighted",
    "full",
    "full_hardness",
)


def _causalneg(dataset: str, labels: str, *, entropy: bool = False, hardness: bool = False) -> dict[str, Any]:
    return {"dataset": dataset, "loss": "causalneg", "labels": labels, "entropy": entropy, "hardness": hardness}


# variant -> (training set, loss name, label handling, entropy term on?, MNRL hardness term on?)
VARIANT_SPECS: dict[str, dict[str, Any]] = {
    "in_batch": {"dataset": "mined", "loss": "in_batch", "labels": None, "entropy": False},
    "mined": {"dataset": "mined", "loss": "mined", "labels": None, "entropy": False},
    "mined_hardness": {"dataset": "mined", "loss": "mined", "labels": None, "entropy": False, "hardness": True},
    "naive": _causalneg("naive", "mask"),
    "counterfactual_guard_off": _causalneg("counterfactual_guard_off", "mask"),
}
for _set, _suffix in (("counterfactual", ""), ("counterfactual_checks", "_checks")):
    VARIANT_SPECS.update({
        _set: _causalneg(_set, "mask"),
        f"{_set}_weighted": _causalneg(_set, "weights"),
        f"full{_suffix}": _causalneg(_set, "weights", entropy=True),
        f"full{_suffix}_hardness": _causalneg(_set, "weights", entropy=True, hardness=True),
    })  # fmt: skip
#: the comparisons written to ``quality_<collection>.significance.json`` (a, b): a - b, paired over test queries
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("full", "mined"), ("full", "naive"), ("naive", "mined"), ("counterfactual", "mined"),
    ("counterfactual", "counterfactual_checks"), ("counterfactual", "counterfactual_guard_off"),
    ("counterfactual_weighted", "counterfactual"), ("full", "counterfactual_weighted"), ("full", "mined_hardness"),
    ("full_hardness", "mined_hardness"), ("mined", "base"), ("full", "base"), ("mined_hardness", "mined"),
    ("full", "full_checks"), ("counterfactual_checks_weighted", "counterfactual_checks"),
)  # fmt: skip
METRIC_KEYS = (("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"), ("recall@100", "Recall@100"))
# Per-collection defaults (see benchmarks/README.md for why): train queries, positives per query, profile.
# Evaluation is on each collection's full test corpus (SciFact 5,183 documents), so figures compare with BEIR's.
COLLECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "scifact": {"max_train_queries": 200, "profile": "scientific"},
    "cranfield": {"max_train_queries": None, "profile": "aeronautics"},
    "cisi": {"max_train_queries": None, "profile": "information_science"},
}
GENERIC_DEFAULTS: dict[str, Any] = {
    "max_train_queries": None,
    "sample_pool": None,
    "max_positives_per_query": 1,
    "profile": "generic",
    "max_new_tokens": None,  # sized from each stage's schema
    "mine_corpus_size": None,
    "eval_corpus_size": None,
}

logger = logging.getLogger("quality")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", required=True, help="scifact, cranfield, cisi, or a BEIR-layout folder.")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Training seeds (>= 3 for a spread).")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="Evaluate on test, or on the held-out validation share of the training queries (to choose settings).",
    )
    p.add_argument("--max-train-queries", type=int, default=-1, help="-1: per-collection default; 0: all.")
    p.add_argument(
        "--sample-pool",
        type=int,
        default=-1,
        help="Sample this many train queries (seed 0) and keep the first --max-train-queries rows (-1: "
        "per-collection default; SciFact 200 = build_smollm2_200's sample; 0: sample directly).",
    )
    p.add_argument("--max-positives-per-query", type=int, default=-1, help="-1: per-collection default.")
    p.add_argument("--validation-fraction", type=float, default=0.2)
    p.add_argument("--max-test-queries", type=int, default=None, help="Sample this many test queries (seed 0).")
    p.add_argument(
        "--eval-corpus-size",
        type=int,
        default=-1,
        help="Judged docs + seeded random distractors up to this size (-1: per-collection default; 0: full).",
    )
    p.add_argument(
        "--mine-corpus-size",
        type=int,
        default=-1,
        help="Mine from train positives + seeded random docs up to this size (-1: per-collection; 0: full).",
    )
    p.add_argument("--base-model", default="embedded", help="'embedded' (MiniLM) or a SentenceTransformer path.")
    p.add_argument("--num-mined", type=int, default=3)
    p.add_argument("--num-generated", type=int, default=2)
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument(
        "--range-max",
        type=int,
        default=100,
        help="Mine among the top-N documents (sentence-transformers' default, 10*M + positives, leaves most CISI "
        "rows without any negative that clears the relative margin).",
    )
    p.add_argument("--profile", default=None, help="Synthesis profile (default: per collection).")
    p.add_argument("--generator-backend", default="llamacpp", help="GeneratorConfig backend (default llama.cpp).")
    p.add_argument(
        "--generator-model", default=None, help="GeneratorConfig model (default: the backend's, Qwen2.5-Coder-1.5B)."
    )
    p.add_argument(
        "--llm-cache-dir",
        default=str(ROOT / "benchmarks" / "data" / "qwen" / "responses"),
        help="LLM response cache (committed: a rerun of the grid needs no LLM; '' = the user cache).",
    )
    p.add_argument("--generator-base-url", default=None, help="OpenAI-compatible base URL (openai backend).")
    p.add_argument("--generator-batch-size", type=int, default=8)
    p.add_argument(
        "--generator-threads",
        type=int,
        default=1,
        help="generator threads (llama.cpp / torch): 2 threads on the shared 2-core CPU fall to ~1-2 tok/s.",
    )
    p.add_argument(
        "--generator-parallel",
        type=int,
        default=4,
        help="llama.cpp slots decoded together (one thread, beside a training run: 2 slots 6.2 tok/s, 4 slots 8.4-8.6, "
        "8 slots 7.2; the slot count is not in the cache key, so replays do not depend on it).",
    )
    p.add_argument("--strategy", default="auto", help="Counterfactual sets' strategy (auto: the model's own).")
    p.add_argument("--hardness-strength", type=float, default=5.0, help="*_hardness variants (EmbeddingGemma: 5).")
    p.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="outlines-constrained decoding (~<1 tok/s on 2 shared cores; off by default).",
    )
    p.add_argument(
        "--query-editor",
        default="auto",
        choices=["auto", "llm", "rules", "llm_then_rules"],
        help="query_edit's editor (auto: the model's recommendation; Qwen 1.5B: llm_then_rules).",
    )
    p.add_argument("--max-new-tokens", type=int, default=0, help="0: sized from each stage's schema.")
    p.add_argument("--max-attempts", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="Optimizer steps per training run (same for all).")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128, help="Training and evaluation truncation.")
    p.add_argument("--entropy-weight", type=float, default=0.05)
    p.add_argument("--entropy-temperature", type=float, default=0.1)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    p.add_argument("--work-dir", default=None, help="Builds and runs (default outputs/quality/<collection>).")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument(
        "--data-dir",
        default=str(ROOT / "benchmarks" / "data" / "quality"),
        help="Generated slots of each LLM-built set, keyed by ids (committed; load_dataset('json') reads them).",
    )
    p.add_argument("--tag", default="", help="Suffix of the result files: quality_<collection><tag>.*")
    p.add_argument("--keep-models", action="store_true", help="Keep each run's merged model and adapter.")
    p.add_argument(
        "--known-positive-batches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Batch with KnownPositivesBatchSampler (no judged-relevant document of a query as its in-batch "
        "negative); --no-known-positive-batches: sentence-transformers' NO_DUPLICATES only.",
    )
    p.add_argument("--build-only", action="store_true", help="Build (or load) the three training sets and stop.")
    p.add_argument("--report-only", action="store_true", help="Rewrite .md/.png from the JSON and stop.")
    p.add_argument(
        "--select-steps",
        nargs="+",
        type=int,
        default=None,
        help="Choose --steps among these on the validation split (seed 0, --select-variants) before the test run.",
    )
    p.add_argument(
        "--select-learning-rates",
        nargs="+",
        type=float,
        default=None,
        help="Choose --learning-rate among these on the validation split (with --select-steps).",
    )
    p.add_argument(
        "--select-variants",
        nargs="+",
        default=["mined", "full_checks"],
        choices=[v for v in VARIANTS if v != "base"],
        help="Variants whose mean validation nDCG@10 picks the setting (one setting for every variant). The "
        "committed grids chose on mined and full_checks, the full method under the guard recommended when they "
        "ran; margin was recommended afterwards, on validation runs at the chosen settings.",
    )
    p.add_argument(
        "--select-eval-corpus-size",
        type=int,
        default=0,
        help="Validation candidates score on the held-out queries' judged docs + seeded random ones up to this "
        "size (0: the full corpus, as the test run). Ranks settings at a fraction of the cost on large corpora.",
    )
    p.add_argument("--rebuild", action="store_true", help="Rebuild the training sets even if saved.")
    p.set_defaults(sets_tag=None)  # set by candidate_args: a validation candidate's slots go to its grid's folder
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ setup
def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Per-collection defaults (``COLLECTION_DEFAULTS``) overridden by explicit command-line values."""
    name = Path(args.collection).name
    d = {**GENERIC_DEFAULTS, **COLLECTION_DEFAULTS.get(name, {})}
    mtq = d["max_train_queries"] if args.max_train_queries < 0 else (args.max_train_queries or None)
    mpp = d["max_positives_per_query"] if args.max_positives_per_query < 0 else args.max_positives_per_query
    return {
        "collection": name,
        "max_train_queries": mtq,
        "sample_pool": d["sample_pool"] if args.sample_pool < 0 else (args.sample_pool or None),
        "max_positives_per_query": mpp or None,
        "profile": args.profile or d["profile"],
        "max_new_tokens": args.max_new_tokens or d["max_new_tokens"],
        "mine_corpus_size": d["mine_corpus_size"] if args.mine_corpus_size < 0 else (args.mine_corpus_size or None),
        "eval_corpus_size": d["eval_corpus_size"] if args.eval_corpus_size < 0 else (args.eval_corpus_size or None),
    }


def collection_folder(spec: str) -> Path:
    folder = Path(spec)
    return folder if folder.is_dir() else reporting.data_dir() / spec


def training_pairs(collection, args: argparse.Namespace, settings: dict[str, Any]):
    """(train pairs, train query ids, validation query ids). No title column: the query-edit writer sees only
    the edited query, as in ``benchmarks/guard_policies.py`` (so the two share LLM responses)."""
    from negsynth_hf.data import pairs_dataset, split_train_validation

    all_ids = collection.split_query_ids("train")
    train_ids, val_ids = split_train_validation(all_ids, validation_fraction=args.validation_fraction, seed=0)
    pool = settings["sample_pool"]
    pairs = pairs_dataset(
        collection,
        "train",
        query_ids=train_ids,
        max_queries=pool or settings["max_train_queries"],
        max_positives_per_query=settings["max_positives_per_query"],
        seed=0,
    )
    if pool and settings["max_train_queries"]:
        keep = list(dict.fromkeys(pairs["query_id"]))[: settings["max_train_queries"]]
        wanted = set(keep)
        pairs = pairs.select([i for i, q in enumerate(pairs["query_id"]) if q in wanted])
    return pairs, train_ids, val_ids


def mining_corpus(collection, train_ids: list[str], size: int | None) -> list[str]:
    """The judged documents of every training query plus seeded random others (``negsynth_hf.data``'s rule)."""
    from negsynth_hf.data import mining_corpus as library_mining_corpus

    return library_mining_corpus(collection, "train", train_ids, corpus_size=size or None, seed=0)


def generator_config(args: argparse.Namespace):
    from negsynth_hf.generators import GeneratorConfig

    return GeneratorConfig(
        backend=args.generator_backend,
        model=args.generator_model,
        base_url=args.generator_base_url,
        batch_size=args.generator_batch_size,
        constrained=args.constrained,
        num_threads=args.generator_threads,
        n_parallel=args.generator_parallel,
        cache_dir=args.llm_cache_dir or None,
        # the committed cache must replay a build exactly: rows that failed fail again, without the LLM
        keep_rejected=bool(args.llm_cache_dir),
    )


def set_specs(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each training set's ``build_dataset`` arguments. The counterfactual sets share one synthesis (same
    strategy, prompts and seed: the response cache replays it) and differ only in the guard policy."""
    synth = {"generator": generator_config(args), "num_generated": args.num_generated,
             "strategy": args.strategy, "query_editor": args.query_editor}  # fmt: skip
    specs: dict[str, dict[str, Any]] = {
        "mined": {"generator": None, "num_generated": 0},
        "naive": {**synth, "strategy": "naive", "guard_policy": "off", "source_weights": False},
    }
    for name, mode in COUNTERFACTUAL_SETS.items():
        specs[name] = {**synth, "guard_policy": mode}
    return specs


def sets_data_dir(args: argparse.Namespace, settings: dict[str, Any]) -> Path:
    """Where a collection's generated slots go (``<--data-dir>/<collection><tag>/<set>.jsonl``). A validation
    candidate writes to its grid's folder: it shares the grid's builds, so its slots are the same texts."""
    return Path(args.data_dir) / f"{settings['collection']}{grid_tag(args)}"


def grid_tag(args: argparse.Namespace) -> str:
    """The tag of the grid ``args`` belongs to: its own, or for a validation candidate its grid's."""
    return args.tag if args.sets_tag is None else args.sets_tag


def build_sets(
    pairs, corpus: list[str], args: argparse.Namespace, settings: dict[str, Any], work: Path, needed: set[str]
):
    """The ``needed`` training sets (``BuiltDataset``), each built once and saved under ``work``."""
    from negsynth_hf import build_dataset
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.training import resolve_model_path

    common = {
        "corpus": corpus,
        "retriever": None if args.base_model == "embedded" else resolve_model_path(args.base_model),
        "num_mined": args.num_mined,
        "relative_margin": args.relative_margin,
        "range_max": args.range_max,
        "profile": settings["profile"],
        "max_new_tokens": settings["max_new_tokens"],
        "max_attempts": args.max_attempts,
        "seed": 0,
        "show_progress_bar": True,
    }
    sets: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name, spec in set_specs(args, settings).items():
        if name not in needed:
            continue
        path = work / "builds" / name
        if path.is_dir() and not args.rebuild:
            sets[name] = BuiltDataset.load(path)
            timings[name] = float("nan")
            print(f"[build] {name}: loaded {path}", flush=True)
            continue
        start = time.perf_counter()
        result = build_dataset(pairs, **common, **spec)
        timings[name] = time.perf_counter() - start
        if path.exists():
            shutil.rmtree(path)
        result.save(path)
        (path / "build_seconds.json").write_text(json.dumps({"seconds": timings[name]}) + "\n")
        if spec.get("generator") is not None:  # what the LLM wrote, committed next to its responses
            reporting.write_generated_slots(sets_data_dir(args, settings) / f"{name}.jsonl", result.provenance)
        sets[name] = result
        print(f"[build] {name}: {len(result.train)} rows in {timings[name]:.0f} s -> {path}", flush=True)
    for name in sets:
        saved = work / "builds" / name / "build_seconds.json"
        if math.isnan(timings[name]) and saved.is_file():
            timings[name] = json.loads(saved.read_text())["seconds"]
    return sets, timings


def train_config(variant: str, args: argparse.Namespace):
    from negsynth_hf.training_config import TrainConfig

    spec = VARIANT_SPECS[variant]
    return TrainConfig(
        loss=spec["loss"],
        in_batch_negatives=True,
        use_weights="mask" if spec["labels"] == "mask" else "weights",
        entropy_weight=args.entropy_weight if spec["entropy"] else 0.0,
        entropy_temperature=args.entropy_temperature,
        scale=args.scale,
        hardness_mode="hard_negatives" if spec.get("hardness") else None,
        hardness_strength=args.hardness_strength if spec.get("hardness") else 0.0,
        lora=True,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=args.steps,
        max_seq_length=args.max_seq_length,
        logging_steps=max(1, args.steps // 4),
    )


def settings_key(args: argparse.Namespace, settings: dict[str, Any]) -> str:
    """Hash of everything that changes a trained variant's score (records with another key are re-run)."""
    keys = (
        "split",
        "validation_fraction",
        "max_test_queries",
        "base_model",
        "num_mined",
        "num_generated",
        "relative_margin",
        "range_max",
        "generator_backend",
        "generator_model",
        "query_editor",
        "strategy",
        "hardness_strength",
        "constrained",
        "max_attempts",
        "steps",
        "batch_size",
        "learning_rate",
        "lora_r",
        "lora_alpha",
        "max_seq_length",
        "entropy_weight",
        "entropy_temperature",
        "scale",
        "known_positive_batches",
    )
    blob = {**{k: getattr(args, k) for k in keys}, **settings, "guard_policies": COUNTERFACTUAL_SETS}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ results
def result_paths(args: argparse.Namespace, collection: str) -> dict[str, Path]:
    return reporting.result_paths(args.results_dir, f"quality_{collection}{args.tag}")


def load_records(path: Path) -> list[dict[str, Any]]:
    return reporting.read_json(path, [])


def save_records(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``records`` plus any record another process saved meanwhile (same settings, other variant/seed)."""
    mine = {(r["variant"], r["seed"], r.get("settings_key")) for r in records}
    keys = {r.get("settings_key") for r in records}
    records = records + [
        r
        for r in load_records(path)
        if r.get("settings_key") in keys and (r["variant"], r["seed"], r.get("settings_key")) not in mine
    ]
    records.sort(key=lambda r: (VARIANTS.index(r["variant"]), r["seed"]))
    reporting.write_json(path, records)
    return records


def _means(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(v.values()) for k, v in per_query.items()}


def load_per_query(path: Path, key: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{"<variant>/<seed>": {metric: {query_id: score}}}`` saved under these settings (others are stale)."""
    saved = reporting.read_json(path, {}) or {}
    return dict(saved.get("runs", {})) if saved.get("settings_key") == key else {}


def save_per_query(path: Path, key: str, per_query: dict[str, Any]) -> None:
    merged = {**load_per_query(path, key), **per_query}  # another process's runs under the same settings stay
    reporting.write_json(path, {"settings_key": key, "runs": dict(sorted(merged.items()))})


def seed_averaged(per_query: dict[str, Any], variant: str, metric: str) -> tuple[dict[str, float], list[int]]:
    """A variant's per-query ``metric`` averaged over its seeds, and which seeds."""
    from negsynth_hf.significance import mean_over_seeds

    runs = {int(k.split("/")[1]): v[metric] for k, v in per_query.items() if k.split("/")[0] == variant}
    return (mean_over_seeds([runs[s] for s in sorted(runs)]), sorted(runs)) if runs else ({}, [])


def significance(per_query: dict[str, Any], *, test: str = "fisher") -> list[dict[str, Any]]:
    """Paired tests (ranx) over test queries for ``COMPARISONS`` present, each metric, seeds averaged per query."""
    from negsynth_hf.significance import paired_test

    pairs = dict.fromkeys([*COMPARISONS, *((v, b) for b in ("mined", "naive") for v in VARIANTS if v != b)])
    out = []
    for a, b in pairs:
        for metric, _ in METRIC_KEYS:
            (xa, seeds_a), (xb, seeds_b) = seed_averaged(per_query, a, metric), seed_averaged(per_query, b, metric)
            if xa and xb:
                result = paired_test(a, xa, b, xb, metric=metric, test=test).to_dict()
                out.append({**result, "seeds_a": seeds_a, "seeds_b": seeds_b})
    return out


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant (in ladder order): n seeds, mean and sample std of each metric, mean train seconds."""
    rows = []
    for variant in VARIANTS:
        recs = [r for r in records if r["variant"] == variant]
        if not recs:
            continue
        row: dict[str, Any] = {"variant": variant, "n": len(recs), "seeds": sorted(r["seed"] for r in recs)}
        for key, _ in METRIC_KEYS:
            row[key], row[f"{key}_std"] = reporting.mean_std([r[key] for r in recs])
        row["train_seconds"] = reporting.mean_std([r.get("train_seconds") or 0.0 for r in recs])[0]
        rows.append(row)
    return rows


def to_markdown(records: list[dict[str, Any]], meta: dict[str, Any], tests: list[dict[str, Any]] = ()) -> str:
    lines = [f"# Retrieval quality on {meta.get('collection')} ({meta.get('split', 'test')} split)", ""]
    if meta.get("command"):
        lines += [f"Command: `{meta['command']}`", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    if meta.get("device"):
        lines += [f"Device: {meta['device']}.", ""]
    if meta.get("selection"):
        lines += _selection_lines(meta["selection"])
    rows = aggregate(records)
    lines += _results_table(rows, tests)
    lines += [
        "",
        "Mean ± sample standard deviation over training seeds; bold = best mean. Δ columns: nDCG@10 of the row "
        "minus mined-only / naive, per-query scores averaged over seeds, two-sided paired randomization test over "
        "the test queries (SciPy's permutation_test, 10,000 seeded permutations, exact when fewer; metrics by "
        "ranx); * = p < 0.05. All pairs: `.significance.json`.",
    ]
    lines += _differences(rows)
    return "\n".join(lines) + "\n"


def _delta_cell(tests: list[dict[str, Any]], a: str, b: str) -> str:
    """``+0.0123 (p 0.004)*`` for a - b on nDCG@10, from the paired tests ("" when not compared)."""
    for t in tests:
        if t["metric"] == "ndcg@10" and {t["a"], t["b"]} == {a, b}:
            delta = t["delta"] if t["a"] == a else -t["delta"]
            return f"{delta:+.4f} (p {t['p_value']:.3f}){'*' if t['p_value'] < 0.05 else ''}"
    return ""


def _selection_lines(selection: dict[str, Any]) -> list[str]:
    """The validation candidates of (steps, learning rate) and which one was chosen."""
    rows = []
    for c in selection["candidates"]:
        chosen = " (chosen)" if c == selection["chosen"] else ""
        per = ", ".join(f"{v} {x:.4f}" for v, x in c["per_variant"].items())
        rows.append([str(c["steps"]), f"{c['learning_rate']:g}", f"{c['validation_ndcg@10']:.4f}{chosen}", per])
    intro = (
        "Steps and learning rate chosen on the validation split (held-out training queries, seed 0) by mean "
        f"nDCG@10 of {', '.join(selection['variants'])}"
        + (
            f", scored over their judged documents + seeded random ones ({corpus:,} documents):"
            if (corpus := selection.get("eval_corpus_size"))
            else ":"
        )
    )
    header = ["steps", "learning rate", "validation nDCG@10", "per variant"]
    return [intro, "", *reporting.markdown_table(header, rows, "rrrl"), ""]


def _results_table(rows: list[dict[str, Any]], tests: list[dict[str, Any]] = ()) -> list[str]:
    """Mean ± std per variant and metric (the best mean of each in bold), and Δ nDCG@10 to mined and naive."""
    best = {key: max((r[key] for r in rows), default=float("nan")) for key, _ in METRIC_KEYS}
    body = []
    for r in rows:
        cells = []
        for key, _ in METRIC_KEYS:
            text = reporting.fmt_mean_std(r[key], r[f"{key}_std"])
            cells.append(f"**{text}**" if r[key] == best[key] else text)
        seeds = "1 (deterministic)" if r["variant"] == "base" else str(r["n"])
        deltas = [_delta_cell(list(tests), r["variant"], b) if r["variant"] != b else "" for b in ("mined", "naive")]
        body.append([r["variant"], seeds, *cells, *deltas, f"{r['train_seconds']:.0f}"])
    header = ["variant", "seeds", *(label for _, label in METRIC_KEYS), "Δ vs mined", "Δ vs naive", "train s/run"]
    return reporting.markdown_table(header, body, "lrrrrrrr")


def _differences(rows: list[dict[str, Any]]) -> list[str]:
    """nDCG@10 of the full method minus each baseline it is meant to beat."""
    by = {r["variant"]: r for r in rows}
    if "full" not in by:
        return []
    diffs = [
        f"full − {other}: {by['full']['ndcg@10'] - by[other]['ndcg@10']:+.4f}"
        for other in ("mined", "naive", "counterfactual")
        if other in by
    ]
    return ["", "nDCG@10 differences: " + "; ".join(diffs) + "."] if diffs else []


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    rows = aggregate(records)
    if not rows:
        return
    series = {label: ([r[key] for r in rows], [r[f"{key}_std"] for r in rows]) for key, label in METRIC_KEYS}
    reporting.grouped_bars([r["variant"] for r in rows], series, path, title=title)


def write_reports(records: list[dict[str, Any]], paths: dict[str, Path], meta: dict[str, Any]) -> None:
    per_query = load_per_query(paths["per_query"], meta.get("settings_key", ""))
    tests = significance(per_query) if per_query else []
    if tests:
        reporting.write_json(paths["significance"], tests)
    paths["md"].write_text(to_markdown(records, meta, tests), encoding="utf-8")
    try:
        plot(records, paths["png"], f"{meta.get('collection')} {meta.get('split', 'test')}: mean ± std over seeds")
    except ImportError:  # matplotlib is optional
        logger.warning("matplotlib missing: no PNG written.")


# ------------------------------------------------------------------------------------------ selection
def select_on_validation(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Pick (steps, learning rate) by mean validation nDCG@10 of ``--select-variants`` (seed 0), never looking at
    the test split. Each candidate is a ``--split validation`` run with the same settings otherwise, its records
    under ``<results-dir>/quality_validation/`` (resumable like any run)."""
    steps_grid = args.select_steps or [args.steps]
    lr_grid = args.select_learning_rates or [args.learning_rate]
    candidates = []
    for steps in steps_grid:
        for lr in lr_grid:
            candidate = candidate_args(args, steps, lr)
            records = run(candidate, f"{command}  # validation candidate: steps {steps}, lr {lr:g}")
            scores = [r["ndcg@10"] for r in records if r["variant"] in args.select_variants]
            candidates.append(
                {
                    "steps": steps,
                    "learning_rate": lr,
                    "validation_ndcg@10": statistics.fmean(scores),
                    "per_variant": {r["variant"]: r["ndcg@10"] for r in records},
                }
            )
    best = max(candidates, key=lambda c: c["validation_ndcg@10"])
    print(
        "[select] validation nDCG@10 (mean of "
        + ", ".join(args.select_variants)
        + "): "
        + "; ".join(f"steps {c['steps']} lr {c['learning_rate']:g}: {c['validation_ndcg@10']:.4f}" for c in candidates)
        + f" -> steps {best['steps']}, lr {best['learning_rate']:g}",
        flush=True,
    )
    corpus = args.select_eval_corpus_size
    return {"variants": args.select_variants, "candidates": candidates, "chosen": best, "eval_corpus_size": corpus}


def candidate_args(args: argparse.Namespace, steps: int, learning_rate: float) -> argparse.Namespace:
    """The ``--split validation`` run of one (steps, learning rate) candidate: seed 0, the same builds."""
    corpus = args.select_eval_corpus_size
    return argparse.Namespace(
        **{
            **vars(args),
            "split": "validation",
            "seeds": [0],
            "variants": list(args.select_variants),
            "steps": steps,
            "learning_rate": learning_rate,
            "results_dir": str(Path(args.results_dir) / "quality_validation"),
            "tag": candidate_tag(args.tag, steps, learning_rate, corpus),
            "sets_tag": grid_tag(args),
            "eval_corpus_size": corpus or args.eval_corpus_size,
            "work_dir": str(work_dir(args)),
            "select_steps": None,
            "select_learning_rates": None,
        }
    )


def candidate_tag(tag: str, steps: int, learning_rate: float, eval_corpus_size: int | None) -> str:
    """The result-file suffix of one validation candidate (``quality_validation/quality_<c><this>.*``)."""
    return f"{tag}_steps{steps}_lr{learning_rate:g}" + (f"_corpus{eval_corpus_size}" if eval_corpus_size else "")


def work_dir(args: argparse.Namespace) -> Path:
    """Builds (shared by every variant, seed and candidate setting) and runs."""
    name = Path(args.collection).name
    return Path(args.work_dir) if args.work_dir else ROOT / "outputs" / "quality" / f"{name}{args.tag}"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return run(args, grid_command(sys.argv[1:] if argv is None else argv))


#: options that choose which of a grid's runs one invocation does, not what a run is (not in ``settings_key``)
RUN_CHOICE_OPTIONS = ("--variants", "--seeds")


def grid_command(argv: list[str]) -> str:
    """The command that reproduces the whole grid a result file holds: ``argv`` without ``RUN_CHOICE_OPTIONS``
    (the file is the union of every invocation's runs under one settings key, so one invocation's
    ``--variants`` would misdescribe it)."""
    kept, skipping = [], False
    for arg in argv:
        if arg.split("=", 1)[0] in RUN_CHOICE_OPTIONS:
            skipping = "=" not in arg
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        kept.append(arg)
    return "python benchmarks/quality.py " + shlex.join(kept)


def run(args: argparse.Namespace, command: str) -> list[dict[str, Any]]:
    """One invocation: selection (if asked), builds, then every missing (variant, seed) record."""
    settings = resolve_settings(args)
    name = settings["collection"]
    paths = result_paths(args, name)
    meta = reporting.read_json(paths["meta"], {})
    if args.report_only:
        write_reports(load_records(paths["json"]), paths, meta or {"collection": name, "split": args.split})
        return load_records(paths["json"])
    selection = None
    if (args.select_steps or args.select_learning_rates) and args.split == "test":
        selection = select_on_validation(args, command)
        args.steps = selection["chosen"]["steps"]
        args.learning_rate = selection["chosen"]["learning_rate"]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from negsynth_hf.data import load_beir

    work = work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()
    collection = load_beir(collection_folder(args.collection))
    pairs, train_ids, val_ids = training_pairs(collection, args, settings)
    corpus = mining_corpus(collection, train_ids, settings["mine_corpus_size"])
    print(
        f"[data] {name}: {len(pairs)} training rows from {len(set(pairs['query_id']))} queries; "
        f"{len(val_ids)} validation queries held out; mining corpus {len(corpus)} docs",
        flush=True,
    )
    needed = {VARIANT_SPECS[v]["dataset"] for v in args.variants if v != "base"} or {"mined"}
    sets, build_seconds = build_sets(pairs, corpus, args, settings, work, needed)
    if args.build_only:
        return []
    evaluator, full_corpus_size = evaluator_for(collection, args, settings, val_ids)
    meta = {
        **run_meta(args, settings, command, pairs, evaluator, full_corpus_size),
        "build_seconds": {**(meta.get("build_seconds") or {}), **build_seconds},
        "build_summaries": {**(meta.get("build_summaries") or {}), **{k: v.summary.to_dict() for k, v in sets.items()}},
    }
    if selection is not None:
        meta["selection"] = selection
    reporting.write_json(paths["meta"], meta)
    records = run_missing(args, meta, paths, pairs, training_sets(sets), evaluator, work)
    # the file holds every invocation's runs: its seeds are theirs too, not only this one's --seeds
    meta["seeds"] = sorted(set(args.seeds) | {r["seed"] for r in records if r["variant"] != "base"})
    meta["wall_seconds_this_invocation"] = round(time.perf_counter() - wall_start, 1)
    reporting.write_json(paths["meta"], meta)
    write_reports(records, paths, meta)
    print(to_markdown(records, meta), flush=True)
    return records


def evaluator_for(collection, args: argparse.Namespace, settings: dict[str, Any], val_ids: list[str]):
    """(IR evaluator, full corpus size): the test split, or the validation hold-out of the train split."""
    from negsynth_hf.evaluation import split_evaluator

    split, query_ids = ("test", None) if args.split == "test" else ("train", val_ids)
    return split_evaluator(
        collection,
        split,
        query_ids=query_ids,
        max_queries=args.max_test_queries or None,
        corpus_size=settings["eval_corpus_size"],
        seed=0,
        name=f"{settings['collection']}-{args.split}",
    )


def training_sets(sets: dict[str, Any]) -> dict[str, Any]:
    """Training set name (``VARIANT_SPECS[v]["dataset"]``) -> its ``train`` dataset.

    The counterfactual variants share one set; their losses read its labels as a 0/1 mask or as weights.
    """
    return {name: result.train for name, result in sets.items()}


def run_meta(
    args: argparse.Namespace, settings: dict[str, Any], command: str, pairs, evaluator, full_corpus_size: int
) -> dict[str, Any]:
    """What the result files say about this run: the command, its settings in words, the machine."""
    import torch

    batching = "no known positive in a query's batch" if args.known_positive_batches else "NO_DUPLICATES"
    n_docs = len(evaluator.corpus)
    description = (
        f"{len(evaluator.queries)} {args.split} queries over {n_docs:,} documents"
        f"{'' if n_docs == full_corpus_size else f' (judged + random, of {full_corpus_size:,})'}; "
        f"training: {len(pairs)} rows ({len(set(pairs['query_id']))} train queries, "
        f"≤{settings['max_positives_per_query']} positive each), M={args.num_mined} mined + G={args.num_generated} "
        f"generated negatives ({args.generator_backend} {args.generator_model or 'default model'}, strategy "
        f"{args.strategy}, counterfactual sets guarded by {COUNTERFACTUAL_SETS}, recommended {RECOMMENDED_GUARD_POLICY}), "
        f"{args.steps} steps × batch {args.batch_size} "
        f"({batching}), "
        f"LoRA r={args.lora_r} α={args.lora_alpha}, "
        f"lr {args.learning_rate}, max_seq_length {args.max_seq_length}, base {args.base_model}."
    )
    return {
        "collection": settings["collection"],
        "split": args.split,
        "command": command,
        "description": description,
        "settings_key": settings_key(args, settings),
        "n_train_queries": len(set(pairs["query_id"])),
        "n_train_rows": len(pairs),
        "n_test_queries": len(evaluator.queries),
        "test_corpus_size": n_docs,
        "full_corpus_size": full_corpus_size,
        "seeds": list(args.seeds),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "device": device_name(),
    }


def run_missing(
    args: argparse.Namespace,
    meta: dict[str, Any],
    paths: dict[str, Path],
    pairs,
    train_sets: dict[str, Any],
    evaluator,
    work: Path,
) -> list[dict[str, Any]]:
    """Train and score every (variant, seed) not yet in the JSON; saves after each so a crash loses one run."""
    from tqdm.auto import tqdm

    key = meta["settings_key"]
    records = [r for r in load_records(paths["json"]) if r.get("settings_key") == key]
    done = {(r["variant"], r["seed"]) for r in records}
    todo = [(v, s) for s in args.seeds for v in args.variants if (v, s) not in done]
    common = {
        "device": meta["device"],
        "collection": meta["collection"],
        "split": args.split,
        "settings_key": key,
        "n_eval_queries": len(evaluator.queries),
        "eval_corpus_size": len(evaluator.corpus),
    }
    per_query = load_per_query(paths["per_query"], key)
    for variant, seed in tqdm(todo, desc=f"{meta['collection']} runs"):
        start = time.perf_counter()
        if variant == "base":
            base = per_query.get("base/0")  # deterministic: scored once, every seed's record is the same
            means, per = scores(evaluator, load_base(args)) if base is None else (_means(base), base)
            record = base_record(seed, means)
        else:
            record, per = train_record(variant, seed, args, pairs, train_sets, evaluator, work)
        record.update(common, wall_seconds=round(time.perf_counter() - start, 1))
        records.append(record)
        per_query[f"{variant}/{0 if variant == 'base' else seed}"] = per
        save_per_query(paths["per_query"], key, per_query)  # before the record: a record always has its scores
        records = save_records(paths["json"], records)
        write_reports(records, paths, meta)
        print(
            f"[run] {variant} seed {seed}: nDCG@10 {record['ndcg@10']:.4f} MRR@10 {record['mrr@10']:.4f} "
            f"R@100 {record['recall@100']:.4f} ({record['wall_seconds']:.0f} s)",
            flush=True,
        )
    return records


def load_base(args: argparse.Namespace):
    from negsynth_hf.training import load_model

    return load_model(args.base_model, max_seq_length=args.max_seq_length)


def scores(evaluator, model) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean of each metric, ``{metric: {query_id: score}}``): the library's per-query scores (ranx, top 100)."""
    from negsynth_hf.evaluation import per_query

    scored = per_query(evaluator, model, optional=False)
    return {k: statistics.fmean(v.values()) for k, v in scored.items()}, scored


def base_record(seed: int, base_scores: dict[str, float]) -> dict[str, Any]:
    return {
        "variant": "base",
        "seed": seed,
        **base_scores,
        "train_seconds": 0.0,
        "steps": 0,
        "n_train_rows": 0,
        "deterministic": True,
    }


def train_record(
    variant: str, seed: int, args: argparse.Namespace, pairs, train_sets: dict[str, Any], evaluator, work: Path
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Train ``variant`` with ``seed`` (``negsynth_hf.training.train``) and score the merged model."""
    from negsynth_hf.training import train

    spec = VARIANT_SPECS[variant]
    run_dir = work / "runs" / f"{variant}-seed{seed}"
    model = load_base(args)
    result = train(
        train_sets[spec["dataset"]],
        base_model=args.base_model,
        config=train_config(variant, args),
        output_dir=run_dir,
        seed=seed,
        model=model,
        save=args.keep_models,
        # training rows are the pairs rows, in order (build_dataset keeps every row)
        known_positives=pairs["known_positives"] if args.known_positive_batches else None,
    )
    eval_start = time.perf_counter()
    metrics, per_query = scores(evaluator, model)  # ``train`` merged the LoRA weights into ``model``
    if not args.keep_models:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "variant": variant,
        "seed": seed,
        **metrics,
        "train_seconds": result.train_seconds,
        "eval_seconds": round(time.perf_counter() - eval_start, 1),
        "steps": result.steps,
        "n_train_rows": result.train_rows,
        "training_set": spec["dataset"],
        "labels": spec["labels"],
        "loss": result.loss_name,
        "loss_config": result.loss_config,
        "final_train_loss": next(
            (h.get("train_loss") for h in reversed(result.log_history) if "train_loss" in h), None
        ),
    }, per_query


if __name__ == "__main__":
    main()
