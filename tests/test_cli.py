"""The ``negsynth`` console script: help a new user can follow, errors that say what to fix, shared steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from negsynth_hf.cli import COMMANDS, RUNNERS, main, recipe_main, run_step
from negsynth_hf.demo import demo_config, demo_defaults

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("build", "train", "evaluate", "publish", "diagnose", "demo"):
        assert f"  {command} " in out
    assert "negsynth demo" in out and "recipes/accelerate_configs" in out
    assert main([]) == 0


def test_every_command_has_a_runner():
    assert set(COMMANDS) == set(RUNNERS) | {"demo"}


def test_unknown_command(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: negsynth {command}" in out and "--run_dir" in out


def test_config_errors_exit_2_with_the_key(capsys):
    assert main(["train", "--learning_rat", "1"]) == 2
    err = capsys.readouterr().err
    assert "negsynth train: error:" in err and "learning_rat" in err and "learning_rate" in err


def test_missing_build_output_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `negsynth build` first"):
        run_step("train", ["--run_dir", str(tmp_path)])


def test_missing_collection_is_a_config_error(tmp_path, capsys):
    assert recipe_main("build", ["--dataset", str(tmp_path / "nope"), "--run_dir", str(tmp_path)]) == 2
    assert "neither a folder nor a collection" in capsys.readouterr().err


def test_demo_defaults_and_overrides(tmp_path):
    cfg = demo_config([])
    assert cfg == demo_config([])  # deterministic
    assert cfg.data.dataset == "scifact" and cfg.build.strategy == "auto" and cfg.build.query_editor == "auto"
    assert cfg.build.generator == {"backend": "llamacpp"} and cfg.train.loss == "causalneg"  # Qwen on llama.cpp
    assert cfg.publish.dry_run is True and cfg.evaluate.max_test_queries is None
    cfg = demo_config(["--max_train_queries", "8", "--run_dir", str(tmp_path), "--loss", "mined"])
    assert cfg.data.max_train_queries == 8 and cfg.train.loss == "mined" and cfg.run.run_dir == str(tmp_path)
    # a --config file goes on top of the demo defaults, not of the bare dataclass defaults
    path = tmp_path / "c.yaml"
    path.write_text("train: {max_steps: 3}\n")
    cfg = demo_config(["--config", str(path)])
    assert cfg.train.max_steps == 3 and cfg.data.max_train_queries == demo_defaults().data.max_train_queries


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "negsynth_hf.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "usage: negsynth" in proc.stdout


def test_recipe_script_help_matches_cli():
    proc = subprocess.run(
        [sys.executable, "recipes/train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: recipes/train.py" in proc.stdout and "--lora_r" in proc.stdout


def test_diagnose_command_writes_the_report(tmp_path, tiny_model_path):
    from datasets import Dataset

    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.labels import encode_negative_labels

    n = 12
    train = Dataset.from_dict(
        {
            "anchor": [f"claim {i} about drug {i % 3}" for i in range(n)],
            "positive": [f"trial {i} of drug {i % 3}" for i in range(n)],
            "negative_1": [f"mined abstract {i}" for i in range(n)],
            "negative_2": [f"generated text {i} with a changed dose" for i in range(n)],
            "labels": [encode_negative_labels([1.0, 0.5], [False, True]) for _ in range(n)],
        }
    )
    BuiltDataset(train).save(tmp_path / "dataset")
    run_step(
        "diagnose",
        [
            "--run_dir",
            str(tmp_path),
            "--base_model",
            tiny_model_path,
            "--figures",
            "false",
            "--diagnose_max_rows",
            "null",
        ],
    )
    report = tmp_path / "diagnostics" / "report.json"
    assert report.is_file() and (tmp_path / "diagnostics" / "report.md").is_file()
    assert json.loads(report.read_text())
