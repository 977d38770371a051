"""``CounterfactualNegatives``: the ``Dataset.map`` transform that adds LLM-synthesized negatives to each row.

It is a plain top-level class whose pickled (and therefore hashed) state is configuration only: the
generator config, strategy, profile, counts, prompt version, package version, seed and column names. The
live generator and synthesizer are created lazily in each process and never pickled, so

- two processes that build an equal transform get the same ``datasets`` fingerprint (the second ``map`` is
  a cache hit, datasets issue 5109);
- ``num_proc=N`` works (each worker builds its own generator);
- a crash mid-``map`` resumes without repeated LLM calls through the generator's on-disk response cache.

Output per row: ``generated_1..generated_G`` text columns (``""`` where the generator gave fewer, or failed)
and one JSON provenance column (see :data:`PROVENANCE_COLUMN`). No row is ever dropped: a failed row keeps
its input columns, has empty generated columns, and says why in its provenance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from negsynth_hf.labels import negative_columns
from negsynth_hf.redaction import redact
from negsynth_hf.synthesis.config import DEFAULTS as SYNTHESIS_DEFAULTS
from negsynth_hf.synthesis.config import STRATEGIES, Strategy, SynthesisConfig

logger = logging.getLogger(__name__)

__all__ = [
    "PROVENANCE_COLUMN",
    "STRATEGIES",
    "CounterfactualNegatives",
    "NegativeProvenance",
    "RowProvenance",
    "Strategy",
    "generator_description",
]

PROVENANCE_COLUMN = "generation_provenance"
# hashed state, in this order (a change of names or order changes every fingerprint: datasets issue 5109)
_SYNTHESIS_STATE = ("strategy", "profile", "num_generated", "max_candidates", "temperature", "max_new_tokens")
_SYNTHESIS_STATE += ("max_attempts", "seed")
_COLUMN_STATE = ("query_column", "positive_column", "candidate_columns", "title_column", "output_prefix")
_COLUMN_STATE += ("provenance_column", "concurrency", "prompt_version", "synthesis_signature", "package_version")


def _package_version() -> str:
    from negsynth_hf import __version__

    return __version__


def _synthesis_signature(synthesis: SynthesisConfig) -> str:
    """Content hash of what shapes the LLM output besides our own fields: prompt version, stage schemas, profile.

    Part of the hashed state, so editing a prompt, a schema or a built-in profile changes the fingerprint. It
    takes the LLM-editor version of the prompt id (it predates ``query_editor``, which is hashed on its own).
    """
    from negsynth_hf.synthesis import get_profile, schemas_hash

    version = dataclasses.replace(synthesis, query_editor="llm").prompt_version
    blob = json.dumps([version, schemas_hash(), get_profile(synthesis.profile).hash])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def generator_description(generator: Any) -> dict[str, Any]:
    """JSON-safe description of a generator spec for provenance (``to_dict()`` when it has one), redacted."""
    if generator is None:
        return {}
    to_dict = getattr(generator, "to_dict", None)
    return redact(to_dict() if callable(to_dict) else {"type": type(generator).__name__})


# ------------------------------------------------------------------------------------------ provenance records
@dataclass(frozen=True)
class NegativeProvenance:
    """What the transform recorded about one generated negative (one entry of ``RowProvenance.negatives``)."""

    column: str = ""
    violated_requirement: str | None = None
    strategy_type: str | None = None
    explanation: str | None = None
    flags: tuple[str, ...] = ()
    rewrote_candidate: bool = False
    candidate_index: int | None = None
    edited_query: str | None = None
    rule_edit: bool = False
    source: str | None = None  # rewrite: the document edited ("positive")
    source_id: str | None = None  # its id, when the input named it
    edits: tuple[tuple[str, str], ...] = ()  # rewrite: (original span, replacement) of every in-place edit


@dataclass(frozen=True)
class RowProvenance:
    """One row's provenance column, decoded: the transform writes it as JSON, :meth:`from_json` reads it back."""

    failure_reason: str | None = None
    strategy: str | None = None
    prompt_version: str | None = None
    model_id: str | None = None
    llm_calls: int = 0
    cached_calls: int = 0
    dropped_extra: int = 0
    trimmed_tokens: int = 0  # prompt tokens cut to fit the model's context
    dropped_candidates: int = 0  # mined candidates left out of prompts to fit it
    negatives: tuple[NegativeProvenance, ...] = field(default_factory=tuple)
    unfilled: tuple[str, ...] = ()  # one reason per generated column the LLM left empty

    @classmethod
    def from_json(cls, text: str) -> RowProvenance:
        data = json.loads(text) if text else {}
        names = {f.name for f in dataclasses.fields(NegativeProvenance)}
        negatives = tuple(
            NegativeProvenance(**{k: _record_value(k, v) for k, v in neg.items() if k in names})
            for neg in data.get("negatives") or ()
        )
        return cls(
            failure_reason=data.get("failure_reason"),
            strategy=data.get("strategy"),
            prompt_version=data.get("prompt_version"),
            model_id=data.get("model_id"),
            llm_calls=int(data.get("llm_calls") or 0),
            cached_calls=int(data.get("cached_calls") or 0),
            dropped_extra=int(data.get("dropped_extra") or 0),
            trimmed_tokens=int(data.get("trimmed_tokens") or 0),
            dropped_candidates=int(data.get("dropped_candidates") or 0),
            negatives=negatives,
            unfilled=tuple(data.get("unfilled") or ()),
        )


def _record_value(name: str, value: Any) -> Any:
    """A JSON list back as the tuple the frozen record holds (``edits``: a tuple of pairs)."""
    if name == "flags":
        return tuple(value)
    if name == "edits":
        return tuple(tuple(e) for e in value or ())
    return value


def default_generator_config() -> Any:
    """The generator used when none is given: ``GeneratorConfig()`` (Qwen 1.5B on llama.cpp, offline)."""
    from negsynth_hf.generators import GeneratorConfig

    return GeneratorConfig()


# ------------------------------------------------------------------------------------------ the transform
class CounterfactualNegatives:
    """Add ``num_generated`` synthesized hard negatives to every row of a batched ``Dataset.map``.

    Args:
        generator: how to build the LLM: a :class:`~negsynth_hf.generators.GeneratorConfig` (default: the
            embedded SmolLM2), or any picklable object with ``build() -> ChatGenerator`` whose pickled state
            is configuration only (it is hashed into the fingerprint).
        synthesis: a :class:`~negsynth_hf.synthesis.SynthesisConfig` (strategy, profile, sampling, query editor;
            its docstring says what each does). ``None``: the defaults.
        num_generated: ``G``, the number of ``generated_*`` columns (extra negatives are dropped and counted);
            ``synthesis.num_negatives`` when not given.
        query_column / positive_column: input text columns.
        candidate_columns: mined-negative columns offered as rewrite candidates. ``None``: every
            ``negative_<i>`` column present, in numeric order. Empty strings are skipped, and so is a
            candidate equal to the row's positive (noted in the row's provenance).
        title_column: optional column with the positive's title (the query-edit writer's only context).
        output_prefix: generated columns are ``f"{output_prefix}{i}"`` for ``i = 1..G``.
        provenance_column: name of the JSON provenance column.
        concurrency: ``"async"`` drives ``Synthesizer.asynthesize`` (requests of a batch in flight together:
            remote servers), ``"sync"`` calls ``synthesize`` (local backends batch internally), ``"auto"``
            picks async for the ``openai`` backend.
        **options: ``SynthesisConfig`` fields to change on top of ``synthesis`` (``strategy="query_edit"``).

    Example:
        >>> transform = CounterfactualNegatives(GeneratorConfig(backend="embedded"), strategy="query_edit")
        >>> dataset = dataset.map(transform, batched=True, batch_size=16)
    """

    def __init__(
        self,
        generator: Any = None,
        *,
        synthesis: SynthesisConfig | None = None,
        num_generated: int | None = None,
        query_column: str = "anchor",
        positive_column: str = "positive",
        candidate_columns: Sequence[str] | None = None,
        title_column: str | None = None,
        output_prefix: str = "generated_",
        provenance_column: str = PROVENANCE_COLUMN,
        concurrency: Literal["auto", "async", "sync"] = "auto",
        **options: Any,
    ) -> None:
        if generator is None:
            generator = default_generator_config()
        if not callable(getattr(generator, "build", None)):
            raise ValueError(
                f"generator must be a GeneratorConfig or an object with build() -> ChatGenerator, "
                f"got {type(generator).__name__}; pass the config, not a live generator, so the transform "
                "stays picklable and its fingerprint stable."
            )
        if num_generated is not None:
            if num_generated < 1:
                raise ValueError(
                    f"num_generated must be >= 1, got {num_generated} (use build_dataset(num_generated=0))."
                )
            options["num_negatives"] = int(num_generated)
        if concurrency not in ("auto", "async", "sync"):
            raise ValueError(f"concurrency must be 'auto', 'async' or 'sync', got {concurrency!r}.")
        self.generator = generator
        # "auto" strategy/editor resolved here, from the config (no model is loaded): one value for the
        # fingerprint, the provenance and the synthesizer
        self.synthesis = (synthesis or SynthesisConfig()).with_options(**options).resolve(generator)
        self.query_column = query_column
        self.positive_column = positive_column
        self.candidate_columns = None if candidate_columns is None else tuple(candidate_columns)
        self.title_column = title_column
        self.output_prefix = output_prefix
        self.provenance_column = provenance_column
        self.concurrency = concurrency
        self.prompt_version = self.synthesis.prompt_version
        self.synthesis_signature = _synthesis_signature(self.synthesis)
        self.package_version = _package_version()
        self._live: dict[str, Any] = {}
        self._lock = threading.Lock()

    # the synthesis settings, read from the one frozen config
    strategy = property(lambda self: self.synthesis.strategy)
    profile = property(lambda self: self.synthesis.profile)
    num_generated = property(lambda self: self.synthesis.num_negatives)
    max_candidates = property(lambda self: self.synthesis.max_candidates)
    temperature = property(lambda self: self.synthesis.temperature)
    max_new_tokens = property(lambda self: self.synthesis.max_new_tokens)
    max_attempts = property(lambda self: self.synthesis.max_attempts)
    seed = property(lambda self: self.synthesis.seed)
    query_editor = property(lambda self: self.synthesis.query_editor)

    # -- pickling / hashing: configuration only -------------------------------------------------------
    _CONFIG_FIELDS = ("generator", *_SYNTHESIS_STATE, *_COLUMN_STATE)

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self._CONFIG_FIELDS}
        # newer settings are hashed only when set, so existing fingerprints stay valid
        extra = self.synthesis.non_default()
        state.update({k: v for k, v in extra.items() if k not in state and k != "num_negatives"})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["num_negatives"] = state.pop("num_generated")
        names = SynthesisConfig.field_names()
        # a field left out of the state had its baseline value (SynthesisConfig.non_default), never "auto"
        baseline = SYNTHESIS_DEFAULTS.resolve(None)
        self.synthesis = dataclasses.replace(baseline, **{k: state.pop(k) for k in names if k in state})
        self.generator = state.pop("generator")
        self.__dict__.update(state)
        self._live = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"CounterfactualNegatives(strategy={self.strategy!r}, num_generated={self.num_generated}, "
            f"generator={generator_description(self.generator)!r})"
        )

    @property
    def output_columns(self) -> list[str]:
        """``generated_1..generated_G`` followed by the provenance column."""
        return [f"{self.output_prefix}{i}" for i in range(1, self.num_generated + 1)] + [self.provenance_column]

    def config_dict(self) -> dict[str, Any]:
        """JSON-safe configuration (goes into the build's provenance; never contains secrets)."""
        profile = self.profile
        if not isinstance(profile, str):
            profile = profile.to_dict() if hasattr(profile, "to_dict") else repr(profile)
        return {
            "generator": generator_description(self.generator),
            "strategy": self.strategy,
            "profile": profile,
            "num_generated": self.num_generated,
            "max_candidates": self.max_candidates,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "max_attempts": self.max_attempts,
            "seed": self.seed,
            "query_editor": self.query_editor,
            "prompt_version": self.prompt_version,
            "synthesis_signature": self.synthesis_signature,
            "package_version": self.package_version,
            "columns": {
                "query": self.query_column,
                "positive": self.positive_column,
                "candidates": list(self.candidate_columns) if self.candidate_columns is not None else "negative_*",
                "title": self.title_column,
            },
        }

    # -- live objects, created lazily per process ----------------------------------------------------
    def generator_stats(self) -> dict[str, int]:
        """Call counts of the generator this process built (``{}`` when none was: a ``map`` cache hit, or
        ``num_proc > 1``, whose workers keep their own)."""
        live = self._live.get("generator") if self._live.get("pid") == os.getpid() else None
        stats = getattr(live, "stats", None)
        return dict(stats) if isinstance(stats, dict) else {}

    @property
    def synthesizer(self) -> Any:
        """This process' Synthesizer (built on first use with its generator; a forked worker builds its own)."""
        self._ensure_live()
        return self._live["synthesizer"]

    def _ensure_live(self) -> None:
        with self._lock:
            if self._live.get("pid") == os.getpid():
                return
            generator = self.generator.build()
            self._live = {"pid": os.getpid(), "generator": generator, "synthesizer": self._make_synthesizer(generator)}

    def _make_synthesizer(self, generator: Any) -> Any:
        """The Synthesizer for ``generator`` (a seam for tests that script the synthesizer itself)."""
        from negsynth_hf.synthesis import Synthesizer

        return Synthesizer(generator, config=self.synthesis)

    def _use_async(self) -> bool:
        if self.concurrency != "auto":
            return self.concurrency == "async"
        return getattr(self.generator, "backend", None) == "openai"

    # -- the transform ----------------------------------------------------------------------------------
    def _candidate_columns(self, batch: dict[str, list]) -> list[str]:
        if self.candidate_columns is not None:
            missing = [c for c in self.candidate_columns if c not in batch]
            if missing:
                raise ValueError(f"candidate column(s) {missing} not in the dataset; columns: {sorted(batch)}.")
            return list(self.candidate_columns)
        return negative_columns(list(batch))

    def inputs(self, batch: dict[str, list], indices: Sequence[int] | None = None) -> list[Any]:
        """The batch as ``SynthesisInput`` records (validates columns and types, naming the offending row).

        ``indices``: the dataset rows of the batch (``Dataset.map(..., with_indices=True)`` passes them), so an
        error names the dataset row. Without them (a plain ``map`` or a direct call) the error names the row
        within the batch and says how to get the dataset row: ``datasets`` passes no row numbers otherwise.
        """
        from negsynth_hf.synthesis import SynthesisInput

        for column in (self.query_column, self.positive_column, self.title_column):
            if column is not None and column not in batch:
                raise ValueError(
                    f"CounterfactualNegatives needs column {column!r}; the dataset has {sorted(batch)}. "
                    "Set query_column/positive_column/title_column."
                )
        candidate_columns = self._candidate_columns(batch)
        queries, positives = batch[self.query_column], batch[self.positive_column]
        items = []
        for i, (query, positive) in enumerate(zip(queries, positives, strict=True)):
            for column, value in ((self.query_column, query), (self.positive_column, positive)):
                if not isinstance(value, str) or not value.strip():
                    where = f"row {indices[i]}" if indices is not None else f"row {i} of the batch"
                    hint = "" if indices is not None else " (map with with_indices=True to get the dataset row number)"
                    raise ValueError(f"{where}: column {column!r} must be a non-empty string, got {value!r}{hint}.")
            # every usable candidate: the Synthesizer drops those equal to the positive, then keeps max_candidates
            candidates = tuple(
                c for c in (batch[col][i] for col in candidate_columns) if isinstance(c, str) and c.strip()
            )
            title = batch[self.title_column][i] if self.title_column else None
            items.append(SynthesisInput(query=query, positive=positive, candidates=candidates, title=title or None))
        return items

    def _run(self, items: list[Any]) -> list[Any]:
        synthesizer = self.synthesizer
        if not self._use_async():
            return synthesizer.synthesize(items)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(synthesizer.asynthesize(items))
        # already inside an event loop (a notebook): run ours in a helper thread
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = asyncio.run(synthesizer.asynthesize(items))
            except BaseException as err:  # re-raised below in the caller's thread
                box["err"] = err

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    def __call__(self, batch: dict[str, list], indices: Sequence[int] | None = None) -> dict[str, list]:
        """Map one batch; ``indices`` (from ``Dataset.map(..., with_indices=True)``) name dataset rows in errors."""
        items = self.inputs(batch, indices)
        try:
            results = self._run(items)
            if len(results) != len(items):
                raise RuntimeError(f"synthesizer returned {len(results)} results for {len(items)} rows")
        except Exception as err:  # noqa: BLE001 - recorded per row, never drops the batch
            logger.warning("Synthesis failed for a batch of %d rows: %s", len(items), err)
            results = [None] * len(items)
            batch_error = f"synthesizer error: {type(err).__name__}: {err}"
        else:
            batch_error = None
        out: dict[str, list] = {c: [] for c in self.output_columns}
        for result in results:
            texts, record = self._row_output(result, batch_error)
            for i, text in enumerate(texts, start=1):
                out[f"{self.output_prefix}{i}"].append(text)
            out[self.provenance_column].append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        return out

    def _row_output(self, result: Any, batch_error: str | None) -> tuple[list[str], dict[str, Any]]:
        g = self.num_generated
        if result is None:
            record = {
                "failure_reason": batch_error,
                "strategy": self.strategy,
                "prompt_version": self.prompt_version,
                "model_id": None,
                "negatives": [],
                "dropped_extra": 0,
                "unfilled": [batch_error] * g,
            }
            return [""] * g, record
        negatives = [n for n in result.negatives if isinstance(n.text, str) and n.text.strip()]
        empty = len(result.negatives) - len(negatives)
        kept, extra = negatives[:g], negatives[g:]
        texts = [n.text for n in kept] + [""] * (g - len(kept))
        record = {
            "failure_reason": result.failure_reason,
            "strategy": result.strategy or self.strategy,
            "prompt_version": result.prompt_version or self.prompt_version,
            "model_id": result.model_id,
            "attempts": result.attempts,
            "llm_calls": result.llm_calls,
            "cached_calls": result.cached_calls,
            "completion_tokens": result.completion_tokens,
            "duplicates_removed": getattr(result, "duplicates_removed", 0),
            "notes": list(getattr(result, "notes", []) or []),
            "dropped_extra": len(extra),
            "dropped_empty": empty,
            # one reason per empty generated column (the synthesizer's, else an empty text's)
            "unfilled": (list(result.unfilled) + ["the negative's text was empty"] * g)[: g - len(kept)],
            **(
                {"trimmed_tokens": result.trimmed_tokens, "dropped_candidates": result.dropped_candidates}
                if result.trimmed_tokens or result.dropped_candidates
                else {}
            ),
            "negatives": [
                {
                    "column": f"{self.output_prefix}{i}",
                    "model_id": result.model_id,
                    "prompt_version": result.prompt_version or self.prompt_version,
                    "strategy": result.strategy or self.strategy,
                    "violated_requirement": n.violated_requirement,
                    "strategy_type": n.strategy_type,
                    "explanation": n.explanation,
                    "flags": list(n.flags),
                    "rewrote_candidate": bool(n.rewrote_candidate),
                    "candidate_index": n.candidate_index,
                    "edited_query": n.edited_query,
                    **({"rule_edit": True} if getattr(n, "rule_edit", False) else {}),
                    **(
                        {"source": n.source, "source_id": n.source_id, "edits": [list(e) for e in n.edits]}
                        if getattr(n, "edits", ())
                        else {}
                    ),
                }
                for i, n in enumerate(kept, start=1)
            ],
        }
        return texts, record
