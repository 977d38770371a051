"""Staging folders round-trip offline, cards carry the metadata, and the upload path calls HfApi correctly.

HfApi methods are replaced by recording mocks (``RecordingHfApi``): no test touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, ModelCard
from sentence_transformers import SentenceTransformer

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.evaluation import EvaluationResult, ModelScores
from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.publish import (
    StagingResult,
    UploadTarget,
    hub_token,
    rewrite_adapter_base,
    stage_dataset,
    stage_models,
    triplet_view,
    upload_targets,
)
from negsynth_hf.recipe_config import TrainConfig
from negsynth_hf.training import train

BASE_ID = "sentence-transformers/all-MiniLM-L6-v2"
PROBE = ["does vitamin d reduce fractures?", "p53 mutations in tumors", "an unrelated sentence"]
SECRET = "hf_SECRETTOKEN1234567890"


def built_dataset(n: int = 12) -> BuiltDataset:
    """What build_dataset produces: 2 mined + 1 generated column, provenance with one row per slot."""
    train_rows = {"anchor": [], "positive": [], "negative_1": [], "negative_2": [], "negative_3": [], "labels": []}
    prov = {"row": [], "column": [], "source": [], "sim_query": [], "weight": [], "status": []}
    for i in range(n):
        train_rows["anchor"].append(f"claim {i}: treatment {i % 4} lowers risk {i}")
        train_rows["positive"].append(f"trial {i} shows treatment {i % 4} lowers risk {i}")
        train_rows["negative_1"].append(f"mined abstract {i} about treatment {(i + 1) % 4}")
        train_rows["negative_2"].append(f"second mined abstract {i}")
        train_rows["negative_3"].append(f"generated abstract {i} where treatment {i % 4} raises risk")
        gen_w = 0.0 if i == 0 else 0.7
        mined_w = 0.0 if i == 0 else 1.0  # row 0: nothing valid -> dropped from the triplet view
        train_rows["labels"].append(encode_negative_labels([mined_w, mined_w, gen_w], [False, False, True]))
        # generated negative is the hardest (highest sim) on odd rows
        for col, src, sim, w in (
            ("negative_1", "mined", 0.6, mined_w),
            ("negative_2", "mined", 0.5, mined_w),
            ("negative_3", "generated", 0.9 if i % 2 else 0.1, gen_w),
        ):
            prov["row"].append(i)
            prov["column"].append(col)
            prov["source"].append(src)
            prov["sim_query"].append(sim)
            prov["weight"].append(w)
            prov["status"].append("valid" if w else "filled")
    build_config = {
        "num_mined": 2,
        "num_generated": 1,
        "retriever": "/some/local/path/model",
        "generator": {"backend": "openai", "model": "served-model", "api_key_env": "OPENAI_API_KEY", "api_key": SECRET},
        "strategy": "query_edit",
        "mining_log": "cache at /root/.cache",
    }
    recipe_info = {
        "source": {"dataset": "scifact", "train_split": "train"},
        "num_train_queries": n,
        "retriever_id": BASE_ID,
        "validation_query_ids": ["1", "2"],
    }
    return BuiltDataset(
        Dataset.from_dict(train_rows),
        Dataset.from_dict(prov),
        summary={"counts": {"rows_out": n}},
        config=build_config,
        recipe_info=recipe_info,
        markdown="retriever `/some/local/path/model`\n\n| Count | Value |\n|---|---:|\n| rows_out | 12 |\n",
    )


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_model_path):
    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(max_steps=2, per_device_train_batch_size=6, learning_rate=5e-2, warmup_ratio=0.0)
    train(built_dataset().train, base_model=tiny_model_path, config=config, output_dir=out)
    return out


@pytest.fixture
def eval_result() -> EvaluationResult:
    return EvaluationResult(
        "scifact",
        "test",
        300,
        5183,
        5183,
        [
            ModelScores("base", "embedded", {"nDCG@10": 0.645, "MRR@10": 0.6, "Recall@100": 0.92}, 1.0),
            ModelScores("trained", "m", {"nDCG@10": 0.661, "MRR@10": 0.62, "Recall@100": 0.93}, 1.0),
        ],
    )


def test_triplet_view_picks_hardest_valid_negative():
    built = built_dataset()
    view, dropped = triplet_view(built.train, built.provenance)
    assert dropped == 1 and len(view) == 11 and view.column_names == ["anchor", "positive", "negative"]
    rows = {r["anchor"]: r["negative"] for r in view}
    assert rows[built.train[1]["anchor"]] == built.train[1]["negative_3"]  # generated, sim 0.9
    assert rows[built.train[2]["anchor"]] == built.train[2]["negative_1"]  # mined, sim 0.6 > 0.5 > 0.1
    # without provenance: first valid column
    view2, _ = triplet_view(built.train)
    assert view2[0]["negative"] == built.train[1]["negative_1"]


def test_staged_dataset_round_trips_and_trains_with_causalneg(tmp_path, tiny_model_path):
    folder = stage_dataset(
        built_dataset(),
        tmp_path / "dataset",
        repo_id="me/scifact-negsynth",
        base_model_id=BASE_ID,
        license="cc-by-nc-2.0",
        source_datasets=["BeIR/scifact"],
        source_name="SciFact",
    )
    ntuple = load_dataset(str(folder), "n-tuple", split="train")
    assert ntuple.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "labels"]
    assert len(ntuple) == 12 and len(ntuple[0]["labels"]) == 6
    assert load_dataset(str(folder), split="train").column_names == ntuple.column_names  # n-tuple is the default
    triplet = load_dataset(str(folder), "triplet", split="train")
    assert triplet.column_names == ["anchor", "positive", "negative"] and len(triplet) == 11
    provenance = load_dataset(str(folder), "provenance", split="train")
    assert len(provenance) == 36 and "weight" in provenance.column_names

    # trains with CausalNegLoss as loaded: no column juggling
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from negsynth_hf.losses import CausalNegLoss

    model = SentenceTransformer(tiny_model_path)
    loss = CausalNegLoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "t"),
        max_steps=1,
        per_device_train_batch_size=4,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        report_to="none",
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ntuple, loss=loss).train()
    assert loss.last_diagnostics  # the loss saw generated flags from the labels column
    assert "masked_fraction" in loss.last_diagnostics


def test_restaging_changed_data_is_not_served_from_the_datasets_cache(tmp_path):
    """datasets caches local folders by basename: a rebuilt staging must still load its own rows."""
    first = stage_dataset(built_dataset(12), tmp_path / "dataset", repo_id="me/ds")
    assert len(load_dataset(str(first), "n-tuple", split="train")) == 12
    second = stage_dataset(built_dataset(8), tmp_path / "dataset", repo_id="me/ds")
    assert second != first and not first.exists()
    assert len(load_dataset(str(second), "n-tuple", split="train")) == 8
    assert [p.name for p in tmp_path.iterdir()] == [second.name]


def test_dataset_card_metadata(tmp_path):
    folder = stage_dataset(
        built_dataset(),
        tmp_path / "ds",
        repo_id="me/ds",
        base_model_id=BASE_ID,
        license="cc-by-nc-2.0",
        source_datasets=["BeIR/scifact"],
        source_name="SciFact",
    )
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["task_categories"] == ["sentence-similarity", "text-retrieval"]
    assert data["annotations_creators"] == ["machine-generated"]
    assert data["source_datasets"] == ["BeIR/scifact"]
    assert {"sentence-transformers", "synthetic", "hard-negatives"} <= set(data["tags"])
    assert data["license"] == "cc-by-nc-2.0"
    configs = {c["config_name"]: c for c in data["configs"]}
    assert set(configs) == {"n-tuple", "triplet", "provenance"} and configs["n-tuple"]["default"] is True
    assert configs["triplet"]["data_files"] == [{"split": "train", "path": "triplet/train-*.parquet"}]
    text = card.text
    assert 'load_dataset("me/ds", "n-tuple"' in text and "CausalNegLoss" in text
    assert "rows_out" in text  # the build summary table
    assert '"strategy": "query_edit"' in text  # generation settings
    assert f'"retriever": "{BASE_ID}"' in text and "/some/local/path" not in text
    assert SECRET not in text and "<redacted>" in text and "mining_log" not in text


def test_staged_models_reload_to_the_same_embeddings(trained_dir, tmp_path, tiny_model_path, eval_result):
    staged = stage_models(
        trained_dir,
        tmp_path,
        model_repo_id="me/tiny-causalneg",
        adapter_repo_id="me/tiny-causalneg-lora",
        base_model_id=BASE_ID,
        eval_result=eval_result,
        dataset_repo_id="me/ds",
        source_name="SciFact",
    )
    in_memory = SentenceTransformer(str(trained_dir / "merged")).encode(PROBE)
    merged = SentenceTransformer(str(staged["model"]))
    np.testing.assert_allclose(merged.encode(PROBE), in_memory, atol=1e-5)

    adapter_config = json.loads((staged["adapter"] / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == BASE_ID
    base = SentenceTransformer(tiny_model_path)
    base.load_adapter(str(staged["adapter"]))
    np.testing.assert_allclose(base.encode(PROBE), in_memory, atol=1e-5)
    assert not np.allclose(SentenceTransformer(tiny_model_path).encode(PROBE), in_memory, atol=1e-4)


def test_model_cards_metadata(trained_dir, tmp_path, eval_result):
    staged = stage_models(
        trained_dir,
        tmp_path,
        model_repo_id="me/m",
        adapter_repo_id="me/m-lora",
        base_model_id=BASE_ID,
        eval_result=eval_result,
        dataset_repo_id="me/ds",
        source_name="SciFact",
        eval_dataset_id="BeIR/scifact",
    )
    card = ModelCard.load(staged["model"] / "README.md")
    data = card.data
    assert data.base_model == BASE_ID and data.datasets == ["me/ds"]
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert "loss:CausalNegLoss" in data.tags
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values == {"ndcg_at_10": 0.661, "mrr_at_10": 0.62, "recall_at_100": 0.93}
    assert all(r.dataset_split == "test" and r.dataset_type == "BeIR/scifact" for r in data.eval_results)
    assert 'SentenceTransformer("me/m")' in card.text and "## Limitations" in card.text
    assert '"entropy_weight": 0.05' in card.text  # loss config
    assert "@inproceedings" in card.text and "| trained |" in card.text

    adapter = ModelCard.load(staged["adapter"] / "README.md")
    assert {"peft", "lora"} <= set(adapter.data.tags) and adapter.data.base_model == BASE_ID
    assert 'load_adapter("me/m-lora")' in adapter.text


def test_rewrite_adapter_base(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/home/me/model"}))
    assert len(rewrite_adapter_base(tmp_path, "org/base")) == 1
    assert json.loads((tmp_path / "sub" / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/base"


class RecordingHfApi:
    """Mock of huggingface_hub.HfApi: records create_repo/upload_folder calls, never touches the network."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return None


def test_upload_calls_create_repo_then_upload_folder(tmp_path):
    for name in ("dataset", "model"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text("---\n---\n")
    targets = [
        UploadTarget(str(tmp_path / "dataset"), "me/ds", "dataset"),
        UploadTarget(str(tmp_path / "model"), "me/m", "model"),
    ]
    api = RecordingHfApi()
    results = upload_targets(targets, private=True, commit_message="msg", api=api)
    assert [r.repo_id for r in results] == ["me/ds", "me/m"]
    assert api.calls == [
        ("create_repo", {"repo_id": "me/ds", "exist_ok": True, "private": True, "repo_type": "dataset"}),
        (
            "upload_folder",
            {
                "repo_id": "me/ds",
                "folder_path": str(tmp_path / "dataset"),
                "repo_type": "dataset",
                "commit_message": "msg",
            },
        ),
        ("create_repo", {"repo_id": "me/m", "exist_ok": True, "private": True, "repo_type": "model"}),
        (
            "upload_folder",
            {"repo_id": "me/m", "folder_path": str(tmp_path / "model"), "repo_type": "model", "commit_message": "msg"},
        ),
    ]


def test_upload_refuses_unstaged_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="README.md"):
        upload_targets([UploadTarget(str(tmp_path), "me/x", "model")], api=RecordingHfApi())


def test_hub_token_from_env(monkeypatch):
    monkeypatch.setenv("MY_TOKEN", SECRET)
    assert hub_token("MY_TOKEN") == SECRET
    monkeypatch.delenv("MY_TOKEN")
    assert hub_token("MY_TOKEN") is None


def _run_publish(tmp_path, monkeypatch, trained_dir, *overrides):
    """run_publish on a saved build + trained model, with HfApi's methods mocked (RecordingHfApi)."""
    import shutil

    import huggingface_hub

    from negsynth_hf.cli import run_publish
    from negsynth_hf.recipe_config import parse_step_args

    built_dataset().save(tmp_path / "run" / "dataset")
    shutil.copytree(trained_dir, tmp_path / "run" / "model")
    recorder = RecordingHfApi()
    created_with: list[dict] = []

    def fake_init(self, *args, **kwargs):
        created_with.append(kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", fake_init)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: recorder.create_repo(repo_id, **kw)
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: recorder.upload_folder(**kw))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    cfg = parse_step_args("publish", ["--run_dir", str(tmp_path / "run"), *overrides])
    staging = run_publish(cfg)
    return staging, recorder, created_with


def test_publish_step_uploads_staged_folders_with_token(tmp_path, monkeypatch, trained_dir):
    staging, recorder, created_with = _run_publish(
        tmp_path,
        monkeypatch,
        trained_dir,
        "--dataset_repo_id",
        "me/ds",
        "--model_repo_id",
        "me/m",
        "--private",
        "false",
    )
    assert [t.repo_id for t in staging.targets] == ["me/ds", "me/m", "me/m-lora"]
    creates = [c for name, c in recorder.calls if name == "create_repo"]
    assert [(c["repo_id"], c["repo_type"], c["private"], c["exist_ok"]) for c in creates] == [
        ("me/ds", "dataset", False, True),
        ("me/m", "model", False, True),
        ("me/m-lora", "model", False, True),
    ]
    assert created_with == [{"token": SECRET}]  # the token goes to HfApi and nowhere else
    plan = StagingResult.load(tmp_path / "run" / "publish")
    assert [t.repo_type for t in plan.targets] == ["dataset", "model", "model"]
    for path in (tmp_path / "run" / "publish").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"token leaked into {path}"


def test_publish_dry_run_uploads_nothing(tmp_path, monkeypatch, trained_dir):
    staging, recorder, created_with = _run_publish(tmp_path, monkeypatch, trained_dir, "--dry_run")
    assert recorder.calls == [] and created_with == []
    assert [t.repo_id.split("/")[0] for t in staging.targets] == ["your-hf-username"] * 3
    assert (Path(staging.targets[0].folder) / "n-tuple").is_dir()
    assert Path(staging.targets[0].folder).parent == tmp_path / "run" / "publish"


def test_publish_without_repo_ids_is_a_config_error(tmp_path, monkeypatch, trained_dir):
    from negsynth_hf.recipe_config import ConfigError

    with pytest.raises(ConfigError, match="dataset_repo_id and/or model_repo_id"):
        _run_publish(tmp_path, monkeypatch, trained_dir)
