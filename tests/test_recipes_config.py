"""The YAML + CLI config parser: defaults, file values, overrides, and errors that name the bad key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from negsynth_hf.recipe_config import (
    SECTIONS,
    STEP_SECTIONS,
    ConfigError,
    RecipeConfig,
    format_help,
    load_yaml_config,
    parse_step_args,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_without_a_file():
    cfg = parse_step_args("train", [])
    assert cfg.train == SECTIONS["train"]()
    assert cfg.model_dir == Path("outputs/negsynth/model")
    assert cfg.eval_model_dir == Path("outputs/negsynth/model/merged")


def test_yaml_values_then_cli_overrides(tmp_path):
    path = write(
        tmp_path,
        """
run: {run_dir: out/x, seed: 7}
data: {dataset: cisi, max_train_queries: 10}
train:
  loss: mined
  learning_rate: 3e-5          # YAML 1.1 reads this as a string; it must still be a float
  lora_target_modules: [query, key, value]
""",
    )
    cfg = parse_step_args(
        "train",
        ["--config", path, "--seed", "9", "--train.loss", "in_batch", "--lora_r=4", "--max_train_queries", "null"],
    )
    assert cfg.run.seed == 9 and cfg.run.run_dir == "out/x"
    assert cfg.train.loss == "in_batch"
    assert cfg.train.learning_rate == pytest.approx(3e-5) and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.lora_target_modules == ["query", "key", "value"]
    assert cfg.train.lora_r == 4
    assert cfg.data.max_train_queries is None
    assert cfg.data.dataset == "cisi"
    assert cfg.model_dir == Path("out/x/model")


def test_bare_flag_is_true_and_lists_parse(tmp_path):
    cfg = parse_step_args("publish", ["--dry_run", "--private", "false"])
    assert cfg.publish.dry_run is True and cfg.publish.private is False
    cfg = parse_step_args("train", ["--lora_target_modules", "query,value,dense"])
    assert cfg.train.lora_target_modules == ["query", "value", "dense"]
    # a literal field: its named values only
    assert parse_step_args("train", ["--use_weights", "mask"]).train.use_weights == "mask"
    assert parse_step_args("train", ["--use_weights", "none"]).train.use_weights == "none"
    for value in ("sometimes", "false"):
        with pytest.raises(ConfigError, match="use_weights"):
            parse_step_args("train", ["--use_weights", value])


def test_string_fields_keep_numeric_looking_values():
    cfg = parse_step_args("build", ["--dataset", "0123", "--retriever", "null"])
    assert cfg.data.dataset == "0123"
    assert cfg.build.retriever is None


def test_unknown_yaml_key_names_it_and_lists_valid_keys(tmp_path):
    path = write(tmp_path, "train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        parse_step_args("train", ["--config", path])
    message = str(err.value)
    assert "'learning_rat'" in message and "Did you mean 'learning_rate'" in message
    assert "per_device_train_batch_size" in message  # the valid keys are listed


def test_unknown_section_is_an_error(tmp_path):
    path = write(tmp_path, "trian:\n  loss: mined\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'.*Did you mean 'train'"):
        load_yaml_config(path)


def test_typo_in_another_steps_section_is_still_caught(tmp_path):
    path = write(tmp_path, "publish:\n  dry_rn: true\n")
    with pytest.raises(ConfigError, match="dry_rn"):
        parse_step_args("build", ["--config", path])


def test_unknown_cli_key_and_key_of_unused_section():
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'.*learning_rate"):
        parse_step_args("train", ["--lerning_rate", "0.1"])
    with pytest.raises(ConfigError, match="belongs to the 'publish' section"):
        parse_step_args("build", ["--dry_run"])


def test_type_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="--lora_r: expected an integer"):
        parse_step_args("train", ["--lora_r", "many"])
    with pytest.raises(ConfigError, match="train.loss.*not a valid value; use one of"):
        parse_step_args("train", ["--config", write(tmp_path, "train: {loss: triplet}\n")])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_step_args("train", ["--learning_rate"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_step_args("train", ["positional"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_step_args("train", ["--config", "/nonexistent/task.yaml"])


def test_field_names_are_unique_across_sections():
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))


def test_every_field_has_help():
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{section}.{f.name} has no help text"


def test_help_lists_every_key_of_the_step(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_step_args("train", ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for section in STEP_SECTIONS["train"]:
        for f in dataclasses.fields(SECTIONS[section]):
            assert f"--{f.name} " in out
    assert "--dry_run" not in out  # publish keys are not train keys
    assert format_help("publish").count("--dry_run") == 1


@pytest.mark.parametrize("path", sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate_configs"))
def test_shipped_task_configs_parse(path):
    cfg = load_yaml_config(path)
    assert isinstance(cfg, RecipeConfig)
    assert cfg.run.run_dir.startswith("outputs/")  # gitignored


def test_base_model_id_resolution(tmp_path):
    cfg = RecipeConfig()
    assert cfg.run.resolved_base_model_id() == "sentence-transformers/all-MiniLM-L6-v2"
    cfg.run.base_model = str(tmp_path)
    assert cfg.run.resolved_base_model_id() is None  # a local folder is never published as a base id
    cfg.run.base_model_id = "org/model"
    assert cfg.run.resolved_base_model_id() == "org/model"
    cfg.run.base_model, cfg.run.base_model_id = "BAAI/bge-small-en-v1.5", None
    assert cfg.run.resolved_base_model_id() == "BAAI/bge-small-en-v1.5"


def test_naive_baseline_build_options_reach_build_dataset():
    """The naive baseline's switches (guard off, no source weights) pass through ``build_options`` as they are."""
    import inspect

    from negsynth_hf.build import build_dataset
    from negsynth_hf.pipeline.build import build_kwargs

    argv = ["--strategy", "naive", "--build_options", "{guard_policy: 'off', source_weights: false}"]
    kwargs = build_kwargs(parse_step_args("build", argv), object(), "retriever")
    assert kwargs["guard_policy"] == "off" and kwargs["source_weights"] is False and kwargs["strategy"] == "naive"
    assert set(kwargs) <= set(inspect.signature(build_dataset).parameters)


@pytest.mark.parametrize("task", ["scifact", "cisi", "cranfield"])
def test_task_recipes_use_the_librarys_default_generator(task):
    from negsynth_hf.generators import GeneratorConfig
    from negsynth_hf.pipeline.build import generator_config

    cfg = load_yaml_config(RECIPES / task / "config.yaml")
    generator = generator_config(cfg, 0)
    assert generator.backend == GeneratorConfig().backend == "llamacpp" and generator.model is None
    assert cfg.build.query_editor == "auto"  # the model's own recommendation, not SmolLM2's rules
