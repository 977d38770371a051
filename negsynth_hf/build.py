"""``build_dataset``: mine -> synthesize -> verify -> weight -> assemble, in one call, without losing a row.

The result (:class:`~negsynth_hf.artifacts.BuiltDataset`, also named ``BuildResult``) holds two configs of one
dataset:

- ``train``: fixed columns ``anchor, positive, negative_1..negative_{M+G}, labels`` (mined first, then
  generated; ``labels`` = :func:`negsynth_hf.labels.encode_negative_labels`), ready for
  ``SentenceTransformerTrainer`` with :class:`~negsynth_hf.losses.CausalNegLoss`;
- ``provenance``: one row per negative slot (:class:`~negsynth_hf.stages.assemble.SlotRecord`: source, status,
  generator model and prompt version, violated requirement, similarities, hardness, weight and reason, flags).

This module only orders the stages (:mod:`negsynth_hf.stages`, one module each) and records the build
config; how slots are filled when a negative is missing or rejected is :mod:`negsynth_hf.stages.assemble`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from negsynth_hf.artifacts import BuildSummary, BuiltDataset
from negsynth_hf.stages import assemble as assembly
from negsynth_hf.stages import guard, inputs, mine, synthesize, weight
from negsynth_hf.stages.mine import EMBEDDED_RETRIEVER_ID, MiningOptions
from negsynth_hf.synthesis.config import DEFAULTS as SYNTHESIS
from negsynth_hf.synthesis.config import QueryEditor, Strategy, SynthesisConfig
from negsynth_hf.transform import CounterfactualNegatives, default_generator_config, generator_description

__all__ = ["EMBEDDED_RETRIEVER_ID", "BuildResult", "BuildSummary", "CounterfactualNegatives", "build_dataset"]

TRAIN_CONFIG = "train"
PROVENANCE_CONFIG = "provenance"

#: What ``build_dataset`` returns: the built-dataset type (one type, one on-disk layout).
BuildResult = BuiltDataset


@dataclass(frozen=True)
class BuildOptions:
    """The switches of one build that are neither synthesis nor mining settings."""

    num_mined: int
    num_generated: int
    false_negative_guard: bool
    judges: Sequence[Any]
    source_weights: bool
    hardness: bool
    map_batch_size: int
    num_proc: int | None
    encode_batch_size: int
    probe_splits: int
    seed: int
    show_progress_bar: bool
    cache_root: Path | None
    guard_policy: Any = None  # negsynth_hf.verification.GuardPolicy (None: "margin")
    mined_judge: Any = None  # negsynth_hf.verification.MinedJudge (None: mined negatives are not judged)


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
    false_negative_guard: bool = True,
    judges: Sequence[Any] = (),
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
    guard_policy: Any = "margin",
    mined_judge: Any = None,
) -> BuildResult:
    """Build a training set with ``M`` mined and ``G`` generated negatives per (anchor, positive) row.

    Stages (:mod:`negsynth_hf.stages`): mine (``sentence_transformers.util.mine_hard_negatives`` with the given
    range/margins/sampling; exact search, with faiss when it is installed) -> synthesize (:class:`CounterfactualNegatives` via
    ``Dataset.map``; mined negatives are the rewrite candidates) -> verify (:mod:`negsynth_hf.verify`) -> weight
    (:mod:`negsynth_hf.weighting`) -> assemble (fixed columns, fillers: :mod:`negsynth_hf.stages.assemble`).
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
            guard's rule for generated negatives (a generated negative must clear the bar a mined one does);
            with both ``None`` the guard uses ``absolute_margin=0`` (must score below the positive).
        false_negative_guard: verify generated negatives (retriever margins, near-duplicates, ``judges``);
            False keeps every generated text with its flags recorded (the naive baseline).
        judges: extra :class:`~negsynth_hf.verify.NegativeJudge` objects (``CrossEncoderJudge``, ``LLMJudge``);
            they veto under the ``margin`` policy only.
        guard_policy: which rule, check or judge decides on generated negatives: ``"margin"`` (today's rule),
            ``"checks"`` (rules and the edit check decide inside the margin band, no LLM), ``"off"``, or a :class:`~negsynth_hf.verification.GuardPolicy` (``judge``/``combined`` modes carry a
            :class:`~negsynth_hf.verification.RelevanceJudge`); every decision is in provenance
            (``guard_decision``, ``guard_reason``, ``judge_p_relevant``...) and counted (``guard_*``, ``judge_*``).
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
        show_progress_bar: progress bars and the final printed summary table.
        cache_dir: where mining embeddings and the synthesis stage's ``map`` output are cached (rerun = cache
            hit). ``None``: the user cache dir (:func:`negsynth_hf.paths.cache_dir`); ``""`` disables. The LLM
            response cache is the generator config's own ``cache_dir``.

    Returns:
        :class:`BuildResult` (``.train``, ``.provenance``, ``.summary``, ``.config``, ``.known_positives``,
        ``.to_markdown()``, ``.save_to_disk()``).
    """
    g = _num_generated(generator, num_generated)
    rows = inputs.read_pairs(
        pairs, inputs.PairColumns(anchor_column, positive_column, id_column, known_positives_column, title_column)
    )
    if g is None:
        raise ValueError(
            "generator=None means no synthesis (a mined-only dataset); pass generator=GeneratorConfig(...) to "
            f"synthesize, or num_generated=0 (got {num_generated})."
        )
    if num_mined < 0 or g < 0:
        raise ValueError(f"num_mined and num_generated must be >= 0, got {num_mined} and {g}.")
    synthesis = None
    if g > 0:
        synthesis = SynthesisConfig(
            strategy=strategy,
            profile=profile,
            num_negatives=g,
            max_candidates=max_candidates,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            max_attempts=max_attempts,
            seed=seed,
            query_editor=query_editor,
        ).resolve(generator if generator is not None else default_generator_config())  # "auto" -> what will run
    mining = MiningOptions(
        range_min, range_max, absolute_margin, relative_margin, max_score, min_score, sampling_strategy
    )
    options = BuildOptions(
        int(num_mined), g, false_negative_guard, tuple(judges), source_weights, hardness, map_batch_size,
        num_proc, encode_batch_size, probe_splits, seed, show_progress_bar, _cache_root(cache_dir),
        _guard_policy(guard_policy), mined_judge,
    )  # fmt: skip
    result = run_stages(rows, corpus, retriever, generator, synthesis, mining, options)
    if show_progress_bar:
        print(result.to_markdown())
    return result


def _guard_policy(policy: Any) -> Any:
    """A :class:`GuardPolicy` from a policy or a mode name (modes that need a judge need a GuardPolicy)."""
    from negsynth_hf.verification.policy import GuardPolicy

    if isinstance(policy, GuardPolicy):
        return policy
    if policy in ("margin", "checks", "off"):
        return GuardPolicy(mode=policy)
    raise ValueError(
        f"guard_policy must be 'margin', 'checks', 'off' or a GuardPolicy (for 'judge'/'combined': "
        f"GuardPolicy(mode=..., judge=RelevanceJudge(...))), got {policy!r}"
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
) -> BuiltDataset:
    """mine -> synthesize -> embed + verify -> weight -> assemble, each stage timed."""
    o, timings = options, {}
    with _timed(timings, "load_retriever"):
        model = mine.load_retriever(retriever)
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
    items = generated.items()
    with _timed(timings, "embed"):
        emb = guard.embed(
            model.model, rows, mined, items, batch_size=o.encode_batch_size, show_progress_bar=o.show_progress_bar
        )
    with _timed(timings, "verify"):
        verdicts = guard.verify_generated(
            rows, items, emb, absolute_margin=mining.absolute_margin, relative_margin=mining.relative_margin,
            judges=o.judges, enabled=o.false_negative_guard, policy=o.guard_policy, records=generated.records,
            profile=synthesis.profile if synthesis is not None else "generic",
        )  # fmt: skip
    with _timed(timings, "weight"):
        weights = weight.fit_weights(
            rows, mined, items, verdicts, emb, enabled=o.source_weights, n_splits=o.probe_splits, seed=o.seed
        )
    with _timed(timings, "assemble"):
        built = assembly.assemble(
            rows, mined, generated, verdicts, weights, emb, num_mined=o.num_mined, num_generated=o.num_generated,
            hardness=o.hardness, guard_enabled=o.false_negative_guard, seed=o.seed,
        )  # fmt: skip
    summary = BuildSummary(
        built.counts, assembly.weight_summary(built.slots, weights), timings, generated.generator_stats,
        guard={"policy": verdicts.policy, "judge": verdicts.judge_stats} if verdicts.policy != "margin" else {},
    )  # fmt: skip
    config = _build_config(rows, model, generator, synthesis, generated, mining, verdicts, options, corpus, mined)
    return BuiltDataset(
        built.train, built.provenance, summary, config, o.num_mined, o.num_generated, rows.known_positives
    )


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
            "enabled": options.false_negative_guard,
            "absolute_margin": verdicts.absolute_margin,
            "relative_margin": verdicts.relative_margin,
            "judges": [getattr(j, "name", type(j).__name__) for j in options.judges],
            "policy": options.guard_policy.to_config() if options.guard_policy is not None else None,
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
