"""evaluate_models(): base vs trained on the same queries/documents, JSON + markdown that round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from negsynth_hf.data import load_beir
from negsynth_hf.evaluation import METRICS, EvaluationResult, ModelScores, evaluate_models, pick_metrics

TOPICS = ["vitamin d bone density", "insulin resistance obesity", "tumor suppressor p53", "antibiotic resistance genes"]


def write_beir(folder: Path, *, docs_per_topic: int = 6) -> Path:
    """A tiny judged BEIR folder: 4 topics, one relevant doc per query, distractors on other topics."""
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, test, train = [], [], [], []
    for t, topic in enumerate(TOPICS):
        for j in range(docs_per_topic):
            corpus.append({"_id": f"{t}{j}", "title": f"{topic} study {j}", "text": f"Results on {topic}, cohort {j}."})
        queries.append({"_id": str(t), "text": f"does {topic} matter?"})
        queries.append({"_id": str(10 + t), "text": f"evidence on {topic} in cohort 1"})
        test.append((str(t), f"{t}0"))
        train.append((str(10 + t), f"{t}1"))
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n", encoding="utf-8")
    for name, rows in (("test", test), ("train", train)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
        (folder / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_pick_metrics_reads_any_evaluator_name():
    raw = {"x-test_cosine_ndcg@10": 0.5, "x-test_cosine_mrr@10": 0.25, "x-test_cosine_recall@100": 1.0, "other": 3}
    assert pick_metrics(raw) == {"nDCG@10": 0.5, "MRR@10": 0.25, "Recall@100": 1.0}
    with pytest.raises(KeyError, match="recall@100"):
        pick_metrics({"a_cosine_ndcg@10": 0.1, "a_cosine_mrr@10": 0.1})


def test_evaluate_base_vs_trained(tmp_path, tiny_model_path, minilm_path):
    collection = load_beir(write_beir(tmp_path / "beir"))
    result = evaluate_models(
        collection, {"base": tiny_model_path, "trained": minilm_path}, split="test", show_progress_bar=False
    )
    assert [m.name for m in result.models] == ["base", "trained"]
    assert result.num_queries == 4 and result.corpus_size == result.full_corpus_size == 24
    trained = result.scores("trained")
    # recompute from ranks: one judged doc per query -> nDCG@10 = mean 1/log2(1 + rank), MRR@10 = mean 1/rank
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path)
    ids = list(collection.corpus)
    docs = model.encode([collection.doc_text(d) for d in ids], convert_to_tensor=True)
    qids = collection.split_query_ids("test")
    sims = model.similarity(model.encode([collection.queries[q] for q in qids], convert_to_tensor=True), docs)
    ranks = [
        1 + int((row > row[ids.index(next(iter(collection.qrels["test"][q])))]).sum())
        for q, row in zip(qids, sims, strict=True)
    ]
    ndcg = sum(1 / math.log2(1 + r) if r <= 10 else 0.0 for r in ranks) / len(ranks)
    mrr = sum(1 / r if r <= 10 else 0.0 for r in ranks) / len(ranks)
    assert trained["nDCG@10"] == pytest.approx(ndcg, abs=1e-4)
    assert trained["MRR@10"] == pytest.approx(mrr, abs=1e-4)
    assert trained["Recall@100"] == 1.0  # 24 documents
    for m in result.models:
        assert set(m.metrics) == {label for label, _, _ in METRICS}
        assert all(0.0 <= v <= 1.0 for v in m.metrics.values())

    result.save(tmp_path / "eval")
    again = EvaluationResult.load(tmp_path / "eval")
    assert again == result
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| base |" in table and "| trained |" in table and "Δ (trained − base)" in table
    delta = trained["nDCG@10"] - result.scores("base")["nDCG@10"]
    assert f"{delta:+.4f}" in table
    # the paired test's means are the evaluator's own metrics (same queries, same documents), with a p-value
    tests = {t["metric"]: t for t in result.significance}
    assert set(tests) == {"ndcg@10", "mrr@10", "recall@100"}
    assert tests["ndcg@10"]["delta"] == pytest.approx(delta, abs=1e-4) and tests["ndcg@10"]["n_queries"] == 4
    assert tests["mrr@10"]["mean_a"] == pytest.approx(trained["MRR@10"], abs=1e-4)
    assert all(0.0 <= t["p_value"] <= 1.0 for t in tests.values()) and "p (paired randomization test)" in table


def test_query_and_corpus_subsets_are_documented(tmp_path, tiny_model_path):
    collection = load_beir(write_beir(tmp_path / "beir"))
    result = evaluate_models(
        collection, {"base": tiny_model_path}, max_queries=2, corpus_size=10, show_progress_bar=False
    )
    assert result.num_queries == 2 and result.corpus_size == 10 and result.full_corpus_size == 24
    assert "subset of 24" in result.to_markdown()


def test_markdown_without_base():
    result = EvaluationResult("d", "test", 1, 5, 5, [ModelScores("trained", "m", {"nDCG@10": 0.5}, 1.0)])
    md = result.to_markdown()
    assert "Δ" not in md and "0.5000" in md and "nan" in md
    assert math.isnan(float("nan"))


def test_evaluate_step_truncates_base_and_trained_alike(tmp_path, tiny_model_path, monkeypatch):
    """A trained model saves train.max_seq_length; the base keeps its own (MiniLM: 256). The evaluate step must
    give both the same truncation, or "trained vs base" also measures the input length."""
    import negsynth_hf.evaluation as evaluation
    from negsynth_hf.cli import run_evaluate
    from negsynth_hf.recipe_config import RecipeConfig

    seen = {}

    def fake_load_model(spec, *, max_seq_length=None, device=None):  # records, then loads the real model
        seen[spec] = max_seq_length
        return real_load_model(spec, max_seq_length=max_seq_length, device=device)

    real_load_model = evaluation.load_model
    monkeypatch.setattr(evaluation, "load_model", fake_load_model)
    cfg = RecipeConfig()
    cfg.run.run_dir = str(tmp_path / "run")
    cfg.run.base_model = tiny_model_path
    cfg.data.dataset = str(write_beir(tmp_path / "beir"))
    cfg.evaluate.eval_model_dir = tiny_model_path  # stands in for a trained model
    cfg.train.max_seq_length = 48
    run_evaluate(cfg)
    assert seen == {tiny_model_path: 48}
    cfg.evaluate.eval_max_seq_length = 32
    run_evaluate(cfg)
    assert seen == {tiny_model_path: 32}
