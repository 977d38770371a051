"""One secret rule (``negsynth_hf.redaction``), and every output the package writes obeys it.

A generator spec and a recipe section carry one field of each secret kind (key, token, secret, password,
credential, auth; prefixed, suffixed, camelCase), each holding a unique canary. A build, ``save``, the
recipe layout (``BuiltDataset.save`` with recipe info), the dataset card + parquet staging, the logs and output
and the reprs of every object are then scanned: no canary may appear anywhere.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from datasets import Dataset
from test_transform_helpers import ScriptedNaiveGenerator, corpus, pairs

from negsynth_hf.artifacts import BuiltDataset
from negsynth_hf.build import build_dataset
from negsynth_hf.publish import stage_dataset
from negsynth_hf.redaction import REDACTED, is_secret_name, redact
from negsynth_hf.transform import CounterfactualNegatives

SECRET_FIELDS = (
    "api_key",
    "apiKey",
    "hf_token",
    "access_token_value",
    "client_secret",
    "db_password",
    "passwd",
    "aws_credentials",
    "auth",
    "basic_auth_header",
    "Authorization",
)
CANARY = {name: f"canary-{name}-{uuid.uuid4().hex}" for name in SECRET_FIELDS}


@pytest.mark.parametrize("name", SECRET_FIELDS + ("OPENAI_API_KEY", "x-api-key", "privateKey", "secrets"))
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["api_key_env", "token_env", "max_new_tokens", "completion_tokens", "author", "model", "keywords"]
)
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_redact_is_recursive_and_keeps_the_rest():
    data = {"a": 1, "nested": [{"hf_token": "x", "ok": (1, 2)}], "api_key_env": "OPENAI_API_KEY"}
    assert redact(data) == {"a": 1, "nested": [{"hf_token": REDACTED, "ok": [1, 2]}], "api_key_env": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class SecretSpec:
    """A picklable generator spec whose ``to_dict()`` holds one canary per secret field name."""

    secrets: tuple[tuple[str, str], ...] = tuple(CANARY.items())
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def build(self):
        return ScriptedNaiveGenerator(num=2)

    def to_dict(self) -> dict:
        return {"backend": "scripted", **dict(self.secrets)}


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
    return [name for name, value in CANARY.items() if value.encode() in data]


def _scan(root: Path) -> dict[str, list[str]]:
    hits = {str(p.relative_to(root)): _leaks(p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    return {k: v for k, v in hits.items() if v}


def test_planted_secret_fields_reach_no_output(tiny_model, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    spec = SecretSpec()
    result = build_dataset(
        Dataset.from_dict(pairs(6)),
        corpus=corpus(),
        retriever=tiny_model,
        generator=spec,
        strategy="naive",
        num_mined=2,
        num_generated=2,
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=True,  # the printed summary is an output too
    )
    assert result.config["generator"]["backend"] == "scripted"
    assert all(result.config["generator"][name] == REDACTED for name in SECRET_FIELDS)
    result.save(tmp_path / "saved")
    recipe = {"recipe": {"generator": spec.to_dict(), **CANARY}, "source": {"dataset": "scifact"}}
    built = result.with_recipe_info(recipe)
    built.save(tmp_path / "built")
    staged = stage_dataset(BuiltDataset.load(tmp_path / "built"), tmp_path / "staging", repo_id="user/redaction")
    assert (Path(staged) / "README.md").is_file()
    assert _scan(tmp_path) == {}
    transform = CounterfactualNegatives(spec, strategy="naive", num_generated=2)
    for obj in (result, built, transform, result.config, transform.config_dict(), built.info):
        assert _leaks(repr(obj)) == [], type(obj)
    assert _leaks(caplog.text) == []
    out, err = capfd.readouterr()
    assert _leaks(out + err) == []
    assert asdict(spec)["secrets"]  # (the spec itself holds them: only what the package writes is checked)
