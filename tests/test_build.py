"""build_dataset: fixed schema without losing rows, fillers, counts, configs, caching, baselines."""

from __future__ import annotations

import pytest
from datasets import Dataset
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.build import build_dataset
from negsynth_hf.labels import LABEL_COLUMN


def _build(tiny_model, tmp_path, *, n=8, fail_rows=(), spec=None, **kwargs) -> BuiltDataset:
    kwargs.setdefault("num_mined", 3)
    kwargs.setdefault("num_generated", 2)
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    return build_dataset(
        Dataset.from_dict(pairs(n, fail_rows=fail_rows)),
        corpus=corpus(),
        retriever=tiny_model,
        generator=spec or ScriptedSpec(fail_token="FAIL"),
        strategy="naive",
        show_progress_bar=False,
        **kwargs,
    )


def test_fixed_schema_no_row_lost_when_generation_fails(tiny_model, tmp_path):
    n, m, g = 8, 3, 2
    result = _build(tiny_model, tmp_path, n=n, fail_rows=(1, 4), num_mined=m, num_generated=g)
    train, prov, counts = result.train, result.provenance, result.summary.counts
    assert train.column_names == ["anchor", "positive"] + [f"negative_{j}" for j in range(1, m + g + 1)] + [
        LABEL_COLUMN
    ]
    assert len(train) == n and counts["rows_in"] == counts["rows_out"] == n
    assert len(prov) == n * (m + g)
    assert counts["rows_generation_failed"] == 2
    assert counts["mined"] + counts["mined_filled"] == n * m
    assert counts["generated_valid"] + counts["generated_masked"] + counts["generated_filled"] == n * g
    assert counts["generated_filled"] >= 2 * g
    for i, row in enumerate(train):
        negs = [row[f"negative_{j}"] for j in range(1, m + g + 1)]
        assert all(isinstance(t, str) and t.strip() for t in negs)  # no "" fillers
        assert row["positive"] not in negs  # fillers are genuine negatives, never the positive
        labels = row[LABEL_COLUMN]
        assert labels[m + g :] == [0.0] * m + [1.0] * g
        rows = prov.filter(lambda r, i=i: r["row"] == i)
        assert rows["column"] == [f"negative_{j}" for j in range(1, m + g + 1)]
        assert rows["weight"] == pytest.approx(labels[: m + g])
        assert rows["text"] == negs
        if i in (1, 4):
            gen = rows.select(range(m, m + g))
            assert set(gen["status"]) == {"filled"} and gen["weight"] == [0.0] * g
            assert all(r and "scripted failure" in r for r in gen["row_failure_reason"])
    for r in prov:
        assert (r["weight"] == 0.0) == (r["status"] in ("filled", "masked")) or r["source"] == "generated"
        assert r["status"] in ("ok", "filled", "masked")
    assert result.config["generator"]["num"] == 3  # the spec's to_dict(), through the secret filter:
    assert result.config["generator"]["fail_token"] == "<redacted>"  # a *_token field is redacted by name
    assert result.config["strategy"] == "naive" and result.config["num_mined"] == m


def test_generator_none_is_a_mined_only_build(tiny_model, tmp_path):
    result = build_dataset(
        Dataset.from_dict(pairs(6)),
        corpus=corpus(),
        retriever=tiny_model,
        num_mined=2,
        show_progress_bar=False,
        cache_dir="",
    )
    assert result.num_generated == 0
    assert result.train.column_names == ["anchor", "positive", "negative_1", "negative_2", LABEL_COLUMN]
    assert all(lab[2:] == [0.0, 0.0] for lab in result.train[LABEL_COLUMN])
    assert set(result.provenance["source"]) == {"mined"}
    assert result.config["strategy"] is None and result.config["generator"] == {}
    with pytest.raises(ValueError, match="generator=None means no synthesis"):
        build_dataset(Dataset.from_dict(pairs(2)), retriever=tiny_model, num_generated=3, show_progress_bar=False)


def test_input_validation_names_column_and_row(tiny_model):
    with pytest.raises(ValueError, match="'positive'"):
        build_dataset(Dataset.from_dict({"anchor": ["q"]}), retriever=tiny_model, show_progress_bar=False)
    with pytest.raises(ValueError, match="row 1"):
        build_dataset(
            Dataset.from_dict({"anchor": ["q", ""], "positive": ["p", "p2"]}),
            retriever=tiny_model,
            show_progress_bar=False,
        )


def test_planted_false_negative_is_masked(tiny_model, tmp_path):
    data = pairs(6)
    planted = ((data["anchor"][2], data["positive"][2]),)  # the LLM "negative" of row 2 copies its positive
    result = _build(tiny_model, tmp_path, n=6, spec=ScriptedSpec(copies=planted), guard_policy="margin")
    prov = result.provenance.filter(lambda r: r["original_text"] is not None and r["row"] == 2)
    assert len(prov) == 1
    hit = prov[0]
    assert hit["original_text"] == data["positive"][2]
    assert hit["status"] == "masked" and hit["weight"] == 0.0
    assert "near_duplicate_of_positive" in hit["flags"] and hit["weight_reason"].startswith(
        "masked: near_duplicate: near-duplicate of the positive"
    )
    assert (
        hit["guard_policy"] == "margin"
        and hit["guard_decision"] == "masked"
        and hit["guard_reason"] == "near_duplicate"
    )
    assert data["positive"][2] not in [result.train[2][f"negative_{j}"] for j in range(1, 6)]
    assert result.summary.counts["masked_near_duplicate"] >= 1


def test_baselines_with_switches_off(tiny_model, tmp_path):
    result = _build(tiny_model, tmp_path, guard_policy="off", source_weights=False, hardness=False, num_generated=2)
    gen = result.provenance.filter(lambda r: r["source"] == "generated")
    assert set(gen["status"]) == {"ok"} and set(gen["weight"]) == {1.0}
    assert all(h is None for h in gen["hardness_percentile"])
    assert set(gen["guard_reason"]) == {"policy_off"}
    assert result.summary.counts["generated_masked"] == 0 and result.summary.counts["masked_margin"] == 0
    assert result.summary.counts["guard_kept_policy_off"] == result.summary.counts["generated"]
    assert result.config["guard"]["policy"]["mode"] == "off" and result.summary.guard["policy"] == "off"
    assert result.config["source_weights"] is False
    mined_only = _build(tiny_model, tmp_path, num_generated=0)
    assert mined_only.num_generated == 0 and len(mined_only.train.column_names) == 2 + 3 + 1


def test_rerun_hits_the_caches(tiny_model, tmp_path):
    spec = ScriptedSpec(cache_dir=str(tmp_path / "responses"))
    first = _build(tiny_model, tmp_path, spec=spec)
    assert first.summary.generator_stats["misses"] == 8
    # the synthesis stage's map output is cached: the generator is never even built
    second = _build(tiny_model, tmp_path, spec=spec)
    assert second.summary.generator_stats == {}
    assert second.train.to_dict() == first.train.to_dict()
    # without the map cache, the response cache answers every request: zero LLM calls
    third = _build(tiny_model, tmp_path, spec=spec, cache_dir="")
    assert third.summary.generator_stats["misses"] == 0 and third.summary.generator_stats["hits"] == 8
    assert third.summary.counts["llm_cached_calls"] == third.summary.counts["llm_calls"] == 8
    assert third.train.to_dict() == first.train.to_dict()


def test_save_load_roundtrip_and_markdown(tiny_model, tmp_path):
    result = _build(tiny_model, tmp_path)
    assert result.save(tmp_path / "out") == tmp_path / "out"
    loaded = BuiltDataset.load(tmp_path / "out")
    assert loaded.train.to_dict() == result.train.to_dict()
    assert loaded.provenance.num_rows == result.provenance.num_rows
    assert loaded.summary.counts == result.summary.counts
    md = result.to_markdown()
    for key in ("probe_auc_before", "probe_auc_after", "generated_filled", "synthesize"):
        assert key in md
    assert set(result.to_dataset_dict()) == {"train", "provenance"}


def test_training_dataset_subsets_columns_and_labels(tiny_model, tmp_path):
    result = _build(tiny_model, tmp_path, num_mined=3, num_generated=2)
    sub = result.training_dataset(num_mined=1, num_generated=1)
    assert sub.column_names == ["anchor", "positive", "negative_1", "negative_2", LABEL_COLUMN]
    for full, small in zip(result.train, sub, strict=True):
        assert small["negative_1"] == full["negative_1"] and small["negative_2"] == full["negative_4"]
        lab = full[LABEL_COLUMN]
        assert small[LABEL_COLUMN] == [lab[0], lab[3], 0.0, 1.0]
    mined_only = result.training_dataset(num_generated=0)
    assert mined_only.column_names[-1] == LABEL_COLUMN and len(mined_only.column_names) == 2 + 3 + 1
    assert result.training_dataset() is result.train
    with pytest.raises(ValueError):
        result.training_dataset(num_mined=4)


def test_mining_keeps_every_row_and_returns_its_embeddings(tiny_model):
    from negsynth_hf.mining import mine_negatives

    data = Dataset.from_dict(pairs(6))
    docs = corpus(20)
    mined = mine_negatives(data, model=tiny_model, num_negatives=3, corpus=docs, relative_margin=0.0)
    assert len(mined.negatives) == 6 and all(len(n) <= 3 for n in mined.negatives)
    assert mined.rows_short == sum(len(n) < 3 for n in mined.negatives)
    for negs, scores in zip(mined.negatives, mined.scores, strict=True):
        assert len(negs) == len(scores) and scores == sorted(scores, reverse=True)
    # the embeddings mining computed are handed back, so build_dataset never re-embeds the corpus
    assert set(mined.document_embeddings) == set(docs) | set(data["positive"])
    assert set(mined.query_embeddings) == set(data["anchor"])


def test_generated_only_build_fills_from_other_queries(tiny_model, tmp_path):
    result = _build(tiny_model, tmp_path, n=5, fail_rows=(2,), num_mined=0, num_generated=2)
    assert result.train.column_names == ["anchor", "positive", "negative_1", "negative_2", LABEL_COLUMN]
    row = result.train[2]
    assert row[LABEL_COLUMN] == [0.0, 0.0, 1.0, 1.0]
    others = set(result.train["positive"]) - {row["positive"]}
    assert {row["negative_1"], row["negative_2"]} <= others  # another query's positive: a genuine negative


def test_known_positives_are_never_mined_and_the_pool_is_unchanged(tiny_model):
    """A judged-relevant document of a query is kept out of that query's negatives (and counted), the next
    candidates move up, other rows are untouched, and texts outside the candidate pool change nothing."""
    from negsynth_hf.mining import mine_negatives

    data, docs = Dataset.from_dict(pairs(6)), corpus(20)
    kwargs = {"model": tiny_model, "num_negatives": 3, "corpus": docs, "relative_margin": 0.0}
    before = mine_negatives(data, **kwargs)
    top = before.negatives[0][0]
    known = [[top, data["positive"][0]]] + [[] for _ in range(5)]
    after = mine_negatives(data, known_positives=known, **kwargs)
    assert top not in after.negatives[0] and len(after.negatives[0]) == 3
    assert after.negatives[0][:2] == before.negatives[0][1:]  # the rest move up one rank
    assert after.negatives[1:] == before.negatives[1:]
    assert after.known_positives_excluded == 1
    outside = mine_negatives(data, known_positives=[["not a corpus text"]] + [[] for _ in range(5)], **kwargs)
    assert outside.negatives == before.negatives and outside.known_positives_excluded == 0
    with pytest.raises(ValueError, match="one list per row"):
        mine_negatives(data, known_positives=[[]], **kwargs)


def test_build_reads_the_known_positives_column(tiny_model, tmp_path):
    from negsynth_hf.mining import mine_negatives

    data, docs = pairs(6), corpus(20)
    first = mine_negatives(  # build_dataset's default margin
        Dataset.from_dict(data), model=tiny_model, num_negatives=3, corpus=docs, relative_margin=0.05
    ).negatives[2]
    with_known = {**data, "known_positives": [[] for _ in range(6)]}
    with_known["known_positives"][2] = first[:2]
    kwargs = {"corpus": docs, "retriever": tiny_model, "num_mined": 3, "show_progress_bar": False}
    kwargs["cache_dir"] = str(tmp_path / "cache")
    result = build_dataset(Dataset.from_dict(with_known), **kwargs)
    row = result.train[2]
    assert not set(first[:2]) & {row[f"negative_{j}"] for j in (1, 2, 3)}
    assert result.summary.counts["known_positives_excluded"] == 2
    assert result.config["mining"]["known_positives_column"] == "known_positives"
    ignored = build_dataset(Dataset.from_dict(with_known), known_positives_column=None, **kwargs)
    assert ignored.train[2]["negative_1"] == first[0] and "known_positives_excluded" not in ignored.summary.counts
    # a common mistake: one text per row instead of a list of texts
    bad = {**with_known, "known_positives": [None, None, "a relevant text", None, None, None]}
    with pytest.raises(ValueError, match="row 2: column 'known_positives' must be a list"):
        build_dataset(Dataset.from_dict(bad), **kwargs)


def test_fillers_never_borrow_a_known_positive(tiny_model, tmp_path):
    data = pairs(5, fail_rows=(2,))
    others = [p for i, p in enumerate(data["positive"]) if i != 2]
    data["known_positives"] = [[] for _ in range(5)]
    data["known_positives"][2] = others[1:]  # every other query's positive but one is relevant to row 2
    result = build_dataset(
        Dataset.from_dict(data),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(fail_token="FAIL"),
        strategy="naive",
        num_mined=0,
        num_generated=2,
        show_progress_bar=False,
        cache_dir=str(tmp_path / "cache"),
    )
    row = result.train[2]
    assert row["negative_1"] == row["negative_2"] == others[0]
