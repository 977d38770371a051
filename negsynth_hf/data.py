"""Reading judged retrieval collections (BEIR layout) into what the transform, trainer and evaluator take.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header). Only judged queries of a
split are used, as BEIR's own loader does.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset


@dataclass
class BeirCollection:
    """A judged collection: ``corpus[doc_id] = {"title", "text"}``, ``queries[qid] = text``,
    ``qrels[split][qid][doc_id] = score`` (scores > 0 only)."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def doc_text(self, doc_id: str) -> str:
        return document_text(self.corpus[doc_id])

    def split_query_ids(self, split: str) -> list[str]:
        """Judged query ids of ``split`` that exist in ``queries``, in numeric-then-lexical order."""
        return sorted((q for q in self._split(split) if q in self.queries), key=_id_sort_key)

    def _split(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.qrels:
            raise ValueError(f"Collection {self.name!r} has no qrels split {split!r}; available: {sorted(self.qrels)}.")
        return self.qrels[split]


def _id_sort_key(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def document_text(doc: dict[str, str]) -> str:
    """``title + ". " + text``, without repeating a title that the text already starts with (Cranfield does)."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    if not title:
        return text
    if text.lower().startswith(title.lower()):
        return text
    return f"{title}. {text}" if text else title


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line; any defect is a ValueError naming the file and line."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid UTF-8 ({err.reason} at byte {err.start}).") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg}).") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}.")
            if row.get("_id") is None:
                raise ValueError(f"{path}:{line_no}: the object has no '_id'.")
            yield line_no, row


def _text_field(row: dict, key: str, path: Path, line_no: int) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{path}:{line_no}: {key!r} must be a string, got {type(value).__name__}.")
    return value


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qrels[query_id][doc_id] = score`` (scores > 0); a missing header or a bad row names the file and line."""
    table: dict[str, dict[str, int]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if not {"query-id", "corpus-id", "score"} <= set(reader.fieldnames or ()):
                raise ValueError(
                    f"{path}: the first line must be the tab-separated header 'query-id, corpus-id, score'; "
                    f"got {reader.fieldnames!r}."
                )
            for row in reader:
                query_id, doc_id = row["query-id"], row["corpus-id"]
                try:
                    score = int(float(row["score"]))
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"{path}:{reader.line_num}: score {row['score']!r} is not a number "
                        "(expected query-id, corpus-id and score separated by tabs)."
                    ) from err
                if score > 0:
                    table.setdefault(str(query_id), {})[str(doc_id)] = score
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}).") from err
    return table


def load_beir(folder: str | Path, *, splits: Iterable[str] | None = None) -> BeirCollection:
    """Load a BEIR-layout folder. ``splits`` defaults to every ``qrels/*.tsv`` except ``all``."""
    folder = Path(folder)
    for required in ("corpus.jsonl", "queries.jsonl", "qrels"):
        if not (folder / required).exists():
            raise FileNotFoundError(
                f"{folder} is not a BEIR-layout folder: {required} is missing "
                "(expected corpus.jsonl, queries.jsonl and qrels/<split>.tsv)."
            )
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    corpus = {
        str(row["_id"]): {
            "title": _text_field(row, "title", corpus_path, n),
            "text": _text_field(row, "text", corpus_path, n),
        }
        for n, row in _read_jsonl(corpus_path)
    }
    queries = {str(row["_id"]): _text_field(row, "text", queries_path, n) for n, row in _read_jsonl(queries_path)}
    if splits is None:
        splits = [p.stem for p in sorted((folder / "qrels").glob("*.tsv")) if p.stem != "all"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in splits:
        path = folder / "qrels" / f"{split}.tsv"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; available splits: {[p.stem for p in (folder / 'qrels').glob('*.tsv')]}."
            )
        table = _read_qrels(path)
        qrels[split] = table
    return BeirCollection(name=folder.name, corpus=corpus, queries=queries, qrels=qrels)


def split_train_validation(
    query_ids: list[str], *, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministically hold out a share of training queries for model selection (never tune on test)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    shuffled = list(query_ids)
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(shuffled) * validation_fraction))
    val = set(shuffled[:n_val])
    return [q for q in query_ids if q not in val], [q for q in query_ids if q in val]


def pairs_dataset(
    collection: BeirCollection,
    split: str,
    *,
    query_ids: list[str] | None = None,
    max_queries: int | None = None,
    max_positives_per_query: int | None = 1,
    seed: int = 0,
) -> Dataset:
    """(anchor, positive) pairs of judged queries, highest-graded documents first, with ids for provenance.

    Columns: ``anchor``, ``positive``, ``query_id``, ``positive_id``, and ``known_positives``: the texts of
    every document judged relevant to the query (grade > 0), which :func:`negsynth_hf.build.build_dataset`
    keeps out of that row's negatives. With ``max_positives_per_query=1`` (the default) the other relevant
    documents would otherwise be prime mined "negatives" (CISI queries have dozens). Queries whose relevant
    documents are all missing from the corpus are skipped and counted in ``dataset.info.description``.
    """
    table = collection._split(split)
    ids = query_ids if query_ids is not None else collection.split_query_ids(split)
    if max_queries is not None and len(ids) > max_queries:
        ids = sorted(random.Random(seed).sample(ids, max_queries), key=_id_sort_key)
    rows: dict[str, list] = {"anchor": [], "positive": [], "query_id": [], "positive_id": [], "known_positives": []}
    skipped = 0
    for qid in ids:
        docs = [d for d in table.get(qid, {}) if d in collection.corpus and collection.doc_text(d).strip()]
        if not docs or not collection.queries.get(qid, "").strip():
            skipped += 1
            continue
        docs.sort(key=lambda d: (-table[qid][d], _id_sort_key(d)))
        relevant = [collection.doc_text(d) for d in docs if table[qid][d] > 0]
        for doc_id in docs[:max_positives_per_query] if max_positives_per_query else docs:
            rows["anchor"].append(collection.queries[qid])
            rows["positive"].append(collection.doc_text(doc_id))
            rows["query_id"].append(qid)
            rows["positive_id"].append(doc_id)
            rows["known_positives"].append(relevant)
    dataset = Dataset.from_dict(rows)
    dataset.info.description = (
        f"{collection.name}/{split}: {len(ids)} queries, {skipped} skipped (no usable judged doc)"
    )
    return dataset


def evaluator_inputs(
    collection: BeirCollection, split: str, *, query_ids: list[str] | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """``(queries, corpus, relevant_docs)`` for sentence-transformers' ``InformationRetrievalEvaluator``."""
    table = collection._split(split)
    ids = query_ids if query_ids is not None else collection.split_query_ids(split)
    queries = {q: collection.queries[q] for q in ids if q in table}
    relevant = {q: set(table[q]) for q in queries}
    corpus = {d: collection.doc_text(d) for d in collection.corpus}
    return queries, corpus, relevant


def corpus_texts(collection: BeirCollection) -> list[str]:
    """Every non-empty document text (the pool ``mine_hard_negatives`` mines from)."""
    return [t for t in (collection.doc_text(d) for d in collection.corpus) if t.strip()]


def mining_corpus(
    collection: BeirCollection, split: str, query_ids: Iterable[str], *, corpus_size: int | None, seed: int = 0
) -> list[str]:
    """Non-empty texts to mine from: every document judged in ``split`` for ``query_ids`` plus seeded random
    others, ``corpus_size`` in all (:func:`subset_corpus`; ``None``: the whole corpus, :func:`corpus_texts`)."""
    if corpus_size is None:
        return corpus_texts(collection)
    table = collection.qrels[split]
    judged = {q: set(table.get(q, {})) for q in query_ids}
    docs = {d: collection.doc_text(d) for d in collection.corpus}
    subset = subset_corpus(docs, judged, corpus_size=corpus_size, seed=seed)
    return [t for t in subset.values() if t.strip()]


def subset_corpus(
    corpus: dict[str, str], relevant: dict[str, set[str]], *, corpus_size: int | None, seed: int = 0
) -> dict[str, str]:
    """At most ``corpus_size`` documents: every judged one (``relevant``'s) plus seeded random others, in corpus
    order (``None`` or a size >= the corpus: all). The one subsetting rule of mining, validation and evaluation."""
    if corpus_size is None or corpus_size >= len(corpus):
        return dict(corpus)
    judged = {d for docs in relevant.values() for d in docs if d in corpus}
    rest = sorted(d for d in corpus if d not in judged)
    fill = max(0, corpus_size - len(judged))
    picked = judged | set(random.Random(seed).sample(rest, min(fill, len(rest))))
    return {d: corpus[d] for d in corpus if d in picked}
