"""Bad input through the public entry points: each case gets a clear error naming the row and column (or the file
and line), or a documented, counted per-row handling; never a bare traceback from deep inside a library.

Entry points: ``Dataset.map(CounterfactualNegatives)``, ``build_dataset``, ``Synthesizer``, ``CausalNegLoss`` and
the BEIR loader ``negsynth_hf.data.load_beir``. The LLM is the loopback fault server (tests/fault_server.py).
"""

from __future__ import annotations

import html
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from fault_server import FaultServer, LoopbackSpec, oracle_content, schema_name

from negsynth_hf.build import build_dataset
from negsynth_hf.data import load_beir
from negsynth_hf.generators import CachingGenerator, OpenAIChatGenerator
from negsynth_hf.synthesis import Synthesizer
from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives

N = 8


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def server():
    with FaultServer() as s:
        yield s


def base_rows(n: int = N) -> dict[str, list]:
    return {
        "anchor": [f"row-{i:03d}; does compound {i} lower blood pressure in adults" for i in range(n)],
        "positive": [
            f"In a trial of adults, compound {i} lowered systolic pressure by {i + 2} mmHg." for i in range(n)
        ],
    }


def naive(server: FaultServer, **kwargs) -> CounterfactualNegatives:
    kwargs.setdefault("strategy", "naive")
    kwargs.setdefault("num_generated", 2)
    return CounterfactualNegatives(LoopbackSpec(server.base_url), **kwargs)


def provenance(out) -> list[dict]:
    return [json.loads(r) for r in out[PROVENANCE_COLUMN]]


# ---------------------------------------------------------------------------------------------- columns
def test_missing_or_misnamed_columns_name_the_column(server, tiny_model):
    rows = base_rows()
    misnamed = Dataset.from_dict({"query": rows["anchor"], "positive": rows["positive"]})
    with pytest.raises(ValueError, match=r"needs column 'anchor'.*\['positive', 'query'\]"):
        misnamed.map(naive(server), batched=True)
    with pytest.raises(ValueError, match=r"needs column 'passage'"):
        Dataset.from_dict(rows).map(naive(server, positive_column="passage"), batched=True)
    with pytest.raises(ValueError, match=r"candidate column\(s\) \['mined_1'\] not in the dataset"):
        Dataset.from_dict(rows).map(naive(server, candidate_columns=["mined_1"]), batched=True)
    with pytest.raises(ValueError, match=r"needs column 'title'"):
        Dataset.from_dict(rows).map(naive(server, title_column="title"), batched=True)
    with pytest.raises(ValueError, match=r"pairs has no column 'anchor'"):
        build_dataset(misnamed, retriever=tiny_model, show_progress_bar=False, cache_dir="")
    with pytest.raises(ValueError, match=r"title_column 'title' not in pairs"):
        build_dataset(
            Dataset.from_dict(rows),
            retriever=tiny_model,
            generator=LoopbackSpec(server.base_url),
            num_mined=0,
            num_generated=1,
            title_column="title",
            show_progress_bar=False,
            cache_dir="",
        )
    with pytest.raises(ValueError, match="pairs is empty"):
        build_dataset(Dataset.from_dict({"anchor": [], "positive": []}), retriever=tiny_model, show_progress_bar=False)


BAD_CELLS = [
    pytest.param("anchor", None, id="None-query"),
    pytest.param("anchor", "", id="empty-query"),
    pytest.param("positive", "   \n\t", id="whitespace-positive"),
    pytest.param("positive", None, id="None-positive"),
]


@pytest.mark.parametrize(("column", "value"), BAD_CELLS)
def test_bad_cell_names_column_and_value_in_map(server, column, value):
    rows = base_rows()
    rows[column][5] = value
    with pytest.raises(
        ValueError, match=rf"column '{column}' must be a non-empty string, got {re.escape(repr(value))}"
    ):
        Dataset.from_dict(rows).map(naive(server), batched=True, batch_size=4)


def test_bad_cell_names_the_dataset_row(server):
    rows = base_rows()
    rows["anchor"][5] = None
    with pytest.raises(ValueError, match=r"^row 5: column 'anchor' must be a non-empty string, got None\.$"):
        Dataset.from_dict(rows).map(naive(server), batched=True, batch_size=4, with_indices=True)
    # without indices datasets passes no row numbers: the batch row, and how to get the dataset row
    with pytest.raises(ValueError, match=r"^row 1 of the batch: column 'anchor'.*with_indices=True"):
        Dataset.from_dict(rows).map(naive(server), batched=True, batch_size=4)


def test_bad_cell_names_the_dataset_row_with_indices_and_after_select(server):
    rows = base_rows()
    rows["positive"][5] = " "
    with pytest.raises(ValueError, match=r"^row 5: column 'positive'"):
        Dataset.from_dict(rows).map(naive(server), batched=True, batch_size=4, with_indices=True)
    with pytest.raises(ValueError, match=r"^row 5: column 'positive'"):  # num_proc shards: their offset counts
        Dataset.from_dict(rows).map(naive(server), batched=True, batch_size=2, num_proc=2, with_indices=True)
    reordered = Dataset.from_dict(rows).select([7, 6, 5, 4, 3, 2, 1, 0])  # rows of the dataset map sees
    with pytest.raises(ValueError, match=r"^row 2: column 'positive'"):
        reordered.map(naive(server), batched=True, batch_size=4, with_indices=True)
    with pytest.raises(ValueError, match=r"^row 1 of the batch: column 'positive'"):  # a direct call
        naive(server)({k: v[4:6] for k, v in rows.items()})


@pytest.mark.parametrize(("column", "value"), [*BAD_CELLS, pytest.param("anchor", 17, id="int-query")])
def test_build_dataset_names_the_row_and_column(tiny_model, column, value):
    rows = base_rows()
    rows[column] = [str(v) for v in rows[column]] if isinstance(value, int) else rows[column]
    data = {k: list(v) for k, v in rows.items()}
    data[column][5] = value
    if isinstance(value, int):  # a column mixing ints and strings cannot be one arrow column: make it all ints
        data[column] = list(range(N))
        expected = r"row 0: column 'anchor' must be a non-empty string, got 0"
    else:
        expected = rf"row 5: column '{column}' must be a non-empty string"
    with pytest.raises(ValueError, match=expected):
        build_dataset(Dataset.from_dict(data), retriever=tiny_model, show_progress_bar=False, cache_dir="")


def test_non_string_cells_name_the_column(server):
    ints = Dataset.from_dict({"anchor": list(range(N)), "positive": base_rows()["positive"]})
    with pytest.raises(ValueError, match=r"column 'anchor' must be a non-empty string, got 0"):
        ints.map(naive(server), batched=True)
    raw = Dataset.from_dict({"anchor": [b"caf\xe9 \xff bytes"] * 2, "positive": ["p one", "p two"]})  # binary column
    with pytest.raises(ValueError, match=r"column 'anchor' must be a non-empty string, got b'caf"):
        raw.map(naive(server), batched=True)


def test_invalid_title_is_a_recorded_per_row_failure(server):
    rows = base_rows()
    rows["title"] = [f"Title {i}" for i in range(N)]
    rows["title"][3] = None  # a missing title is fine (the prompt omits it)
    rows["title"][6] = ""
    out = Dataset.from_dict(rows).map(naive(server, title_column="title"), batched=True)
    assert all(r["failure_reason"] is None for r in provenance(out))
    # a non-string title cannot be stored next to strings by arrow; a direct call shows the per-row handling
    batch = {**base_rows(3), "title": ["ok title", 42, ["a", "list"]]}
    records = provenance(naive(server, title_column="title", strategy="query_edit")(batch))
    assert records[0]["failure_reason"] is None
    assert (
        records[1]["failure_reason"]
        == records[2]["failure_reason"]
        == ("invalid input: title must be a string or None")
    )


# ---------------------------------------------------------------------------------------------- rows
def test_duplicate_queries_are_answered_once_and_kept(server, tmp_path):
    rows = base_rows(6)
    for column in ("anchor", "positive"):
        rows[column][4] = rows[column][1]
        rows[column][5] = rows[column][1]
    server.reset_counts()
    spec = LoopbackSpec(server.base_url, cache_dir=str(tmp_path / "cache"))
    out = Dataset.from_dict(rows).map(CounterfactualNegatives(spec, strategy="naive", num_generated=2), batched=True)
    assert len(out) == 6  # duplicates are kept (their negatives are identical)
    assert server.count("row-001;") == 1  # one request for three identical rows (deduplicated by cache key)
    assert out["generated_1"][1] == out["generated_1"][4] == out["generated_1"][5] != ""
    records = provenance(out)
    assert all(r["failure_reason"] is None for r in records)


def _unescape_tag(prompt: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", prompt, re.DOTALL)
    assert match, prompt
    return html.unescape(match.group(1))


def _copy_positive(body: dict) -> str:
    """A generator that answers every generation request with the positive, verbatim."""
    if schema_name(body) == "generation":
        positive = _unescape_tag(body["messages"][1]["content"], "positive")
        item = {
            "node_id": "C1",
            "strategy_type": "entity_shift",
            "candidate_index": None,
            "text": positive,
            "explanation": "it is about a different entity",
        }
        return json.dumps({"negatives": [item]})
    return oracle_content(body)


def test_generator_returning_the_positive_is_flagged_and_masked(tiny_model, tmp_path):
    rows = base_rows(6)
    corpus = [f"Corpus note {i}: compound {i + 40} was studied for kidney outcomes in {1990 + i}." for i in range(30)]
    with FaultServer(responder=_copy_positive) as copier:
        out = Dataset.from_dict(rows).map(
            CounterfactualNegatives(LoopbackSpec(copier.base_url), strategy="counterfactual", num_generated=1),
            batched=True,
        )
        for record in provenance(out):
            assert "equals_positive" in record["negatives"][0]["flags"]
        result = build_dataset(
            Dataset.from_dict(rows),
            corpus=corpus,
            retriever=tiny_model,
            generator=LoopbackSpec(copier.base_url),
            strategy="counterfactual",
            num_mined=2,
            num_generated=1,
            show_progress_bar=False,
            cache_dir="",
        )
    counts = result.summary.counts
    assert counts["generated_masked"] == 6 and counts["generated_valid"] == 0
    for row in result.train:
        assert row["positive"] not in (row["negative_1"], row["negative_2"], row["negative_3"])
        assert row["labels"][2] == 0.0  # the generated slot is masked (weight 0)
    masked = result.provenance.filter(lambda r: r["status"] == "masked")
    assert masked["original_text"] == rows["positive"]


def test_candidate_equal_to_positive_is_not_offered_as_a_negative(server):
    rows = base_rows(2)
    rows["negative_1"] = [rows["positive"][0], "an unrelated mined passage about kidney stones"]
    server.reset_counts()
    out = naive(server, strategy="counterfactual")(rows)
    generation = [s for s in server.requests if schema_name(s.body) == "generation" and "row-000;" in s.prompt]
    assert generation
    prompt = generation[0].body["messages"][1]["content"]
    candidates = re.findall(r"<candidate number=\"\d+\">\n(.*?)\n</candidate>", prompt, re.DOTALL)
    assert rows["positive"][0] not in candidates
    assert "candidate" in json.dumps(provenance(out)[0])  # and the drop is counted/recorded
    assert "dropped: candidate 1 equals the positive (not offered)" in provenance(out)[0]["notes"]
    assert not any("dropped" in note for note in provenance(out)[1]["notes"])  # other rows keep their candidates


def test_extremely_long_documents_are_cut_in_prompts(server):
    rows = base_rows(2)
    rows["positive"][0] = "Compound zero lowered pressure. " * 20_000  # ~640k characters
    rows["anchor"][1] = "row-001; " + "what about compound one " * 5_000
    server.reset_counts()
    out = Dataset.from_dict(rows).map(naive(server, strategy="counterfactual"), batched=True)
    assert all(r["failure_reason"] is None for r in provenance(out))
    sizes = [len(json.dumps(s.body)) for s in server.requests]
    assert max(sizes) < 20_000, sizes  # max_passage_chars=2000 per text: bounded requests
    analysis = [s.prompt for s in server.requests if schema_name(s.body) == "analysis"]
    assert all(p.count(" ...\n</") >= 1 for p in analysis)  # the cut is visible in the prompt


def test_truncation_is_recorded_in_provenance(server):
    rows = base_rows(1)
    rows["positive"][0] = "Compound zero lowered pressure. " * 20_000
    out = Dataset.from_dict(rows).map(naive(server, strategy="counterfactual"), batched=True)
    notes = provenance(out)[0]["notes"]
    assert "truncated: positive cut from 640,000 to 2,000 characters in prompts" in notes, notes


def test_lone_surrogate_costs_at_most_its_own_row(server, tmp_path):
    cached = CachingGenerator(OpenAIChatGenerator(server.base_url, model="fault-model", api_key_env=None), tmp_path)
    items = [
        {"query": "row-000; does compound 0 help", "positive": "Compound 0 helped."},
        {"query": "row-001; bad \ud800 surrogate", "positive": "Compound 1 helped."},
        {"query": "row-002; does compound 2 help", "positive": "Compound 2 \udcff helped."},
        {"query": "row-003; does compound 3 help", "positive": "Compound 3 helped."},
    ]
    results = Synthesizer(cached, strategy="naive", num_negatives=2).synthesize(items)
    assert results[0].ok and results[3].ok, [r.failure_reason for r in results]


def test_lone_surrogate_without_cache_costs_only_its_row(server):
    gen = OpenAIChatGenerator(server.base_url, model="fault-model", api_key_env=None)
    items = [
        {"query": "row-000; does compound 0 help", "positive": "Compound 0 helped."},
        {"query": "row-001; bad \ud800 surrogate", "positive": "Compound 1 helped."},
    ]
    results = Synthesizer(gen, strategy="naive", num_negatives=2, max_attempts=1).synthesize(items)
    assert results[0].ok
    assert not results[1].ok and "UnicodeEncodeError" in results[1].failure_reason


# ---------------------------------------------------------------------------------------------- loss labels
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        pytest.param(torch.tensor([[2.0, 1, 0, 1], [1, 1, 0, 1]]), r"must lie in \[0, 1\]", id="weight-above-1"),
        pytest.param(torch.tensor([[-0.5, 1, 0, 1], [1, 1, 0, 1]]), r"must lie in \[0, 1\]", id="negative-weight"),
        pytest.param(torch.tensor([[float("nan"), 1, 0, 1], [1, 1, 0, 1]]), r"must lie in \[0, 1\]", id="nan"),
        pytest.param(torch.tensor([[1.0, 1, 0, 1]]), r"1 rows but the batch has 2 anchors", id="batch-mismatch"),
        pytest.param(torch.tensor([[1.0, 1, 0, 0.5], [1, 1, 0, 1]]), r"flags .* must be 0 or 1", id="soft-flag"),
    ],
)
def test_causal_neg_loss_rejects_bad_label_columns_clearly(tiny_model, labels, message):
    from negsynth_hf.losses import CausalNegLoss

    loss = CausalNegLoss(tiny_model)
    features = [tiny_model.tokenize(c) for c in (["q1", "q2"], ["p1", "p2"], ["n1", "n2"], ["m1", "m2"])]
    with pytest.raises(ValueError, match=message):
        loss(features, labels)
    ok = loss(features, torch.tensor([[1, 1, 0, 1], [1, 0, 0, 1]]))  # integer labels are fine
    assert ok.dim() == 0 and torch.isfinite(ok)


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(torch.tensor([1.0, 0.0]), id="scalar-label-column"),
        pytest.param(torch.ones(2, 3), id="wrong-width"),
        pytest.param(torch.ones(2, 4, 1), id="3-d"),
    ],
)
def test_causal_neg_loss_ignores_labels_outside_the_weight_layout_with_one_warning(tiny_model, labels):
    """Labels that do not claim the (batch, 2n) layout are not the loss's: ignored as MNRL ignores them, once
    warned about with their shape; the loss is then the loss without labels."""
    from negsynth_hf.losses import CausalNegLoss

    tiny_model.eval()
    loss = CausalNegLoss(tiny_model)
    features = [tiny_model.tokenize(c) for c in (["q1", "q2"], ["p1", "p2"], ["n1", "n2"], ["m1", "m2"])]
    shape = re.escape(str(tuple(labels.shape)))
    with pytest.warns(UserWarning, match=rf"ignores the label tensor of shape {shape}.*\(batch, 4\)"):
        ignored = loss(features, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per loss, not one per step
        assert loss(features, labels).item() == ignored.item() == loss(features, None).item()


# ---------------------------------------------------------------------------------------------- BEIR loader
GOOD_CORPUS = b'{"_id": "d1", "title": "T", "text": "doc one"}\n{"_id": "d2", "title": "", "text": "doc two"}\n'
GOOD_QUERIES = b'{"_id": "q1", "text": "query one"}\n'
GOOD_QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _collection(root: Path, *, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS) -> Path:
    folder = root / "coll"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)
    return folder


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"corpus": b'{"_id": "d1", "text": \n'}, r"corpus\.jsonl:1: not valid JSON", id="bad-json"),
        pytest.param(
            {"corpus": b'\xef\xbb\xbf{"_id": "d1", "text": "x"}\n'}, r"corpus\.jsonl:1: not valid JSON", id="bom"
        ),
        pytest.param(
            {"corpus": GOOD_CORPUS + b'{"_id": "d3", "text": "caf\xe9 \xff"}\n'},
            r"corpus\.jsonl.*(line|:)\s*3",
            id="not-utf8",
        ),
        pytest.param(
            {"corpus": GOOD_CORPUS + b'{"id": "d3", "text": "x"}\n'},
            r"corpus\.jsonl:3.*_id",
            id="missing-_id",
        ),
        pytest.param(
            {"queries": b'["q1", "query one"]\n'},
            r"queries\.jsonl:1",
            id="line-not-an-object",
        ),
        pytest.param(
            {"qrels": b"query-id\tcorpus-id\nq1\td1\n"},
            r"test\.tsv.*score",
            id="qrels-without-score-column",
        ),
        pytest.param(
            {"qrels": b"query-id,corpus-id,score\nq1,d1,1\n"},
            r"test\.tsv",
            id="qrels-comma-separated",
        ),
        pytest.param(
            {"qrels": b"query-id\tcorpus-id\tscore\nq1\td1\thigh\n"},
            r"test\.tsv.*(line|:)\s*2",
            id="qrels-non-numeric-score",
        ),
        pytest.param(
            {"qrels": b"query-id\tcorpus-id\tscore\nq1\td1\n"},
            r"test\.tsv.*(line|:)\s*2",
            id="qrels-short-row",
        ),
        pytest.param(
            {"qrels": b"q1\td1\t1\n"},
            r"test\.tsv.*header",
            id="qrels-without-header",
        ),
    ],
)
def test_beir_loader_malformed_files_name_file_and_line(tmp_path, files, message):
    folder = _collection(tmp_path, **files)
    with pytest.raises(ValueError, match=message):
        load_beir(folder)


def test_beir_loader_missing_parts_and_tolerated_oddities(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a BEIR-layout folder: corpus.jsonl is missing"):
        load_beir(tmp_path)
    folder = _collection(tmp_path, corpus=GOOD_CORPUS + b"\n" + b'{"_id": 7, "title": null, "text": null}\n')
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv does not exist; available splits: \['test'\]"):
        load_beir(folder, splits=["dev"])
    collection = load_beir(folder)  # blank lines skipped, numeric ids as strings, null text as ""
    assert collection.corpus["7"] == {"title": "", "text": ""}
    assert collection.qrels == {"test": {"q1": {"d1": 1}}}
