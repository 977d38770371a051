"""``build_dataset``: mine -> synthesize -> verify -> weight -> assemble, in one call, without losing a row.

The result (:class:`~negsynth_hf.artifacts.BuiltDataset`) holds two configs of one dataset:

- ``train``: fixed columns ``anchor, positive, negative_1..negative_{M+G}, labels`` (mined first, then
  generated; ``labels`` = :func:`negsynth_hf.labels.encode_negative_labels`), ready for
  ``SentenceTransformerTrainer`` with :class:`~negsynth_hf.losses.CausalNegLoss`;
- ``provenance``: one row per negative slot (:class:`~negsynth_hf.stages.assemble.SlotRecord`: source, status,
  generator model and prompt version, violated requirement, similarities, hardness, weight and reason, flags).

This module only orders the stages (:mod:`negsynth_hf.stages`, one module each) and records the build
config; how slots are filled when a negative is missing or rejected is :mod:`negsynth_hf.stages.assemble`'s.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, NamedTuple

from negsynth_hf.artifacts import BuildSummary, BuiltDataset
from negsynth_hf.stages import assemble as assembly
from negsynth_hf.stages import guard, inputs, mine, synthesize, weight
from negsynth_hf.stages.mine import EMBEDDED_RETRIEVER_ID, MiningOptions
from negsynth_hf.stages.shards import FrontStages, ShardedBuild
from negsynth_hf.synthesis.config import DEFAULTS as SYNTHESIS
from negsynth_hf.synthesis.config import QueryEditor, Strategy, SynthesisConfig
from negsynth_hf.transform import CounterfactualNegatives, default_generator_config, generator_description
from negsynth_hf.verification.mined import MinedJudge
from negsynth_hf.verification.policy import NAMED_MODES, GuardPolicy

__all__ = [
    "EMBEDDED_RETRIEVER_ID",
    "BuildSummary",
    "BuiltDataset",
    "CounterfactualNegatives",
    "ShardedBuild",
    "build_dataset",
    "build_shard",
]

TRAIN_CONFIG = "train"
PROVENANCE_CONFIG = "provenance"


@dataclass(frozen=True)
class BuildOptions:
    """The switches of one build that are neither synthesis nor mining settings."""

    num_mined: int
    num_generated: int
    guard_policy: GuardPolicy
    source_weights: bool
    hardness: bool
    map_batch_size: int
    num_proc: int | None
    encode_batch_size: int
    probe_splits: int
    seed: int
    show_progress_bar: bool
    cache_root: Path | None
    mined_judge: MinedJudge | None = None  # None: mined negatives are not judged


def build_dataset(
    pairs: Any,
    *,
    corpus: list[str] | Any | None = None,
    retriever: Any = None,
    generator: Any = None,
    strategy: Strategy = SYNTHESIS.strategy,
    profile: Any = SYNTHESIS.profile,
    num_mined: int = 15,
    num_generated: int | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = 0.05,
    max_score: float | None = None,
    min_score: float | None = None,
    sampling_strategy: Literal["random", "top"] = "top",
    guard_policy: str | GuardPolicy = "contrast",
    mined_judge: MinedJudge | None = None,
    source_weights: bool = True,
    hardness: bool = True,
    max_candidates: int = SYNTHESIS.max_candidates,
    temperature: float = SYNTHESIS.temperature,
    max_new_tokens: int | None = SYNTHESIS.max_new_tokens,
    max_attempts: int = SYNTHESIS.max_attempts,
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
    query_editor: QueryEditor = SYNTHESIS.query_editor,
    shards: ShardedBuild | None = None,
) -> BuiltDataset:
    """Build a training set with ``M`` mined and ``G`` generated negatives per (anchor, positive) row.

    Stages (:mod:`negsynth_hf.stages`): mine (``sentence_transformers.util.mine_hard_negatives`` with the given
    range/margins/sampling; exact search, with faiss when it is installed) -> synthesize
    (:class:`CounterfactualNegatives` via ``Dataset.map``; mined negatives are the rewrite candidates) -> verify
    (the guard policy, :mod:`negsynth_hf.verification`) -> weight (:mod:`negsynth_hf.weighting`) -> assemble
    (fixed columns, fillers: :mod:`negsynth_hf.stages.assemble`).
    Synthesis defaults come from :class:`~negsynth_hf.synthesis.SynthesisConfig`.

    Args:
        pairs: a ``datasets.Dataset`` with ``anchor_column`` and ``positive_column`` (other columns, e.g.
            ``query_id``/``positive_id``, go to provenance only).
        corpus: documents to mine from (list of strings, or a Dataset with a ``text`` column); ``None`` mines
            from the positives, as ``mine_hard_negatives`` does.
        retriever: SentenceTransformer or path/id used for mining, verification and probe features.
            ``None``: the embedded all-MiniLM-L6-v2.
        generator: a :class:`~negsynth_hf.generators.GeneratorConfig` (or an object with ``build()``).
            ``None`` means NO synthesis: a mined-only dataset (``num_generated`` must then be 0 or unset).
        strategy / profile / max_candidates / temperature / max_new_tokens / max_attempts: the
            :class:`~negsynth_hf.synthesis.SynthesisConfig`'s.
        query_editor: query_edit's editor, ``"llm"``, ``"rules"`` (edits made in code; for models too small to
            edit) or ``"llm_then_rules"`` (see :class:`~negsynth_hf.synthesis.Synthesizer`).
        num_mined: ``M`` mined negative columns (0: none, no mining).
        num_generated: ``G`` generated columns; default 3 with a generator, 0 without.
        range_min / range_max / absolute_margin / relative_margin / max_score / min_score / sampling_strategy:
            passed to ``mine_hard_negatives``. The same absolute/relative margins are the false-negative
            guard's margin band for generated negatives (a generated negative must clear the bar a mined one
            does); with both ``None`` the guard uses ``absolute_margin=0`` (must score below the positive).
        guard_policy: the false-negative guard, which rule, check or judge decides on generated negatives:
            ``"contrast"`` (default: a query-edit negative is kept when its edit makes sense and changes the
            meaning, its passage carries the edit, and the retriever finds it on topic and closer to the edited
            query than to the original; other negatives keep the margin rule; no LLM), ``"margin"``
            (near-duplicates of the positive and texts inside the margin band are masked), ``"checks"`` (inside
            the band, deterministic checks of the query edit decide; no LLM), ``"off"`` (keep every generated
            text, flags recorded: the naive baseline), or a :class:`~negsynth_hf.verification.GuardPolicy`
            (``mode="judge"``/``"combined"`` carry a judge: :class:`~negsynth_hf.verification.RelevanceJudge` or
            :class:`~negsynth_hf.verification.CrossEncoderJudge`).
            Every decision is in provenance (``guard_decision``, ``guard_reason``, ``judge_p_relevant``...) and
            counted (``masked_*``, ``guard_*``, ``judge_*``).
        mined_judge: a :class:`~negsynth_hf.verification.MinedJudge` (RLHN): mined negatives its relevance judge
            finds relevant (p >= threshold) are masked (weight 0, text and p in provenance), counted as
            ``mined_masked_judge`` of ``mined_judged``. ``None``: mining's own decision stands.
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
        shards: a multi-process build's :class:`ShardedBuild`: the rows' mined and generated negatives are read
            from the shard files :func:`build_shard` wrote into ``shards.folder`` (one per process, same ``pairs``
            and keywords) instead of being mined and synthesized again, so no LLM request is repeated; the
            cross-row stages (embedding, verification, the source probe, assembly) then run on all rows.
        show_progress_bar: progress bars and the final printed summary table.
        cache_dir: where mining embeddings and the synthesis stage's ``map`` output are cached (rerun = cache
            hit). ``None``: the user cache dir (:func:`negsynth_hf.paths.cache_dir`); ``""`` disables. The LLM
            response cache is the generator config's own ``cache_dir``.

    Returns:
        :class:`~negsynth_hf.artifacts.BuiltDataset` (``.train``, ``.provenance``, ``.summary``, ``.config``,
        ``.known_positives``, ``.to_markdown()``, ``.save(folder)``; ``BuiltDataset.load(folder)`` reads it back).
    """
    settings = dict(locals())  # every keyword, as given (a comprehension would see its own locals)
    plan = _plan(pairs, SimpleNamespace(**{k: v for k, v in settings.items() if k not in ("pairs", "shards")}))
    front = shards.load(plan.rows) if shards is not None else None
    result = run_stages(*plan, front=front)
    if show_progress_bar:
        print(result.to_markdown())
    return result


def build_shard(pairs: Any, *, shards: ShardedBuild, **kwargs: Any) -> Path:
    """One process's share of a multi-process build: mine and synthesize shard ``shards.index`` (contiguous, of
    ``shards.num_shards``) of ``pairs`` and save it into ``shards.folder``; only this shard's LLM requests are sent.

    Every process passes the same ``pairs`` and keywords (those of :func:`build_dataset`); once all shards are
    saved, one process calls ``build_dataset(pairs, ..., shards=ShardedBuild(folder, num_shards))``, which reads
    them instead of mining and synthesizing again.

    Returns:
        The shard file written.
    """
    defaults = _build_defaults()
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"build_shard got keywords build_dataset does not take: {unknown}")
    if shards.index is None:
        raise ValueError("build_shard needs shards.index (this process's shard); build_dataset assembles them.")
    start, stop = shards.rows_of(shards.index, len(pairs))
    if start == stop:  # more processes than rows: nothing to do but say so
        empty = FrontStages(mine.MinedRows.none(0), synthesize.GeneratedRows.none(0))
        return shards.save(empty, anchors=[], positives=[])
    plan = _plan(pairs.select(range(start, stop)), SimpleNamespace(**{**defaults, **kwargs}))
    timings: dict[str, float] = {}
    with _timed(timings, "load_retriever"):
        model = mine.load_retriever(plan.retriever)
    front = _mine_and_synthesize(
        plan.rows, plan.corpus, model, plan.generator, plan.synthesis, plan.mining, plan.options, timings
    )
    return shards.save(front, anchors=plan.rows.anchors, positives=plan.rows.positives)


def _build_defaults() -> dict[str, Any]:
    """``build_dataset``'s keyword defaults (the one list of build settings)."""
    params = inspect.signature(build_dataset).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name != "shards"}


class _Plan(NamedTuple):
    """``run_stages``' arguments, checked and resolved from ``build_dataset``'s keywords."""

    rows: inputs.PairRows
    corpus: Any
    retriever: Any
    generator: Any
    synthesis: SynthesisConfig | None
    mining: MiningOptions
    options: BuildOptions


def _plan(pairs: Any, a: SimpleNamespace) -> _Plan:
    g = _num_generated(a.generator, a.num_generated)
    rows = inputs.read_pairs(
        pairs,
        inputs.PairColumns(a.anchor_column, a.positive_column, a.id_column, a.known_positives_column, a.title_column),
    )
    if g is None:
        raise ValueError(
            "generator=None means no synthesis (a mined-only dataset); pass generator=GeneratorConfig(...) to "
            f"synthesize, or num_generated=0 (got {a.num_generated})."
        )
    if a.num_mined < 0 or g < 0:
        raise ValueError(f"num_mined and num_generated must be >= 0, got {a.num_mined} and {g}.")
    synthesis = None
    if g > 0:
        synthesis = SynthesisConfig(
            strategy=a.strategy,
            profile=a.profile,
            num_negatives=g,
            max_candidates=a.max_candidates,
            temperature=a.temperature,
            max_new_tokens=a.max_new_tokens,
            max_attempts=a.max_attempts,
            seed=a.seed,
            query_editor=a.query_editor,
        ).resolve(a.generator if a.generator is not None else default_generator_config())  # "auto" -> what runs
    mining = MiningOptions(
        a.range_min, a.range_max, a.absolute_margin, a.relative_margin, a.max_score, a.min_score, a.sampling_strategy
    )
    options = BuildOptions(
        int(a.num_mined), g, _guard_policy(a.guard_policy), a.source_weights, a.hardness, a.map_batch_size,
        a.num_proc, a.encode_batch_size, a.probe_splits, a.seed, a.show_progress_bar, _cache_root(a.cache_dir),
        a.mined_judge,
    )  # fmt: skip
    return _Plan(rows, a.corpus, a.retriever, a.generator, synthesis, mining, options)


def _guard_policy(policy: str | GuardPolicy) -> GuardPolicy:
    """A :class:`GuardPolicy` from a policy or a mode name (modes that need a judge need a GuardPolicy)."""
    if isinstance(policy, GuardPolicy):
        return policy
    if isinstance(policy, str) and policy in NAMED_MODES:
        return GuardPolicy(mode=policy)  # type: ignore[arg-type]
    hint = " (YAML reads an unquoted off as false: write guard_policy: 'off')" if policy is False else ""
    raise ValueError(
        f"guard_policy must be one of {list(NAMED_MODES)} or a GuardPolicy (for 'judge'/'combined': "
        f"GuardPolicy(mode=..., judge=RelevanceJudge(...) or CrossEncoderJudge(...))), got {policy!r}{hint}"
    )


def _num_generated(generator: Any, num_generated: int | None) -> int | None:
    """``G``: 3 with a generator and 0 without, unless given; ``None`` for the error "G > 0 but no generator"."""
    if num_generated is None:
        return 0 if generator is None else SYNTHESIS.num_negatives
    return None if generator is None and num_generated > 0 else int(num_generated)


def _cache_root(cache_dir: str | None) -> Path | None:
    if cache_dir is None:
        from negsynth_hf.paths import cache_dir as default_cache_dir

        return default_cache_dir()
    return Path(cache_dir) if cache_dir else None


def run_stages(
    rows: inputs.PairRows,
    corpus: Any,
    retriever: Any,
    generator: Any,
    synthesis: SynthesisConfig | None,
    mining: MiningOptions,
    options: BuildOptions,
    *,
    front: FrontStages | None = None,
) -> BuiltDataset:
    """mine -> synthesize -> embed + verify -> weight -> assemble, each stage timed; ``front``: the mined and
    generated rows a sharded build already made (:func:`build_shard`), so only the later stages run here."""
    o, timings = options, {}
    with _timed(timings, "load_retriever"):
        model = mine.load_retriever(retriever)
    if front is None:
        front = _mine_and_synthesize(rows, corpus, model, generator, synthesis, mining, options, timings)
    else:
        timings.update({f"shards_{k}": v for k, v in front.timings.items()})
    policy = o.guard_policy
    if policy.mode == "contrast" and policy.encoder is None:  # the build's own retriever scores the contrast
        o = dataclasses.replace(o, guard_policy=dataclasses.replace(policy, encoder=model.model))
    mined, generated = front.mined, front.generated
    items = generated.items()
    with _timed(timings, "embed"):
        emb = guard.embed(
            model.model, rows, mined, items, batch_size=o.encode_batch_size, show_progress_bar=o.show_progress_bar
        )
    with _timed(timings, "verify"):
        verdicts = guard.verify_generated(
            rows, items, emb, absolute_margin=mining.absolute_margin, relative_margin=mining.relative_margin,
            policy=o.guard_policy, records=generated.records,
            profile=synthesis.profile if synthesis is not None else "generic",
        )  # fmt: skip
    with _timed(timings, "weight"):
        weights = weight.fit_weights(
            rows, mined, items, verdicts, emb, enabled=o.source_weights, n_splits=o.probe_splits, seed=o.seed
        )
    with _timed(timings, "assemble"):
        built = assembly.assemble(
            rows, mined, generated, verdicts, weights, emb, num_mined=o.num_mined, num_generated=o.num_generated,
            hardness=o.hardness, seed=o.seed,
        )  # fmt: skip
    summary = BuildSummary(
        built.counts, assembly.weight_summary(built.slots, weights), timings, generated.generator_stats,
        guard={"policy": verdicts.policy, "judge": verdicts.judge_stats},
    )  # fmt: skip
    config = _build_config(rows, model, generator, synthesis, generated, mining, verdicts, o, corpus, mined)
    return BuiltDataset(
        built.train, built.provenance, summary, config, o.num_mined, o.num_generated, rows.known_positives
    )


def _mine_and_synthesize(
    rows: inputs.PairRows,
    corpus: Any,
    model: mine.Retriever,
    generator: Any,
    synthesis: SynthesisConfig | None,
    mining: MiningOptions,
    options: BuildOptions,
    timings: dict[str, float],
) -> FrontStages:
    """The per-row stages, the only ones that call the LLM: mine (+ judge the mined) -> synthesize."""
    o = options
    mined = mine.MinedRows.none(len(rows))
    if o.num_mined > 0:
        with _timed(timings, "mine"):
            corpus_texts = inputs.corpus_list(corpus)
            mined = mine.mine(
                rows, model, num_mined=o.num_mined, corpus=corpus_texts, options=mining,
                cache_root=o.cache_root, batch_size=o.encode_batch_size,
            )  # fmt: skip
        if o.mined_judge is not None:
            with _timed(timings, "judge_mined"):
                mined = mine.judge_mined_rows(rows, mined, o.mined_judge)
    generated = synthesize.GeneratedRows.none(len(rows))
    if synthesis is not None:
        with _timed(timings, "synthesize"):
            generated = synthesize.synthesize(
                rows, mined, generator=generator, synthesis=synthesis, num_mined=o.num_mined,
                map_batch_size=o.map_batch_size, num_proc=o.num_proc, cache_root=o.cache_root,
            )  # fmt: skip
    return FrontStages(mined, generated, dict(timings))


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _build_config(
    rows: inputs.PairRows,
    model: mine.Retriever,
    generator: Any,
    synthesis: SynthesisConfig | None,
    generated: synthesize.GeneratedRows,
    mining: MiningOptions,
    verdicts: guard.Verdicts,
    options: BuildOptions,
    corpus: Any,
    mined: mine.MinedRows,
) -> dict[str, Any]:
    """The JSON-safe ``build_config.json`` (what was asked for and what ran; never a secret)."""
    from negsynth_hf import __version__

    known_column = rows.columns.known_positives if rows.known_positives is not None else None
    return {
        "package_version": __version__,
        "num_mined": options.num_mined,
        "num_generated": options.num_generated,
        "retriever": model.id,
        "generator": generator_description(generator),
        "generator_model_id": generated.model_id(),
        "strategy": synthesis.strategy if synthesis is not None else None,
        "transform": generated.transform_config,
        "mining": mining.to_config(corpus_given=corpus is not None, known_positives_column=known_column),
        "guard": {
            "absolute_margin": verdicts.absolute_margin,
            "relative_margin": verdicts.relative_margin,
            "policy": options.guard_policy.to_config(),
            "mined_judge": options.mined_judge.to_config() if options.mined_judge is not None else None,
            "mined_judge_cost": mined.judge_stats or None,
        },
        "source_weights": options.source_weights,
        "hardness": options.hardness,
        "probe_splits": options.probe_splits,
        "seed": options.seed,
        "label_layout": "[w_1..w_N, g_1..g_N] (negsynth_hf.labels)",
        "mining_log": mined.log,
    }
