"""Reading the pipeline configuration from YAML task files and ``--key value`` overrides (the CLI layer).

The sections themselves (one dataclass each) are :mod:`negsynth_hf.pipeline.config`; this module only parses:
every key of every section is checked against its dataclass (a typo anywhere is an error that names the key
and lists the valid ones). Command-line overrides are ``--key value`` (or ``--section.key value``, or
``--key=value``); a step accepts only keys of the sections it uses. Values are read as YAML
(``--lora_target_modules [query,value]``, ``--max_train_queries null``) and checked against the field's type.
Field names are unique across sections, so a bare ``--key`` is never ambiguous.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from negsynth_hf.pipeline.config import (
    MINILM_HUB_ID,
    SECTIONS,
    STEP_SECTIONS,
    BuildConfig,
    ConfigError,
    DataConfig,
    DiagnoseConfig,
    EvaluateConfig,
    PublishConfig,
    RecipeConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "MINILM_HUB_ID",
    "SECTIONS",
    "STEP_SECTIONS",
    "BuildConfig",
    "ConfigError",
    "DataConfig",
    "DiagnoseConfig",
    "EvaluateConfig",
    "PublishConfig",
    "RecipeConfig",
    "RunConfig",
    "TrainConfig",
    "format_help",
    "load_yaml_config",
    "parse_step_args",
]


def _field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in index:  # pragma: no cover - guarded by a test
                raise RuntimeError(f"field {f.name!r} is defined in both {index[f.name][0]} and {section}")
            index[f.name] = (section, f)
    return index


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (with the obvious widenings: int -> float, scalar -> str)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed (expected {_type_name(tp)}).")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not {_type_name(tp)}.")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: {value!r} is not a valid value; use one of {_type_name(tp)}.")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}.")
    return value


def _apply(section_obj: Any, key: str, raw: Any, where: str) -> None:
    tp = _hints(type(section_obj))[key]
    setattr(section_obj, key, _coerce(raw, tp, where))


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(sorted(valid))}.")


def load_yaml_config(path: str | Path, config: RecipeConfig | None = None) -> RecipeConfig:
    """Read a task file into ``config`` (defaults if None); every key is checked."""
    config = config or RecipeConfig()
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}; pass --config recipes/<task>/config.yaml.")
    data = _read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)}).")
    for section, values in data.items():
        if section not in SECTIONS:
            raise _unknown_key_error(str(section), list(SECTIONS), f"{path}: section")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of keys to values.")
        obj = getattr(config, section)
        valid = [f.name for f in dataclasses.fields(obj)]
        for key, raw in values.items():
            if key not in valid:
                raise _unknown_key_error(str(key), valid, f"{path}: section {section!r}")
            _apply(obj, key, raw, f"{path}: {section}.{key}")
    config.config_file = str(path)
    return config


def _read_yaml(path: Path) -> Any:
    """The parsed file; an unreadable file or a YAML syntax error is a ConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8.") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise ConfigError(
            f"{where}: invalid YAML ({detail}). Check that line's indentation and quoting "
            "(a value with ': ' or '#' needs quotes)."
        ) from None


def _split_overrides(argv: list[str]) -> tuple[str | None, list[tuple[str, str | None]], bool]:
    config_file: str | None = None
    pairs: list[tuple[str, str | None]] = []
    want_help = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
            i += 1
            continue
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: overrides are --key value (see --help).")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            else:
                value = None  # a bare flag: true for booleans
        key = key.replace("-", "_") if "." not in key else key
        if key == "config":
            if value is None:
                raise ConfigError("--config needs a YAML file path.")
            config_file = value
        else:
            pairs.append((key, value))
        i += 1
    return config_file, pairs, want_help


def parse_step_args(
    step: str, argv: list[str] | None = None, *, prog: str | None = None, base: RecipeConfig | None = None
) -> RecipeConfig:
    """``--config FILE`` then ``--key value`` overrides, for ``step``. ``--help`` prints the keys and exits.

    ``base`` replaces the dataclass defaults (the demo's own defaults); the YAML file and overrides go on top.
    """
    if step not in STEP_SECTIONS:
        raise ConfigError(f"unknown step {step!r}; steps: {', '.join(STEP_SECTIONS)}.")
    argv = list(sys.argv[1:] if argv is None else argv)
    config_file, pairs, want_help = _split_overrides(argv)
    if want_help:
        print(format_help(step, prog=prog, base=base))
        raise SystemExit(0)
    config = copy.deepcopy(base) if base is not None else RecipeConfig()
    if config_file:
        config = load_yaml_config(config_file, config)
    allowed = STEP_SECTIONS[step]
    index = _field_index()
    valid = [name for name, (section, _) in index.items() if section in allowed]
    for key, raw in pairs:
        if "." in key:
            section, _, name = key.partition(".")
            if section not in allowed or name not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
                raise _unknown_key_error(key, valid, f"`{step}` override")
        elif key in index and index[key][0] in allowed:
            section, name = index[key][0], key
        else:
            extra = f" ({key!r} belongs to the {index[key][0]!r} section, not used by `{step}`)" if key in index else ""
            raise ConfigError(str(_unknown_key_error(key, valid, f"`{step}` override")) + extra)
        obj = getattr(config, section)
        tp = _hints(type(obj))[name]
        if raw is None:
            if tp is not bool:
                raise ConfigError(f"--{key} needs a value (expected {_type_name(tp)}).")
            value: Any = True
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)):
                value = raw if value is not None or raw.lower() not in ("null", "none", "~") else None
        _apply(obj, name, value, f"--{key}")
    config.step = step
    return config


def format_help(step: str, *, prog: str | None = None, base: RecipeConfig | None = None) -> str:
    """Every key the step accepts, grouped by section, with type, default and help.

    ``base``: the step's own defaults (the demo's), shown instead of the dataclass defaults.
    """
    prog = prog or f"negsynth {step}"
    defaults = base if base is not None else RecipeConfig()
    origin = "this command's defaults" if base is not None else "the defaults"
    lines = [
        f"usage: {prog} [--config recipes/<task>/config.yaml] [--key value ...]",
        "",
        f"Values come from {origin} (below), then the YAML file (sections below), then --key value overrides "
        "(read as YAML; --section.key also works). Unknown keys are errors.",
    ]
    for section in STEP_SECTIONS[step]:
        cls = SECTIONS[section]
        hints = _hints(cls)
        lines += ["", f"{section}:  {(cls.__doc__ or '').strip()}"]
        for f in dataclasses.fields(cls):
            default = getattr(getattr(defaults, section), f.name)
            lines.append(f"  --{f.name} ({_type_name(hints[f.name])}, default {default!r})")
            lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)
