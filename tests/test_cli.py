"""The ``negsynth`` console script: help a new user can follow, errors that say what to fix, shared steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from negsynth_hf.cli import COMMANDS, RUNNERS, main, recipe_main, run_step
from negsynth_hf.demo import demo_config, demo_defaults
from negsynth_hf.recipe_config import parse_step_args

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


def test_missing_build_output_is_explained(tmp_path, capsys):
    for command in ("train", "diagnose"):
        assert main([command, "--run_dir", str(tmp_path)]) == 2
        assert "run `negsynth build` first" in _one_error_line(capsys, command)


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


# ---- every user mistake ends in ONE `error:` line (exit 2) naming the file, line or key, and the fix ----------


def _tiny_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"text of document {i}"} for i in range(4)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(4)]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n", encoding="utf-8")
    for split, ids in (("train", (0, 1)), ("test", (2, 3))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in ids]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"negsynth {command}: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_text(
        "run:\n  run_dir: out\nbuild:\n  strategy: auto\n  profile: generic\n  generator: {backend: a: b}\n"
    )
    assert main(["build", "--config", str(path)]) == 2
    line = _one_error_line(capsys, "build")
    assert f"{path}:6:" in line and "invalid YAML" in line and "quot" in line


def test_unreadable_config_file(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_bytes(b"run:\n  run_dir: caf\xe9\n")  # Latin-1, not UTF-8
    assert main(["train", "--config", str(path)]) == 2
    line = _one_error_line(capsys, "train")
    assert str(path) in line and "UTF-8" in line


@pytest.mark.parametrize(
    ("argv", "key", "valid"),
    [
        (["--strategy", "best"], "--strategy", "'auto'|'counterfactual'|'naive'|'query_edit'"),
        (["--query_editor", "human"], "--query_editor", "'auto'|'llm'|'rules'|'llm_then_rules'"),
    ],
)
def test_unknown_literal_value_lists_every_valid_one(argv, key, valid, tmp_path, capsys):
    assert main(["build", *argv, "--run_dir", str(tmp_path)]) == 2
    line = _one_error_line(capsys, "build")
    assert line.startswith(f"negsynth build: error: {key}: ") and valid in line


def test_unknown_literal_value_in_a_yaml_file_names_file_and_key(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_text("build:\n  strategy: clever\n")
    assert main(["build", "--config", str(path)]) == 2
    assert f"{path}: build.strategy: 'clever'" in _one_error_line(capsys, "build")


def test_unknown_profile_and_build_option_are_config_errors(tmp_path, capsys):
    data = _tiny_beir(tmp_path / "beir")
    assert main(["build", "--dataset", str(data), "--run_dir", str(tmp_path), "--profile", "legal"]) == 2
    line = _one_error_line(capsys, "build")
    assert "build.profile" in line and "'legal'" in line and "scientific" in line
    assert main(["build", "--dataset", str(data), "--run_dir", str(tmp_path), "--build_options", "{margin: 1}"]) == 2
    line = _one_error_line(capsys, "build")
    assert "build.build_options" in line and "'margin'" in line and "relative_margin" in line


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            lambda d: (d / "corpus.jsonl").open("a").write('{"_id": "d9", "text": "cut off\n'),
            "corpus.jsonl:5: not valid JSON",
        ),
        (lambda d: (d / "queries.jsonl").write_text('{"text": "no id"}\n'), "queries.jsonl:1: the object has no '_id'"),
        (lambda d: (d / "qrels" / "train.tsv").write_text("q0 d0 1\n"), "train.tsv: the first line must be"),
        (lambda d: (d / "qrels" / "test.tsv").unlink(), "test.tsv does not exist; available splits"),
        (lambda d: (d / "corpus.jsonl").unlink(), "corpus.jsonl is missing"),
    ],
    ids=["broken-jsonl-line", "missing-id-column", "missing-qrels-columns", "missing-split", "missing-file"],
)
def test_bad_data_files_name_file_and_line(breakage, expected, tmp_path, capsys):
    data = _tiny_beir(tmp_path / "beir")
    breakage(data)
    assert main(["build", "--dataset", str(data), "--run_dir", str(tmp_path), "--generator", "null"]) == 2
    line = _one_error_line(capsys, "build")
    assert expected in line and "Fix that file" in line


# ---- help that tells the truth ---------------------------------------------------------------------------------

#: a running time or a measured figure (help text states what a command does, never how long it took somewhere)
MEASUREMENT = re.compile(
    r"\d[\d.,]*\s*(min|minutes?|s|secs?|seconds?|h|hours?|ms)\b|~\s*\d|<\s*\d|tokens/s|\b\d+x\b", re.IGNORECASE
)


def test_no_help_text_carries_a_measurement(capsys):
    assert main(["--help"]) == 0
    texts = [capsys.readouterr().out]
    for command in sorted(COMMANDS):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts.append(capsys.readouterr().out)
    found = [line for text in texts for line in text.splitlines() if MEASUREMENT.search(line)]
    assert not found, found


def test_demo_help_shows_the_demos_own_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    demo = demo_defaults()
    assert "--dry_run (bool, default True)" in out  # the demo never uploads
    assert f"--run_dir (str, default {demo.run.run_dir!r})" in out
    assert f"--num_generated (int, default {demo.build.num_generated})" in out
    assert f"default {demo.build.generator!r})" in out and "'embedded'}" not in out
    assert f"--max_train_queries (int | null, default {demo.data.max_train_queries})" in out


def test_build_defaults_to_the_librarys_generator(capsys):
    from negsynth_hf.generators import GeneratorConfig
    from negsynth_hf.pipeline.build import generator_config

    cfg = parse_step_args("build", [])
    assert generator_config(cfg, 0) == GeneratorConfig()  # the same generator build_dataset uses by default
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--generator (dict[str, Any] | null, default {'backend': 'llamacpp'})" in capsys.readouterr().out
    embedded = parse_step_args("build", ["--generator", "{backend: embedded}"])
    assert generator_config(embedded, 0).backend == "embedded"  # SmolLM2 through transformers, by name


def test_llamacpp_builds_map_one_batch_per_set_of_server_slots():
    """Synthesis progress advances as rows finish: a map batch is as many rows as the server decodes at once."""
    from negsynth_hf.pipeline.build import build_kwargs, generator_config

    cfg = parse_step_args("build", ["--generator", "{backend: llamacpp, n_parallel: 3}"])
    assert build_kwargs(cfg, generator_config(cfg, 0), "r")["map_batch_size"] == 3
    cfg = parse_step_args("build", ["--generator", "{n_parallel: 3}", "--build_options", "{map_batch_size: 8}"])
    assert build_kwargs(cfg, generator_config(cfg, 0), "r")["map_batch_size"] == 8  # the user's choice stands
    cfg = parse_step_args("build", ["--generator", "{backend: openai, model: m}"])
    assert "map_batch_size" not in build_kwargs(cfg, generator_config(cfg, 0), "r")  # build_dataset's default
    assert demo_defaults().build.generator == {"backend": "llamacpp"}  # the demo: one row per slot, 2 slots


def test_unreachable_hub_dataset_is_one_error_line(tmp_path, capsys):
    # the tests run with HF_HUB_OFFLINE=1 (conftest): the Hub cannot be reached, as on a machine without network
    assert main(["build", "--source", "hub", "--dataset", "nobody/no-such-set", "--run_dir", str(tmp_path)]) == 2
    line = _one_error_line(capsys, "build")
    assert "data.dataset='nobody/no-such-set' (source: hub) could not be read" in line and "data.source: local" in line
