"""The :class:`Synthesizer`: rows in, one :class:`SynthesisResult` per row out, never an exception per row."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..generators.base import ChatGenerator, ChatRequest, ChatResponse
from .config import QUERY_EDITORS, QueryEditor, Strategy, SynthesisConfig
from .engine import CallSettings, Plan, RowStats
from .fitting import TokenBudget
from .profiles import get_profile
from .quality import normalize
from .records import SynthesisInput, SynthesisResult
from .schemas import schemas_hash
from .strategies import PLANS, Context

__all__ = ["QUERY_EDITORS", "QueryEditor", "Strategy", "SynthesisConfig", "Synthesizer"]

SYNTHESIS_FORMAT = 1

logger = logging.getLogger(__name__)


class Synthesizer:
    """Writes hard negatives for (query, positive) rows with an LLM, using one of four strategies.

    Args:
        generator: any :class:`~negsynth_hf.generators.base.ChatGenerator`.
        config: a :class:`~negsynth_hf.synthesis.config.SynthesisConfig` (strategy, profile, counts, sampling,
            query editor; its docstring says what each does). ``None``: the defaults.
        **options: fields of ``SynthesisConfig`` to change on top of ``config``
            (``Synthesizer(gen, strategy="naive", num_negatives=2)``).
    """

    def __init__(self, generator: ChatGenerator, *, config: SynthesisConfig | None = None, **options: Any) -> None:
        config = (config or SynthesisConfig()).with_options(**options).resolve(generator)
        if config.strategy not in PLANS:
            raise ValueError(f"Unknown strategy {config.strategy!r}; valid strategies: {sorted(PLANS)}")
        for method in ("generate", "agenerate"):
            if not callable(getattr(generator, method, None)):
                raise TypeError(f"generator must implement the ChatGenerator protocol (missing {method}())")
        self.generator = generator
        self.config = config
        self.strategy: str = config.strategy
        self.profile = get_profile(config.profile)
        self.num_negatives = config.num_negatives
        self.max_candidates = config.max_candidates
        self.temperature = float(config.temperature)
        self.max_new_tokens = config.max_new_tokens
        self.max_attempts = config.max_attempts
        self.seed = config.seed
        self.max_passage_chars = config.max_passage_chars
        self.query_editor: str = config.query_editor

    @property
    def prompt_version(self) -> str:
        """The strategy's template version (:attr:`SynthesisConfig.prompt_version`)."""
        return self.config.prompt_version

    @property
    def model_id(self) -> str:
        try:
            return str(self.generator.model_id)
        except Exception:  # provenance must not break synthesis
            return type(self.generator).__name__

    def config_dict(self) -> dict[str, Any]:
        """JSON-safe description of everything that shapes the output (for provenance and cache keys)."""
        out: dict[str, Any] = {
            "format": SYNTHESIS_FORMAT,
            "strategy": self.strategy,
            "prompt_version": self.prompt_version,
            "profile": self.profile.name,
            "profile_hash": self.profile.hash,
            "schemas_hash": schemas_hash(),
            "num_negatives": self.num_negatives,
            "max_candidates": self.max_candidates,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "max_attempts": self.max_attempts,
            "seed": self.seed,
            "max_passage_chars": self.max_passage_chars,
            "model_id": self.model_id,
        }
        if self.query_editor != "llm":  # absent for the default, so existing fingerprints stay valid
            out["query_editor"] = self.query_editor
        return out

    # ------------------------------------------------------------------ running

    def _context(self, items: Sequence[SynthesisInput | Mapping[str, Any]]) -> Context:
        n = len(items)
        ctx = Context(
            items=[None] * n,
            results=[
                SynthesisResult(strategy=self.strategy, prompt_version=self.prompt_version, model_id=self.model_id)
                for _ in range(n)
            ],
            stats=[RowStats() for _ in range(n)],
            candidates=[[] for _ in range(n)],
            profile=self.profile,
            settings=CallSettings(self.max_new_tokens, self.temperature, self.seed, self.max_attempts),
            num_negatives=self.num_negatives,
            max_chars=self.max_passage_chars,
            query_editor=self.query_editor,
            prompt_version=self.prompt_version,
            budget=TokenBudget.of(self.generator),
        )
        for i, raw in enumerate(items):
            try:
                item = _coerce(raw)
            except (TypeError, ValueError) as exc:
                ctx.results[i].failure_reason = f"invalid input: {exc}"
                continue
            ctx.items[i] = item
            usable = [(j, c) for j, c in enumerate(item.candidates) if isinstance(c, str) and c.strip()]
            # a mined "negative" equal to the positive (a duplicate in the corpus) must never be offered as a
            # negative to rewrite: drop it before the max_candidates cut, and say so in the row's provenance
            # (compared as quality.normalize sees texts, as for the equals_positive flag)
            positive, kept = normalize(item.positive), []
            for j, c in usable:
                if normalize(c) == positive:
                    ctx.results[i].notes.append(f"dropped: candidate {j + 1} equals the positive (not offered)")
                else:
                    kept.append((j, c))
            ctx.candidates[i] = kept[: self.max_candidates]
            # prompts cut every text at max_passage_chars (prompts.escape_data): record it, so it can be counted
            texts = [("query", item.query), ("positive", item.positive)]
            texts += [(f"candidate {j + 1}", c) for j, c in ctx.candidates[i]]
            for name, text in texts:
                if len(text) > self.max_passage_chars:
                    ctx.results[i].notes.append(
                        f"truncated: {name} cut from {len(text):,} to {self.max_passage_chars:,} characters in prompts"
                    )
        return ctx

    def _finish(self, ctx: Context) -> list[SynthesisResult]:
        for result, st in zip(ctx.results, ctx.stats, strict=True):
            result.llm_calls, result.cached_calls = st.llm_calls, st.cached_calls
            result.completion_tokens, result.prompt_tokens = st.completion_tokens, st.prompt_tokens
            result.stage_attempts = st.stage_attempts
            result.attempts = st.max_attempts
            if result.failure_reason is None and not result.negatives:
                result.failure_reason = "no usable negative was produced"
            _account_unfilled(result, self.num_negatives)
        _forget_rejected(self.generator, ctx)
        return ctx.results

    def synthesize(
        self, items: Sequence[SynthesisInput | Mapping[str, Any]], *, show_progress_bar: bool = False
    ) -> list[SynthesisResult]:
        """One result per item, in order; a bad row gets a ``failure_reason``, never an exception."""
        ctx = self._context(items)
        plan = PLANS[self.strategy](ctx)
        bar = _progress(show_progress_bar, self.strategy)
        try:
            requests = _start(plan)
            while requests is not None:
                bar.update(len(requests))
                requests = _send(plan, _safe_generate(self.generator, requests))
        finally:
            bar.close()
        return self._finish(ctx)

    async def asynthesize(
        self, items: Sequence[SynthesisInput | Mapping[str, Any]], *, show_progress_bar: bool = False
    ) -> list[SynthesisResult]:
        """Async twin of :meth:`synthesize`: each stage's requests for all rows go out in one ``agenerate``."""
        ctx = self._context(items)
        plan = PLANS[self.strategy](ctx)
        bar = _progress(show_progress_bar, self.strategy)
        try:
            requests = _start(plan)
            while requests is not None:
                bar.update(len(requests))
                try:
                    responses = await self.generator.agenerate(requests)
                except Exception as exc:
                    responses = _errors(requests, exc)
                requests = _send(plan, list(responses) if isinstance(responses, Sequence) else responses)
        finally:
            bar.close()
        return self._finish(ctx)

    def __repr__(self) -> str:
        return (
            f"Synthesizer(strategy={self.strategy!r}, profile={self.profile.name!r}, "
            f"num_negatives={self.num_negatives}, model_id={self.model_id!r})"
        )


def _account_unfilled(result: SynthesisResult, k: int) -> None:
    """Exactly one reason per missing negative: the strategy's own, else the row's failure, else a count."""
    missing = max(0, k - len(result.negatives))
    generic = result.failure_reason or f"{result.strategy}: the reply gave {len(result.negatives)} of {k} negatives"
    result.unfilled = (list(result.unfilled) + [generic] * missing)[:missing]


def _coerce(raw: SynthesisInput | Mapping[str, Any]) -> SynthesisInput:
    if isinstance(raw, Mapping):
        raw = SynthesisInput(
            query=raw.get("query"),  # type: ignore[arg-type]
            positive=raw.get("positive"),  # type: ignore[arg-type]
            candidates=tuple(raw.get("candidates") or ()),
            title=raw.get("title"),
            positive_id=raw.get("positive_id"),
        )
    if not isinstance(raw, SynthesisInput):
        raise TypeError(f"expected SynthesisInput or a mapping, got {type(raw).__name__}")
    if not isinstance(raw.query, str) or not raw.query.strip():
        raise ValueError("empty or non-string query")
    if not isinstance(raw.positive, str) or not raw.positive.strip():
        raise ValueError("empty or non-string positive")
    if raw.title is not None and not isinstance(raw.title, str):
        raise ValueError("title must be a string or None")
    if raw.positive_id is not None and not isinstance(raw.positive_id, str):
        raise ValueError("positive_id must be a string or None")
    return raw


def _errors(requests: Sequence[ChatRequest], exc: BaseException) -> list[ChatResponse]:
    return [ChatResponse(text=None, error=f"{type(exc).__name__}: {exc}") for _ in requests]


def _safe_generate(generator: ChatGenerator, requests: list[ChatRequest]) -> list[ChatResponse]:
    """The protocol says backends never raise; if one does anyway, every request in the batch fails softly."""
    try:
        return list(generator.generate(requests))
    except Exception as exc:
        return _errors(requests, exc)


def _forget_rejected(generator: ChatGenerator, ctx: Context) -> None:
    """Ask a caching generator (one with ``discard()``) to forget the rejected replies of the rows that failed.

    A reply that is valid JSON but fails the stage's validation passes the cache's own policy and is stored;
    left there, a rerun would replay it instead of asking the LLM again, and the row could never complete.
    Rows that succeeded keep every cached reply (a rerun of them makes no LLM call).
    """
    rejected = [
        r for result, st in zip(ctx.results, ctx.stats, strict=True) if result.failure_reason for r in st.rejected
    ]
    for st in ctx.stats:
        st.rejected.clear()
    discard = getattr(generator, "discard", None)
    if not rejected or not callable(discard):
        return
    try:
        discard(rejected)
    except Exception as exc:  # the cache is an optimisation: failing to forget must not cost any row
        logger.warning("Could not discard %d rejected cached replies: %s: %s", len(rejected), type(exc).__name__, exc)


def _start(plan: Plan) -> list[ChatRequest] | None:
    try:
        return next(plan)
    except StopIteration:
        return None


def _send(plan: Plan, responses: list[ChatResponse]) -> list[ChatRequest] | None:
    try:
        return plan.send(responses)
    except StopIteration:
        return None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, strategy: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=f"synthesis ({strategy})", unit="call")
