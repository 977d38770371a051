"""Stage 1: load the retriever and mine each row's negatives (``negsynth_hf.mining``), embeddings kept for reuse."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negsynth_hf.mining import faiss_installed
from negsynth_hf.stages.inputs import PairRows

EMBEDDED_RETRIEVER_ID = "sentence-transformers/all-MiniLM-L6-v2 (embedded)"


@dataclass(frozen=True)
class MiningOptions:
    """``mine_hard_negatives``' range, margins and sampling (the margins are the guard's too)."""

    range_min: int = 0
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = 0.05
    max_score: float | None = None
    min_score: float | None = None
    sampling_strategy: Literal["random", "top"] = "top"

    def to_config(self, *, corpus_given: bool, known_positives_column: str | None) -> dict[str, Any]:
        """The build config's ``mining`` section."""
        return {
            **asdict(self),
            "use_faiss": faiss_installed(),
            "corpus": "given" if corpus_given else "positives",
            "known_positives_column": known_positives_column,
        }


@dataclass(frozen=True)
class Retriever:
    """The retriever model, its id for provenance, and the key of its cached embeddings (``None``: not cached)."""

    model: Any
    id: str
    cache_key: str | None


@dataclass
class MinedRows:
    """Per row: mined negative texts (best first); what mining logged and counted; the embeddings it made."""

    negatives: list[list[str]]
    log: str = ""
    counts: dict[str, int] = field(default_factory=lambda: {"rows_mined_short": 0, "rows_mined_empty": 0})
    query_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    document_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    #: per row, mined negatives the relevance judge found relevant (text, p): out of ``negatives``, masked slots
    judged_relevant: list[list[tuple[str, float]]] = field(default_factory=list)
    judge_stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def none(cls, n: int) -> MinedRows:
        return cls(negatives=[[] for _ in range(n)])


def judge_mined_rows(rows: PairRows, mined: MinedRows, policy: Any) -> MinedRows:
    """``mined`` without the negatives ``policy`` (a :class:`~negsynth_hf.verification.MinedJudge`) judges
    relevant; they are kept, with their p, in ``judged_relevant`` and counted."""
    from negsynth_hf.verification.mined import judge_mined

    verdicts = judge_mined(policy, rows.anchors, mined.negatives)
    return dataclasses.replace(
        mined, negatives=verdicts.kept, judged_relevant=verdicts.judged_relevant,
        counts={**mined.counts, **verdicts.counts}, judge_stats=verdicts.judge_stats,
    )  # fmt: skip


def load_retriever(retriever: Any) -> Retriever:
    """A SentenceTransformer from a model, a path/id, or ``None`` (the embedded all-MiniLM-L6-v2), keyed by what
    decides its embeddings: a folder by its files (:func:`~negsynth_hf.embeddings.folder_fingerprint`), a model
    in memory or from the Hub by its weights (:func:`~negsynth_hf.embeddings.weights_fingerprint`), never by
    its name alone (a model fine-tuned from MiniLM must not read MiniLM's cached embeddings)."""
    from sentence_transformers import SentenceTransformer

    from negsynth_hf.embeddings import folder_fingerprint, weights_fingerprint

    if retriever is None:
        from negsynth_hf.paths import embedded_retriever_path

        path = embedded_retriever_path()
        return Retriever(SentenceTransformer(str(path)), EMBEDDED_RETRIEVER_ID, f"folder:{folder_fingerprint(path)}")
    if isinstance(retriever, (str, Path)):
        model = SentenceTransformer(str(retriever))
        if Path(retriever).is_dir():
            return Retriever(model, str(retriever), f"folder:{folder_fingerprint(retriever)}")
        return Retriever(model, str(retriever), f"weights:{weights_fingerprint(model)}")
    name = getattr(getattr(retriever, "model_card_data", None), "base_model", None)
    return Retriever(retriever, name or type(retriever).__name__, f"weights:{weights_fingerprint(retriever)}")


def mine(
    rows: PairRows,
    retriever: Retriever,
    *,
    num_mined: int,
    corpus: list[str] | None,
    options: MiningOptions,
    cache_root: Path | None,
    batch_size: int,
) -> MinedRows:
    """``num_mined`` negatives per row; rows with fewer (margins) are counted, none is dropped."""
    from negsynth_hf.mining import mine_negatives

    if num_mined <= 0:
        return MinedRows.none(len(rows))
    emb_cache = None
    if cache_root is not None and retriever.cache_key:
        digest = hashlib.sha256(retriever.cache_key.encode()).hexdigest()[:16]
        emb_cache = str(cache_root / "embeddings" / digest)
    mined = mine_negatives(
        rows.pairs,
        model=retriever.model,
        num_negatives=num_mined,
        corpus=corpus,
        anchor_column=rows.columns.anchor,
        positive_column=rows.columns.positive,
        known_positives=rows.known_positives,
        batch_size=batch_size,
        cache_folder=emb_cache,
        verbose=False,
        **asdict(options),
    )
    counts = {"rows_mined_short": mined.rows_short, "rows_mined_empty": mined.rows_empty}
    if rows.known_positives is not None:
        counts["known_positives_excluded"] = mined.known_positives_excluded or 0
    return MinedRows(
        negatives=mined.negatives,
        log=mined.log,
        counts=counts,
        query_embeddings=mined.query_embeddings,
        document_embeddings=mined.document_embeddings,
    )
