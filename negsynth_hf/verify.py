"""The false-negative guard: is a generated "negative" really not relevant?

Small LLMs asked for a related passage that does not answer a query often answer it anyway (the
generative-discriminative gap). Every generated negative is therefore scored by a reference retriever against
its query and positive, with sentence-transformers' margin semantics (exactly as ``mine_hard_negatives``):

- ``absolute_margin=m``: invalid if ``sim(q, neg) + m > sim(q, pos)``;
- ``relative_margin=r``: invalid if ``sim(q, neg) > sim(q, pos) - |sim(q, pos)| * r`` (equal to
  ``sim(q, pos) * (1 - r)`` for positive scores, and sign-safe otherwise, as the installed ST does).

Optional stronger judges (:class:`CrossEncoderJudge`, :class:`LLMJudge`) can each veto a negative. Two text
checks run too: a near-duplicate of the positive (token Jaccard >= 0.8, or retriever similarity to the positive
>= 0.97) is invalid (weight 0: it is the positive in other words, so training against it pushes the query away
from its own answer); a text containing the whole query is only flagged (``contains_query``), because a
counterfactual may legitimately restate the query while breaking one detail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

NEAR_DUPLICATE_JACCARD = 0.8
NEAR_DUPLICATE_SIMILARITY = 0.97


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def token_jaccard(a: str, b: str) -> float:
    ta, tb = set(_normalize(a).split()), set(_normalize(b).split())
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def contains_query(text: str, query: str) -> bool:
    """Whether the normalized query occurs as a whole inside the normalized text."""
    nq = _normalize(query)
    return bool(nq) and f" {nq} " in f" {_normalize(text)} "


def margin_violation(
    neg_score: float, pos_score: float, *, absolute_margin: float | None, relative_margin: float | None
) -> str | None:
    """The reason a negative fails sentence-transformers' margin filter, or ``None`` if it passes."""
    if absolute_margin is not None and neg_score + absolute_margin > pos_score:
        return f"sim(q,neg)={neg_score:.3f} > sim(q,pos)={pos_score:.3f} - absolute_margin {absolute_margin}"
    if relative_margin is not None and neg_score > pos_score - abs(pos_score) * relative_margin:
        return f"sim(q,neg)={neg_score:.3f} > sim(q,pos)={pos_score:.3f} - |sim(q,pos)| * relative_margin {relative_margin}"
    return None


@dataclass
class JudgeVerdict:
    """One judge's opinion of one (query, positive, negative): ``valid`` False means "this answers the query"."""

    valid: bool
    score: float | None = None
    reason: str = ""


@runtime_checkable
class NegativeJudge(Protocol):
    """Anything that can veto generated negatives; ``name`` goes into provenance."""

    name: str

    def judge(self, queries: Sequence[str], positives: Sequence[str], negatives: Sequence[str]) -> list[JudgeVerdict]:
        """One verdict per triple, in order."""
        ...


class CrossEncoderJudge:
    """A cross-encoder scores (query, negative) and (query, positive); invalid by the same margin semantics.

    Args:
        model: a ``CrossEncoder`` or a path/id to load one from.
        absolute_margin / relative_margin: as in the module docstring, on the cross-encoder's scores.
        max_score: optionally also invalid when ``score(q, neg) > max_score`` (e.g. a calibrated probability).
    """

    def __init__(
        self,
        model: Any,
        *,
        absolute_margin: float | None = 0.0,
        relative_margin: float | None = None,
        max_score: float | None = None,
        batch_size: int = 32,
    ) -> None:
        if isinstance(model, str):
            from sentence_transformers.cross_encoder import CrossEncoder

            model = CrossEncoder(model)
        self.model = model
        self.absolute_margin = absolute_margin
        self.relative_margin = relative_margin
        self.max_score = max_score
        self.batch_size = batch_size
        base = getattr(getattr(model, "model_card_data", None), "base_model", None)
        self.name = f"cross_encoder:{base or type(model).__name__}"

    def judge(self, queries: Sequence[str], positives: Sequence[str], negatives: Sequence[str]) -> list[JudgeVerdict]:
        if not queries:
            return []
        pairs = [(q, n) for q, n in zip(queries, negatives, strict=True)] + [
            (q, p) for q, p in zip(queries, positives, strict=True)
        ]
        scores = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False), dtype=float)
        scores = scores.reshape(len(pairs), -1)[:, -1]  # multi-label heads: last column is "relevant"
        n = len(queries)
        verdicts = []
        for neg, pos in zip(scores[:n], scores[n:], strict=True):
            reason = margin_violation(
                float(neg), float(pos), absolute_margin=self.absolute_margin, relative_margin=self.relative_margin
            )
            if reason is None and self.max_score is not None and neg > self.max_score:
                reason = f"score(q,neg)={neg:.3f} > max_score {self.max_score}"
            verdicts.append(JudgeVerdict(valid=reason is None, score=float(neg), reason=reason or ""))
        return verdicts


LLM_JUDGE_PROMPT_VERSION = "llm-judge-v1"
_LLM_JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"answers_query": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["answers_query", "reason"],
    "additionalProperties": False,
}


class LLMJudge:
    """Asks a chat LLM (any :class:`~negsynth_hf.generators.ChatGenerator`) whether a document answers the query.

    A small yes/no JSON prompt; an unparsable or failed answer is *not* a veto (the verdict is valid, and
    its reason says the judge abstained), so a flaky judge cannot silently empty a dataset.
    """

    def __init__(self, generator: Any, *, max_new_tokens: int = 96, temperature: float = 0.0) -> None:
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.name = f"llm:{getattr(generator, 'model_id', type(generator).__name__)}"

    def _request(self, query: str, negative: str) -> Any:
        from negsynth_hf.generators import ChatRequest

        system = (
            "You judge search results. Answer with JSON only: "
            '{"answers_query": true|false, "reason": "<one short sentence>"}. '
            "answers_query is true when the document contains information that answers or supports the query, "
            "even partially."
        )
        user = f"Query: {query}\n\nDocument: {negative}\n\nDoes the document answer the query?"
        return ChatRequest(
            messages=({"role": "system", "content": system}, {"role": "user", "content": user}),
            json_schema=_LLM_JUDGE_SCHEMA,
            schema_name="judgement",
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            prompt_version=LLM_JUDGE_PROMPT_VERSION,
        )

    def judge(self, queries: Sequence[str], positives: Sequence[str], negatives: Sequence[str]) -> list[JudgeVerdict]:
        responses = self.generator.generate([self._request(q, n) for q, n in zip(queries, negatives, strict=True)])
        verdicts = []
        for response in responses:
            answer = _parse_judgement(response.text) if response.ok else None
            if answer is None:
                reason = response.error or "unparsable answer"
                verdicts.append(JudgeVerdict(valid=True, reason=f"judge abstained: {reason}"))
            elif answer[0]:
                verdicts.append(
                    JudgeVerdict(valid=False, score=1.0, reason=f"LLM judge: answers the query ({answer[1]})")
                )
            else:
                verdicts.append(JudgeVerdict(valid=True, score=0.0, reason=""))
        return verdicts


def _parse_judgement(text: str | None) -> tuple[bool, str] | None:
    if not text:
        return None
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            value = data.get("answers_query")
            if isinstance(value, str):
                value = value.strip().lower() in ("true", "yes")
            if isinstance(value, bool):
                return value, str(data.get("reason", ""))[:200]
        except (json.JSONDecodeError, AttributeError):
            pass
    low = text.strip().lower()
    if low.startswith("yes"):
        return True, ""
    if low.startswith("no"):
        return False, ""
    return None


@dataclass
class Verification:
    """Per generated negative (same order as the input): similarities, validity, reasons and flags.

    ``valid[i]`` False means weight 0; ``reasons[i]`` says why (empty when valid).
    """

    sim_query: np.ndarray
    sim_positive: np.ndarray
    sim_query_positive: np.ndarray
    valid: np.ndarray
    reasons: list[str]
    flags: list[tuple[str, ...]]
    judges: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def verify_negatives(
    queries: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str],
    *,
    model: Any = None,
    embeddings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    absolute_margin: float | None = 0.0,
    relative_margin: float | None = None,
    judges: Sequence[NegativeJudge] = (),
    near_duplicate_jaccard: float = NEAR_DUPLICATE_JACCARD,
    near_duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> Verification:
    """Check each ``(queries[i], positives[i], negatives[i])`` triple.

    Args:
        model: the reference ``SentenceTransformer`` (needed unless ``embeddings`` are given).
        embeddings: precomputed normalized ``(query, positive, negative)`` embeddings, row-aligned.
        absolute_margin / relative_margin: margin rule on retriever cosine similarities (``None`` disables one).
        judges: extra judges; any of them can veto. They see only triples that passed the retriever guard.
        near_duplicate_jaccard / near_duplicate_similarity: near-duplicate-of-positive thresholds.
    """
    n = len(negatives)
    if not (len(queries) == len(positives) == n):
        raise ValueError(f"queries, positives and negatives must align, got {len(queries)}, {len(positives)}, {n}.")
    if embeddings is None:
        if model is None:
            raise ValueError("verify_negatives needs a reference model or precomputed embeddings.")
        embeddings = tuple(
            np.asarray(
                model.encode(
                    list(t), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress_bar
                )
            ).reshape(n, -1)
            for t in (queries, positives, negatives)
        )  # type: ignore[assignment]
    q, p, d = embeddings  # type: ignore[misc]
    sim_q = np.sum(q * d, axis=1) if n else np.zeros(0)
    sim_p = np.sum(p * d, axis=1) if n else np.zeros(0)
    sim_qp = np.sum(q * p, axis=1) if n else np.zeros(0)
    valid = np.ones(n, dtype=bool)
    reasons = [""] * n
    flags: list[tuple[str, ...]] = []
    counts = {"margin": 0, "near_duplicate": 0, "contains_query": 0, "judge": 0}
    for i in range(n):
        row_flags = []
        jac = token_jaccard(negatives[i], positives[i])
        if jac >= near_duplicate_jaccard or sim_p[i] >= near_duplicate_similarity:
            row_flags.append("near_duplicate_of_positive")
            valid[i] = False
            reasons[i] = f"near-duplicate of the positive (token jaccard {jac:.2f}, similarity {sim_p[i]:.3f})"
            counts["near_duplicate"] += 1
        if contains_query(negatives[i], queries[i]):
            row_flags.append("contains_query")
            counts["contains_query"] += 1
        if valid[i]:
            reason = margin_violation(
                float(sim_q[i]), float(sim_qp[i]), absolute_margin=absolute_margin, relative_margin=relative_margin
            )
            if reason is not None:
                valid[i] = False
                reasons[i] = f"false-negative guard: {reason}"
                row_flags.append("scores_above_positive")
                counts["margin"] += 1
        flags.append(tuple(row_flags))
    for judge in judges:
        todo = [i for i in range(n) if valid[i]]
        verdicts = judge.judge([queries[i] for i in todo], [positives[i] for i in todo], [negatives[i] for i in todo])
        for i, verdict in zip(todo, verdicts, strict=True):
            if not verdict.valid:
                valid[i] = False
                reasons[i] = f"{judge.name}: {verdict.reason}"
                flags[i] = (*flags[i], "judge_veto")
                counts["judge"] += 1
    return Verification(
        sim_query=sim_q,
        sim_positive=sim_p,
        sim_query_positive=sim_qp,
        valid=valid,
        reasons=reasons,
        flags=flags,
        judges=[j.name for j in judges],
        counts=counts,
    )
