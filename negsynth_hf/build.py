"""``build_dataset``: mine -> synthesize -> verify -> weight, in one call, without losing a row.

The result holds two configs of one dataset:

- ``train``: fixed columns ``anchor, positive, negative_1..negative_{M+G}, labels`` (mined first, then
  generated; ``labels`` = :func:`negsynth_hf.labels.encode_negative_labels`), ready for
  ``SentenceTransformerTrainer`` with :class:`~negsynth_hf.losses.CausalNegLoss`;
- ``provenance``: one row per negative slot (row, query id, column, source, status, generator model and
  prompt version, violated requirement, strategy, explanation, similarities, hardness, weight and reason, flags).

Fill / masking design (fixed column count, no row lost): every row gets exactly ``M`` mined and ``G``
generated slots. A slot with nothing usable holds a *filler* with weight 0:

- ``filled``: the row had fewer mined negatives (mining margins) or fewer generated ones (the LLM failed or
  wrote fewer than ``G``);
- ``masked``: a generated negative failed the false-negative guard; the rejected text stays in provenance
  (``original_text``) but is NOT written to the training column.

A filler is one of the row's own mined negatives, cycled in rank order; a row without any mined negative
takes a mined negative (or, with ``M = 0``, a positive) of another query, chosen with ``seed``. So every
training text is a real corpus document that does not answer the query: weight 0 masks it in CausalNegLoss,
and a loss that ignores the weights (plain MNRL) sees only a repeated genuine negative, never a false
negative or an empty string (``""`` would make NO_DUPLICATES batches collide across rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negsynth_hf.labels import LABEL_COLUMN, encode_negative_labels
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives, generator_description

logger = logging.getLogger(__name__)

TRAIN_CONFIG = "train"
PROVENANCE_CONFIG = "provenance"
EMBEDDED_RETRIEVER_ID = "sentence-transformers/all-MiniLM-L6-v2 (embedded)"


# ------------------------------------------------------------------------------------------ results
@dataclass
class BuildSummary:
    """Counts, probe AUCs and stage timings of one build (also printed as a table at the end)."""

    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    generator_stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "weights": {k: _json_float(v) for k, v in self.weights.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "generator_stats": dict(self.generator_stats),
        }

    def to_markdown(self) -> str:
        lines = ["| Count | Value |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in self.counts.items()]
        lines += ["", "| Weights / probe | Value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.weights.items()]
        lines += ["", "| Stage | Seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in self.timings.items()]
        if self.generator_stats:
            lines += ["", "| LLM calls | Value |", "|---|---:|"]
            lines += [f"| {k} | {v:,} |" for k, v in self.generator_stats.items()]
        return "\n".join(lines)


def _json_float(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


@dataclass
class BuildResult:
    """What :func:`build_dataset` returns.

    Attributes:
        train: the training config (``anchor, positive, negative_1..N, labels``).
        provenance: one row per negative slot of ``train``.
        summary: counts, probe AUCs before/after weighting, stage timings.
        config: JSON-safe build configuration (retriever, generator, strategy, margins, switches, seed,
            package and prompt versions; never an API key).
        num_mined / num_generated: ``M`` and ``G`` (negative columns = ``M + G``).
    """

    train: Any
    provenance: Any
    summary: BuildSummary
    config: dict[str, Any]
    num_mined: int
    num_generated: int

    @property
    def configs(self) -> dict[str, Any]:
        return {TRAIN_CONFIG: self.train, PROVENANCE_CONFIG: self.provenance}

    def to_dataset_dict(self) -> Any:
        """``DatasetDict({"train": ..., "provenance": ...})``."""
        from datasets import DatasetDict

        return DatasetDict(self.configs)

    def __getitem__(self, name: str) -> Any:
        return self.configs[name]

    def training_dataset(self, *, num_mined: int | None = None, num_generated: int | None = None) -> Any:
        """The ``train`` config with only the first ``num_mined`` mined and ``num_generated`` generated columns.

        Columns are renumbered ``negative_1..`` and the label column re-encoded, so one expensive build serves
        several ablations (e.g. ``num_generated=0`` for the mined-only baseline on the very same mined negatives).
        """
        m = self.num_mined if num_mined is None else num_mined
        g = self.num_generated if num_generated is None else num_generated
        if not (0 <= m <= self.num_mined and 0 <= g <= self.num_generated):
            raise ValueError(
                f"num_mined must be in [0, {self.num_mined}] and num_generated in [0, {self.num_generated}]."
            )
        if (m, g) == (self.num_mined, self.num_generated):
            return self.train
        n_all = self.num_mined + self.num_generated
        keep = list(range(m)) + list(range(self.num_mined, self.num_mined + g))

        def select(batch: dict[str, list]) -> dict[str, list]:
            out = {"anchor": batch["anchor"], "positive": batch["positive"]}
            for new, old in enumerate(keep, start=1):
                out[f"negative_{new}"] = batch[f"negative_{old + 1}"]
            if keep:
                out[LABEL_COLUMN] = [
                    encode_negative_labels([lab[j] for j in keep], [lab[n_all + j] > 0.5 for j in keep])
                    for lab in batch[LABEL_COLUMN]
                ]
            return out

        return self.train.map(select, batched=True, remove_columns=self.train.column_names, desc="select negatives")

    def to_markdown(self) -> str:
        head = (
            f"## Built dataset: {len(self.train):,} rows, {self.num_mined} mined + {self.num_generated} generated "
            f"negative columns\n\n"
            f"strategy `{self.config.get('strategy')}`, generator `{self.config.get('generator_model_id')}`, "
            f"retriever `{self.config.get('retriever')}`\n\n"
        )
        return head + self.summary.to_markdown() + "\n"

    def save_to_disk(self, path: str | Path) -> None:
        """Save both configs (a ``DatasetDict``) plus ``summary.json``, ``build_config.json`` and ``summary.md``."""
        path = Path(path)
        self.to_dataset_dict().save_to_disk(str(path))
        (path / "summary.json").write_text(json.dumps(self.summary.to_dict(), indent=2) + "\n", encoding="utf-8")
        (path / "build_config.json").write_text(json.dumps(self.config, indent=2, default=str) + "\n", encoding="utf-8")
        (path / "summary.md").write_text(self.to_markdown(), encoding="utf-8")

    @classmethod
    def load_from_disk(cls, path: str | Path) -> BuildResult:
        from datasets import load_from_disk

        path = Path(path)
        dd = load_from_disk(str(path))
        data = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        config = json.loads((path / "build_config.json").read_text(encoding="utf-8"))
        summary = BuildSummary(
            counts=data["counts"],
            weights={k: float("nan") if v is None else v for k, v in data["weights"].items()},
            timings=data["timings"],
            generator_stats=data.get("generator_stats", {}),
        )
        return cls(
            dd[TRAIN_CONFIG], dd[PROVENANCE_CONFIG], summary, config, config["num_mined"], config["num_generated"]
        )


# ------------------------------------------------------------------------------------------ helpers
class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timer.timings[self.name] = self.timer.timings.get(self.name, 0.0) + time.perf_counter() - self.start


def _corpus_list(corpus: Any) -> list[str] | None:
    if corpus is None:
        return None
    if isinstance(corpus, (list, tuple)):
        texts = list(corpus)
    else:  # a datasets.Dataset
        names = getattr(corpus, "column_names", None)
        if names is None:
            raise ValueError(f"corpus must be a list of strings, a Dataset or None, got {type(corpus).__name__}.")
        string_columns = [c for c in names if getattr(corpus.features[c], "dtype", None) in ("string", "large_string")]
        column = "text" if "text" in names else (string_columns[0] if len(string_columns) == 1 else None)
        if column is None:
            raise ValueError(f"corpus Dataset needs a 'text' column (or exactly one string column); has {names}.")
        texts = list(corpus[column])
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"corpus entry {bad[0]} is not a string ({type(texts[bad[0]]).__name__}).")
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        logger.warning("corpus: ignoring %d empty documents.", empty)
    return [t for t in texts if t.strip()]


def _load_retriever(retriever: Any) -> tuple[Any, str, str | None]:
    """(model, id for provenance, cache key or None when the model cannot be identified)."""
    from sentence_transformers import SentenceTransformer

    if retriever is None:
        from negsynth_hf.paths import embedded_retriever_path

        path = str(embedded_retriever_path())
        return SentenceTransformer(path), EMBEDDED_RETRIEVER_ID, path
    if isinstance(retriever, (str, Path)):
        return (
            SentenceTransformer(str(retriever)),
            str(retriever),
            str(Path(retriever).resolve()) if Path(retriever).exists() else str(retriever),
        )
    name = getattr(getattr(retriever, "model_card_data", None), "base_model", None)
    return retriever, name or type(retriever).__name__, name


def _encode(
    model: Any,
    texts: Sequence[str],
    *,
    known: dict[str, np.ndarray],
    query: bool,
    batch_size: int,
    show_progress_bar: bool,
) -> dict[str, np.ndarray]:
    """Normalized embeddings of ``texts`` (queries with ``encode_query``, documents with ``encode_document``),
    reusing ``known`` ones (what mining already computed)."""
    out = {t: known[t] for t in texts if t in known}
    todo = list(dict.fromkeys(t for t in texts if t and t not in out))
    if todo:
        encode = getattr(model, "encode_query" if query else "encode_document", model.encode)
        emb = encode(
            todo,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress_bar,
        )
        out.update(zip(todo, np.asarray(emb, dtype=np.float32), strict=True))
    return out


# ------------------------------------------------------------------------------------------ entry point
def build_dataset(
    pairs: Any,
    *,
    corpus: list[str] | Any | None = None,
    retriever: Any = None,
    generator: Any = None,
    strategy: Literal["counterfactual", "naive", "query_edit"] = "counterfactual",
    profile: Any = "generic",
    num_mined: int = 15,
    num_generated: int | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = 0.05,
    max_score: float | None = None,
    min_score: float | None = None,
    sampling_strategy: Literal["random", "top"] = "top",
    false_negative_guard: bool = True,
    judges: Sequence[Any] = (),
    source_weights: bool = True,
    hardness: bool = True,
    max_candidates: int = 5,
    temperature: float = 0.2,
    max_new_tokens: int = 512,
    max_attempts: int = 3,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    id_column: str | None = "query_id",
    known_positives_column: str | None = "known_positives",
    title_column: str | None = None,
    map_batch_size: int = 16,
    num_proc: int | None = None,
    encode_batch_size: int = 32,
    probe_splits: int = 5,
    seed: int = 0,
    show_progress_bar: bool = True,
    cache_dir: str | None = None,
    query_editor: Literal["llm", "rules", "llm_then_rules"] = "llm",
) -> BuildResult:
    """Build a training set with ``M`` mined and ``G`` generated negatives per (anchor, positive) row.

    Stages: mine (``sentence_transformers.util.mine_hard_negatives`` with the given range/margins/sampling,
    ``use_faiss=False``) -> synthesize (:class:`CounterfactualNegatives` via ``Dataset.map``; mined negatives
    are the rewrite candidates) -> verify (:func:`negsynth_hf.verify.verify_negatives`) -> weight
    (:mod:`negsynth_hf.weighting`) -> assemble (fixed columns, fillers; see the module docstring).

    Args:
        pairs: a ``datasets.Dataset`` with ``anchor_column`` and ``positive_column`` (other columns, e.g.
            ``query_id``/``positive_id``, go to provenance only).
        corpus: documents to mine from (list of strings, or a Dataset with a ``text`` column); ``None`` mines
            from the positives, as ``mine_hard_negatives`` does.
        retriever: SentenceTransformer or path/id used for mining, verification and probe features.
            ``None``: the embedded all-MiniLM-L6-v2.
        generator: a :class:`~negsynth_hf.generators.GeneratorConfig` (or an object with ``build()``).
            ``None`` means NO synthesis: a mined-only dataset (``num_generated`` must then be 0 or unset).
        strategy / profile / max_candidates / temperature / max_new_tokens / max_attempts: the Synthesizer's.
        query_editor: query_edit's editor, ``"llm"``, ``"rules"`` (edits made in code; for models too small to
            edit) or ``"llm_then_rules"`` (see :class:`~negsynth_hf.synthesis.Synthesizer`).
        num_mined: ``M`` mined negative columns (0: none, no mining).
        num_generated: ``G`` generated columns; default 3 with a generator, 0 without.
        range_min / range_max / absolute_margin / relative_margin / max_score / min_score / sampling_strategy:
            passed to ``mine_hard_negatives``. The same absolute/relative margins are the false-negative
            guard's rule for generated negatives (a generated negative must clear the bar a mined one does);
            with both ``None`` the guard uses ``absolute_margin=0`` (must score below the positive).
        false_negative_guard: verify generated negatives (retriever margins, near-duplicates, ``judges``);
            False keeps every generated text with its flags recorded (the naive baseline).
        judges: extra :class:`~negsynth_hf.verify.NegativeJudge` objects (``CrossEncoderJudge``, ``LLMJudge``).
        source_weights: importance weights from the cross-fitted source probe (False: generated weight 1;
            the probe AUC is still reported).
        hardness: record each generated negative's percentile within its row's mined similarities.
        id_column / title_column: optional query-id column (provenance) and positive-title column (prompts).
        known_positives_column: optional column with, per row, a list of texts that must never be a negative of
            that row (e.g. every judged-relevant document of the query, as
            :func:`negsynth_hf.data.pairs_dataset` writes): excluded from mining and from fillers. Used when
            the column exists; how many mining would otherwise have returned is counted
            (``known_positives_excluded``).
        map_batch_size / num_proc: ``Dataset.map`` settings of the synthesis stage.
        seed: synthesis seed, filler choice and probe folds.
        show_progress_bar: progress bars and the final printed summary table.
        cache_dir: where mining embeddings and the synthesis stage's ``map`` output are cached (rerun = cache
            hit). ``None``: the user cache dir (:func:`negsynth_hf.paths.cache_dir`); ``""`` disables. The LLM
            response cache is the generator config's own ``cache_dir``.

    Returns:
        :class:`BuildResult` (``.train``, ``.provenance``, ``.summary``, ``.config``, ``.to_markdown()``).
    """
    from datasets import Dataset

    from negsynth_hf import __version__
    from negsynth_hf.mining import mine_negatives

    timer = _Timer()
    if not isinstance(pairs, Dataset):
        raise ValueError(f"pairs must be a datasets.Dataset, got {type(pairs).__name__}.")
    for column in (anchor_column, positive_column):
        if column not in pairs.column_names:
            raise ValueError(f"pairs has no column {column!r}; columns: {pairs.column_names}.")
    if len(pairs) == 0:
        raise ValueError("pairs is empty.")
    anchors, positives = list(pairs[anchor_column]), list(pairs[positive_column])
    for name, values in ((anchor_column, anchors), (positive_column, positives)):
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"row {i}: column {name!r} must be a non-empty string, got {v!r}.")
    if num_generated is None:
        num_generated = 0 if generator is None else 3
    if generator is None and num_generated > 0:
        raise ValueError(
            "generator=None means no synthesis (a mined-only dataset); pass generator=GeneratorConfig(...) to "
            f"synthesize, or num_generated=0 (got {num_generated})."
        )
    if num_mined < 0 or num_generated < 0:
        raise ValueError(f"num_mined and num_generated must be >= 0, got {num_mined} and {num_generated}.")
    n, m, g = len(pairs), int(num_mined), int(num_generated)
    query_ids = list(pairs[id_column]) if id_column and id_column in pairs.column_names else [None] * n
    known_positives = None
    if known_positives_column and known_positives_column in pairs.column_names:
        known_positives = _known_positives(pairs[known_positives_column], known_positives_column)
    positive_ids = list(pairs["positive_id"]) if "positive_id" in pairs.column_names else [None] * n
    if cache_dir is None:
        from negsynth_hf.paths import cache_dir as default_cache_dir

        cache_root: Path | None = default_cache_dir()
    else:
        cache_root = Path(cache_dir) if cache_dir else None

    # 1. retriever ---------------------------------------------------------------------------------------
    with timer.stage("load_retriever"):
        model, retriever_id, retriever_key = _load_retriever(retriever)

    # 2. mine -----------------------------------------------------------------------------------------------
    mined_texts: list[list[str]] = [[] for _ in range(n)]
    known_q: dict[str, np.ndarray] = {}
    known_d: dict[str, np.ndarray] = {}
    mined_log = ""
    mining_counts = {"rows_mined_short": 0, "rows_mined_empty": 0}
    if m > 0:
        emb_cache = None
        if cache_root is not None and retriever_key:
            emb_cache = str(cache_root / "embeddings" / hashlib.sha256(retriever_key.encode()).hexdigest()[:16])
        with timer.stage("mine"):
            mined = mine_negatives(
                pairs,
                model=model,
                num_negatives=m,
                corpus=_corpus_list(corpus),
                anchor_column=anchor_column,
                positive_column=positive_column,
                known_positives=known_positives,
                range_min=range_min,
                range_max=range_max,
                max_score=max_score,
                min_score=min_score,
                absolute_margin=absolute_margin,
                relative_margin=relative_margin,
                sampling_strategy=sampling_strategy,
                batch_size=encode_batch_size,
                cache_folder=emb_cache,
                verbose=False,
            )
        mined_texts, mined_log = mined.negatives, mined.log
        known_q, known_d = mined.query_embeddings, mined.document_embeddings
        mining_counts = {"rows_mined_short": mined.rows_short, "rows_mined_empty": mined.rows_empty}
        if known_positives is not None:
            mining_counts["known_positives_excluded"] = mined.known_positives_excluded or 0

    # 3. synthesize ------------------------------------------------------------------------------------------
    generated: list[list[str]] = [[] for _ in range(n)]
    gen_records: list[dict[str, Any]] = [{} for _ in range(n)]
    transform = None
    if g > 0:
        transform = CounterfactualNegatives(
            generator,
            strategy=strategy,
            profile=profile,
            num_generated=g,
            max_candidates=max_candidates,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            max_attempts=max_attempts,
            seed=seed,
            query_editor=query_editor,
            query_column="anchor",
            positive_column="positive",
            candidate_columns=[f"negative_{j}" for j in range(1, m + 1)],
            title_column="title" if title_column else None,
        )
        work = {
            "anchor": anchors,
            "positive": positives,
            **{f"negative_{j}": [row[j - 1] if j <= len(row) else "" for row in mined_texts] for j in range(1, m + 1)},
        }
        if title_column:
            if title_column not in pairs.column_names:
                raise ValueError(f"title_column {title_column!r} not in pairs; columns: {pairs.column_names}.")
            work["title"] = [t or "" for t in pairs[title_column]]
        work_ds = Dataset.from_dict(work)
        map_kwargs: dict[str, Any] = {}
        if cache_root is not None:
            from datasets.fingerprint import Hasher

            key = Hasher.hash([work_ds._fingerprint, transform])
            folder = cache_root / "synthesis"
            folder.mkdir(parents=True, exist_ok=True)
            map_kwargs = {"cache_file_name": str(folder / f"{key}.arrow"), "load_from_cache_file": True}
        with timer.stage("synthesize"):
            out = work_ds.map(
                transform,
                batched=True,
                with_indices=True,  # errors name the pairs row (work_ds rows are pairs rows)
                batch_size=map_batch_size,
                num_proc=num_proc,
                desc=f"synthesis ({strategy})",
                **map_kwargs,
            )
        columns = [f"generated_{j}" for j in range(1, g + 1)]
        table = {c: out[c] for c in columns}
        for i, raw in enumerate(out[PROVENANCE_COLUMN]):
            gen_records[i] = json.loads(raw)
            generated[i] = [table[c][i] for c in columns if table[c][i]]

    # 4. embed + verify ----------------------------------------------------------------------------------------
    all_gen = [(i, k, t) for i in range(n) for k, t in enumerate(generated[i])]
    with timer.stage("embed"):
        qemb = _encode(model, anchors, known=known_q, query=True, batch_size=encode_batch_size, show_progress_bar=False)
        docs = positives + [t for row in mined_texts for t in row] + [t for _, _, t in all_gen]
        emb = _encode(
            model, docs, known=known_d, query=False, batch_size=encode_batch_size, show_progress_bar=show_progress_bar
        )
    from negsynth_hf.verify import verify_negatives

    with timer.stage("verify"):
        guard_abs, guard_rel = absolute_margin, relative_margin
        if guard_abs is None and guard_rel is None:
            guard_abs = 0.0
        if all_gen:
            dim = next(iter(emb.values())).shape[0]
            zeros = np.zeros(dim, dtype=np.float32)

            def stack(values: Sequence[str], table: dict[str, np.ndarray] = emb) -> np.ndarray:
                return np.stack([table.get(v, zeros) for v in values])

            gq = [anchors[i] for i, _, _ in all_gen]
            gp = [positives[i] for i, _, _ in all_gen]
            gt = [t for _, _, t in all_gen]
            verification = verify_negatives(
                gq,
                gp,
                gt,
                embeddings=(stack(gq, qemb), stack(gp), stack(gt)),
                absolute_margin=guard_abs,
                relative_margin=guard_rel,
                judges=judges if false_negative_guard else (),
            )
            gen_valid = verification.valid if false_negative_guard else np.ones(len(all_gen), dtype=bool)
        else:
            verification, gen_valid = None, np.zeros(0, dtype=bool)

    def sim(a: str, b: str) -> float:
        """Cosine of a query (``qemb``) or document (``emb``) ``a`` with document ``b``."""
        left = qemb.get(a) if a in qemb else emb.get(a)
        if left is None or b not in emb:
            return float("nan")
        return float(np.dot(left, emb[b]))

    # 5. weight -------------------------------------------------------------------------------------------------
    from negsynth_hf.weighting import hardness_percentile
    from negsynth_hf.weighting import source_weights as fit_source_weights

    with timer.stage("weight"):
        items = [(i, "mined", k, t) for i in range(n) for k, t in enumerate(mined_texts[i])]
        items += [(i, "generated", k, t) for (i, k, t), ok in zip(all_gen, gen_valid, strict=True) if ok]
        probe_texts = [t for *_, t in items]
        sw = fit_source_weights(
            probe_texts,
            [src == "generated" for _, src, _, _ in items],
            [i for i, *_ in items],
            embeddings=np.stack([emb[t] for t in probe_texts]) if probe_texts else None,
            enabled=source_weights,
            n_splits=probe_splits,
            seed=seed,
        )
        gen_weight: dict[tuple[int, int], tuple[float, float]] = {}
        for (i, src, k, _), w, p in zip(items, sw.weights, sw.proba_generated, strict=True):
            if src == "generated":
                gen_weight[(i, k)] = (float(w), float(p))
        mined_sims = [[sim(anchors[i], t) for t in mined_texts[i]] for i in range(n)]

    # 6. assemble -----------------------------------------------------------------------------------------------
    rng = random.Random(seed)
    with timer.stage("assemble"):
        train_rows: dict[str, list] = {"anchor": anchors, "positive": positives}
        neg_cols = [[] for _ in range(m + g)]
        labels: list[list[float]] = []
        prov: dict[str, list] = {k: [] for k in _PROVENANCE_FIELDS}
        counts = {
            "rows_in": n,
            "rows_out": n,
            "mined_requested": n * m,
            "mined": sum(len(r) for r in mined_texts),
            **mining_counts,
            "mined_filled": 0,
            "generated_requested": n * g,
            "rows_generation_failed": 0,
            "generated": len(all_gen),
            "generated_dropped_extra": 0,
            "generated_valid": int(gen_valid.sum()),
            "generated_masked": int((~gen_valid).sum()),
            "masked_margin": 0,
            "masked_near_duplicate": 0,
            "masked_judge": 0,
            "flagged_contains_query": 0,
            "generated_filled": 0,
            "llm_calls": 0,
            "llm_cached_calls": 0,
        }
        if verification is not None and false_negative_guard:
            counts["masked_margin"] = verification.counts["margin"]
            counts["masked_near_duplicate"] = verification.counts["near_duplicate"]
            counts["masked_judge"] = verification.counts["judge"]
        if verification is not None:
            counts["flagged_contains_query"] = verification.counts["contains_query"]
        gen_index = {(i, k): idx for idx, (i, k, _) in enumerate(all_gen)}
        donors = _donor_pool(anchors, positives, mined_texts)
        for i in range(n):
            record = gen_records[i]
            counts["generated_dropped_extra"] += int(record.get("dropped_extra", 0) or 0)
            counts["llm_calls"] += int(record.get("llm_calls", 0) or 0)
            counts["llm_cached_calls"] += int(record.get("cached_calls", 0) or 0)
            if g and record.get("failure_reason"):
                counts["rows_generation_failed"] += 1
            fillers = _fillers(i, anchors, mined_texts, donors, rng, known_positives[i] if known_positives else ())
            weights: list[float] = []
            flags_gen: list[bool] = []
            slot = 0
            # mined block
            for j in range(m):
                if j < len(mined_texts[i]):
                    text = mined_texts[i][j]
                    entry = _entry(i, f"negative_{slot + 1}", "mined", "ok", text, weight=1.0, reason="mined negative")
                    entry.update(mined_rank=j + 1, sim_query=mined_sims[i][j], sim_positive=sim(positives[i], text))
                else:
                    text = next(fillers)
                    counts["mined_filled"] += 1
                    entry = _entry(
                        i,
                        f"negative_{slot + 1}",
                        "mined",
                        "filled",
                        text,
                        weight=0.0,
                        reason=f"filled: only {len(mined_texts[i])} mined negatives passed the mining filters",
                    )
                neg_cols[slot].append(text)
                weights.append(entry["weight"])
                flags_gen.append(False)
                _append(prov, entry, query_ids[i], positive_ids[i], sim(anchors[i], positives[i]))
                slot += 1
            # generated block: valid first, then masked, then filled
            negs = record.get("negatives", [])
            order = [k for k in range(len(generated[i])) if gen_valid[gen_index[(i, k)]]]
            order += [k for k in range(len(generated[i])) if not gen_valid[gen_index[(i, k)]]]
            for j in range(g):
                meta = {}
                if j < len(order):
                    k = order[j]
                    idx = gen_index[(i, k)]
                    gtext = generated[i][k]
                    meta = negs[k] if k < len(negs) else {}
                    vflags = list(verification.flags[idx]) if verification is not None else []
                    common = {
                        "sim_query": float(verification.sim_query[idx]),
                        "sim_positive": float(verification.sim_positive[idx]),
                        "hardness_percentile": hardness_percentile(float(verification.sim_query[idx]), mined_sims[i])
                        if hardness
                        else float("nan"),
                        "flags": sorted(set(meta.get("flags", [])) | set(vflags)),
                    }
                    if gen_valid[idx]:
                        w, p = gen_weight.get((i, k), (1.0, float("nan")))
                        reason = (
                            f"source-probe importance weight (p_generated={p:.3f})"
                            if source_weights and sw.n_splits
                            else "generated negative (source weights off)"
                            if not source_weights
                            else "generated negative (probe not fitted: too few items)"
                        )
                        text = gtext
                        entry = _entry(i, f"negative_{slot + 1}", "generated", "ok", text, weight=w, reason=reason)
                        entry["probe_p_generated"] = p
                    else:
                        text = next(fillers)
                        entry = _entry(
                            i,
                            f"negative_{slot + 1}",
                            "generated",
                            "masked",
                            text,
                            weight=0.0,
                            reason=f"masked: {verification.reasons[idx]}; slot holds a filler",
                        )
                        entry["original_text"] = gtext
                    entry.update(common)
                else:
                    text = next(fillers)
                    counts["generated_filled"] += 1
                    why = record.get("failure_reason") or f"the generator wrote {len(generated[i])} of {g}"
                    entry = _entry(
                        i, f"negative_{slot + 1}", "generated", "filled", text, weight=0.0, reason=f"filled: {why}"
                    )
                entry.update(
                    generator_model_id=record.get("model_id"),
                    prompt_version=record.get("prompt_version"),
                    strategy=record.get("strategy"),
                    strategy_type=meta.get("strategy_type"),
                    violated_requirement=meta.get("violated_requirement"),
                    explanation=meta.get("explanation"),
                    edited_query=meta.get("edited_query"),
                    rewrote_candidate=meta.get("rewrote_candidate"),
                    row_failure_reason=record.get("failure_reason"),
                )
                neg_cols[slot].append(text)
                weights.append(entry["weight"])
                flags_gen.append(True)
                _append(prov, entry, query_ids[i], positive_ids[i], sim(anchors[i], positives[i]))
                slot += 1
            labels.append(encode_negative_labels(weights, flags_gen))
        for j, col in enumerate(neg_cols, start=1):
            train_rows[f"negative_{j}"] = col
        if m + g:
            train_rows[LABEL_COLUMN] = labels
        train = Dataset.from_dict(train_rows)
        provenance = Dataset.from_dict(prov, features=_provenance_features())

    gen_w = [w for w, s in zip(prov["weight"], prov["source"], strict=True) if s == "generated"]
    gen_status = [st for st, s in zip(prov["status"], prov["source"], strict=True) if s == "generated"]
    produced = [w for w, st in zip(gen_w, gen_status, strict=True) if st != "filled"]
    weights_summary = {
        "probe_auc_before": sw.auc_before,
        "probe_auc_after": sw.auc_after,
        "effective_generated_share": float(np.sum(produced) / len(produced)) if produced else float("nan"),
        "effective_generated_share_of_valid": sw.effective_generated_share,
        "mean_generated_weight_all_slots": float(np.mean(gen_w)) if gen_w else float("nan"),
        "masked_or_filled_fraction": (
            float(np.mean([w == 0 for w in prov["weight"]])) if prov["weight"] else float("nan")
        ),
    }
    hard = [
        h
        for h, s in zip(prov["hardness_percentile"], prov["source"], strict=True)
        if s == "generated" and h is not None
    ]
    if hard:
        weights_summary["median_generated_hardness_percentile"] = float(np.median(hard))
    gen_stats: dict[str, int] = {}
    if transform is not None and num_proc in (None, 1) and "generator" in transform._live:
        stats = getattr(transform._live["generator"], "stats", None)
        gen_stats = dict(stats) if isinstance(stats, dict) else {}
    summary = BuildSummary(counts=counts, weights=weights_summary, timings=timer.timings, generator_stats=gen_stats)
    config = {
        "package_version": __version__,
        "num_mined": m,
        "num_generated": g,
        "retriever": retriever_id,
        "generator": generator_description(generator),
        "generator_model_id": next((r.get("model_id") for r in gen_records if r.get("model_id")), None),
        "strategy": strategy if g else None,
        "transform": transform.config_dict() if transform is not None else None,
        "mining": {
            "range_min": range_min,
            "range_max": range_max,
            "absolute_margin": absolute_margin,
            "relative_margin": relative_margin,
            "max_score": max_score,
            "min_score": min_score,
            "sampling_strategy": sampling_strategy,
            "use_faiss": False,
            "corpus": "positives" if corpus is None else "given",
            "known_positives_column": known_positives_column if known_positives is not None else None,
        },
        "guard": {
            "enabled": false_negative_guard,
            "absolute_margin": guard_abs,
            "relative_margin": guard_rel,
            "judges": [getattr(j, "name", type(j).__name__) for j in judges],
        },
        "source_weights": source_weights,
        "hardness": hardness,
        "probe_splits": probe_splits,
        "seed": seed,
        "label_layout": "[w_1..w_N, g_1..g_N] (negsynth_hf.labels)",
        "mining_log": mined_log,
    }
    result = BuildResult(train, provenance, summary, config, m, g)
    if show_progress_bar:
        print(result.to_markdown())
    return result


# ------------------------------------------------------------------------------------------ assembly helpers
_PROVENANCE_FIELDS = (
    "row",
    "query_id",
    "positive_id",
    "column",
    "source",
    "status",
    "text",
    "original_text",
    "mined_rank",
    "generator_model_id",
    "prompt_version",
    "strategy",
    "strategy_type",
    "violated_requirement",
    "explanation",
    "edited_query",
    "rewrote_candidate",
    "flags",
    "sim_query",
    "sim_positive",
    "sim_query_positive",
    "hardness_percentile",
    "probe_p_generated",
    "weight",
    "weight_reason",
    "row_failure_reason",
)


def _provenance_features() -> Any:
    from datasets import Features, Sequence, Value

    string = Value("string")
    f64 = Value("float64")
    return Features(
        {
            "row": Value("int64"),
            "query_id": string,
            "positive_id": string,
            "column": string,
            "source": string,
            "status": string,
            "text": string,
            "original_text": string,
            "mined_rank": Value("int32"),
            "generator_model_id": string,
            "prompt_version": string,
            "strategy": string,
            "strategy_type": string,
            "violated_requirement": string,
            "explanation": string,
            "edited_query": string,
            "rewrote_candidate": Value("bool"),
            "flags": Sequence(string),
            "sim_query": f64,
            "sim_positive": f64,
            "sim_query_positive": f64,
            "hardness_percentile": f64,
            "probe_p_generated": f64,
            "weight": f64,
            "weight_reason": string,
            "row_failure_reason": string,
        }
    )


def _entry(row: int, column: str, source: str, status: str, text: str, *, weight: float, reason: str) -> dict:
    return {
        "row": row,
        "column": column,
        "source": source,
        "status": status,
        "text": text,
        "weight": float(weight),
        "weight_reason": reason,
    }


def _append(prov: dict[str, list], entry: dict[str, Any], query_id: Any, positive_id: Any, sim_qp: float) -> None:
    entry = {
        **entry,
        "query_id": None if query_id is None else str(query_id),
        "positive_id": None if positive_id is None else str(positive_id),
        "sim_query_positive": sim_qp,
    }
    for key in _PROVENANCE_FIELDS:
        value = entry.get(key)
        if key == "flags":
            value = list(value or [])
        elif isinstance(value, float) and math.isnan(value):
            value = None
        prov[key].append(value)


def _known_positives(column: Sequence[Any], name: str) -> list[list[str]]:
    """The known-positives column as lists of strings (``None`` = no known positive); errors name the row."""
    out: list[list[str]] = []
    for i, value in enumerate(column):
        if value is None:
            out.append([])
            continue
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            raise ValueError(
                f"row {i}: column {name!r} must be a list of document texts (or None), got {value!r:.80}; set "
                "known_positives_column=None to build without it."
            )
        out.append(list(value))
    return out


def _donor_pool(anchors: list[str], positives: list[str], mined: list[list[str]]) -> list[tuple[str, str]]:
    """(query, text) pairs fillers may borrow from other rows: mined negatives, else positives."""
    pool = [(anchors[i], t) for i in range(len(anchors)) for t in mined[i]]
    return pool or list(zip(anchors, positives, strict=True))


def _fillers(
    i: int,
    anchors: list[str],
    mined: list[list[str]],
    donors: list[tuple[str, str]],
    rng: random.Random,
    exclude: Sequence[str] = (),
):
    """Endless filler texts for row ``i``: its own mined negatives in rank order, else another query's text
    (never one of ``exclude``, the row's known positives)."""
    own = mined[i]
    if own:
        while True:
            yield from own
    excluded = set(exclude)
    candidates = [t for q, t in donors if q != anchors[i] and t not in excluded]
    if not candidates:
        raise ValueError(
            f"row {i}: no filler available (no mined negative and no other query's document); "
            "use num_mined > 0 or more than one distinct query."
        )
    while True:
        yield candidates[rng.randrange(len(candidates))]
