"""Where the judged collections come from: an argument or $NEGSYNTH_DATA_DIR, never the checkout's layout."""

from __future__ import annotations

import pytest
from test_evaluation import write_beir

from negsynth_hf.paths import DATA_DIR_ENV, shared_data_dir
from negsynth_hf.pipeline.config import ConfigError, DataConfig
from negsynth_hf.pipeline.sources import load_collection


def test_data_dir_unset_is_an_error_naming_the_argument_and_the_variable(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=r"data_dir.*\$NEGSYNTH_DATA_DIR"):
        shared_data_dir()


def test_data_dir_argument_then_variable_then_caller_default(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert shared_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert shared_data_dir(default=tmp_path / "default") == tmp_path / "default"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert shared_data_dir() == tmp_path / "env"
    assert shared_data_dir(default=tmp_path / "default") == tmp_path / "env"
    assert shared_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_load_collection_by_name_needs_a_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # "tiny" is no folder of the working directory
    write_beir(tmp_path / "collections" / "tiny")
    with pytest.raises(ConfigError, match=r"data\.data_dir.*\$NEGSYNTH_DATA_DIR"):
        load_collection(DataConfig(dataset="tiny"))
    collection = load_collection(DataConfig(dataset="tiny", data_dir=str(tmp_path / "collections")))
    assert len(collection.corpus) == 24 and collection.split_query_ids("train")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "collections"))
    assert load_collection(DataConfig(dataset="tiny")).corpus == collection.corpus
    with pytest.raises(ConfigError, match="neither a folder nor a collection under"):
        load_collection(DataConfig(dataset="absent"))
