"""``SynthesisConfig``: every setting that shapes what the LLM is asked, with every default, in one place.

``build_dataset`` makes one from its keywords and hands it to :class:`~negsynth_hf.transform.CounterfactualNegatives`,
which hands it to the :class:`~negsynth_hf.synthesis.Synthesizer`; nobody else repeats a default, a ``Literal``
or a check. To change a default (say the strategy for a new generator), change it here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

Strategy = Literal["auto", "counterfactual", "naive", "query_edit", "rewrite"]
QueryEditor = Literal["auto", "llm", "rules", "llm_then_rules"]
#: the concrete strategies and editors ("auto" resolves to one of them, see SynthesisConfig.resolve)
STRATEGIES: tuple[str, ...] = get_args(Strategy)[1:]
QUERY_EDITORS: tuple[str, ...] = get_args(QueryEditor)[1:]
#: what "auto" means for a generator that recommends nothing (a served model: the method itself)
FALLBACK_SYNTHESIS = ("counterfactual", "llm")


@dataclass(frozen=True)
class SynthesisConfig:
    """How negatives are written (frozen: one value travels build -> transform -> synthesizer unchanged).

    Attributes:
        strategy: ``"counterfactual"`` (analysis + generation, the method), ``"naive"`` (ablation baseline),
            ``"query_edit"`` (one-detail query edit + a passage answering it; what small models manage),
            ``"rewrite"`` (in-place span edits of the positive that change one detail, applied and checked by
            code: the negative keeps the corpus' own text) or ``"auto"`` (default): what the generator
            recommends (:meth:`resolve`), else counterfactual.
        profile: a built-in profile name, a :class:`~negsynth_hf.synthesis.DatasetProfile`, a dict or a YAML path.
        num_negatives: K, the negatives asked for per row (``G``, ``num_generated``, in the build); a row that gets
            fewer records one reason per missing negative (``SynthesisResult.unfilled``).
        max_candidates: how many mined candidates the prompt shows (a candidate equal to the positive never is).
        temperature / seed: sent on every request (``seed + attempt`` on re-asks).
        max_new_tokens: a cap on every stage's reply budget; ``None`` (default) sizes each stage's budget from
            its JSON schema, so that no reply is cut off mid-JSON.
        max_attempts: tries per LLM call, re-asking with the validation error after a failure.
        max_passage_chars: each query/positive/candidate is cut to this many characters in prompts.
        query_editor: who makes query_edit's edit: ``"llm"``, ``"rules"`` (code, no LLM call; for models too
            small to edit), ``"llm_then_rules"`` (rules replace LLM edits that still fail the check) or
            ``"auto"`` (default): the generator's recommendation, else ``"llm"``.
    """

    strategy: Strategy = "auto"
    profile: Any = "generic"
    num_negatives: int = 3
    max_candidates: int = 5
    temperature: float = 0.2
    max_new_tokens: int | None = None
    max_attempts: int = 3
    seed: int = 0
    max_passage_chars: int = 2000
    query_editor: QueryEditor = "auto"

    def __post_init__(self) -> None:
        # one type per field whatever the caller passed (temperature=1 and 1.0 must hash alike)
        for name in ("num_negatives", "max_candidates", "max_new_tokens", "max_attempts", "seed", "max_passage_chars"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.strategy not in (*STRATEGIES, "auto"):
            raise ValueError(f"Unknown strategy {self.strategy!r}; valid strategies: {sorted(STRATEGIES)}")
        if min(self.num_negatives, self.max_attempts, self.max_new_tokens or 1, self.max_passage_chars) < 1 or (
            self.max_candidates < 0
        ):
            raise ValueError(
                "num_negatives, max_attempts, max_new_tokens and max_passage_chars must be >= 1, max_candidates >= 0"
            )
        if self.query_editor not in (*QUERY_EDITORS, "auto"):
            raise ValueError(f"Unknown query_editor {self.query_editor!r}; valid: {list(QUERY_EDITORS)}")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")

    @property
    def prompt_version(self) -> str:
        """The strategy's template version; rule-assisted query edits get their own id, so caches never mix."""
        # read at call time: PROMPT_VERSIONS is the prompts module's dict, bumped there when a template changes
        from .prompts import PROMPT_VERSIONS
        from .rule_edits import RULE_EDITS_VERSION

        if self.strategy == "auto":  # not resolved against a generator yet (see resolve)
            return "auto"
        version = str(PROMPT_VERSIONS[self.strategy])
        if self.strategy == "query_edit" and self.query_editor not in ("llm", "auto"):
            version = f"{version}+{self.query_editor}:{RULE_EDITS_VERSION}"
        return version

    def resolve(self, generator: object) -> SynthesisConfig:
        """This config with ``"auto"`` filled in for ``generator``: the ``(strategy, query_editor)`` its
        ``recommended_synthesis()`` names (the small local models ship with one, measured in
        ``benchmarks/results/llamacpp.md``), else ``FALLBACK_SYNTHESIS`` (counterfactual, the method)."""
        if self.strategy != "auto" and self.query_editor != "auto":
            return self
        recommend = getattr(generator, "recommended_synthesis", None)
        recommended = recommend() if callable(recommend) else None
        strategy, editor = recommended or FALLBACK_SYNTHESIS
        return dataclasses.replace(
            self,
            strategy=strategy if self.strategy == "auto" else self.strategy,
            query_editor=editor if self.query_editor == "auto" else self.query_editor,
        )

    def with_options(self, **options: Any) -> SynthesisConfig:
        """A copy with ``options`` changed (names are this class's fields; an unknown one is a TypeError)."""
        unknown = set(options) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown synthesis option(s) {sorted(unknown)}; valid: {list(self.field_names())}")
        return dataclasses.replace(self, **options) if options else self

    def non_default(self) -> dict[str, Any]:
        """The fields that differ from the defaults (hashed only when set, so older fingerprints stay valid)."""
        # compared with the defaults as "auto" resolves them without a recommendation (counterfactual, llm),
        # which were the defaults before "auto" existed
        baseline = DEFAULTS.resolve(None)
        return {
            name: getattr(self, name)
            for name in self.field_names()
            if getattr(self, name) not in (getattr(DEFAULTS, name), getattr(baseline, name))
        }

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


#: The defaults, for signatures that show them (``build_dataset``'s keywords read them from here).
DEFAULTS = SynthesisConfig()
