"""Dataset profiles (built-in, custom, YAML, errors) and the published JSON Schemas."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from test_synthesis_helpers import ScriptedGenerator, user_text

from negsynth_hf.synthesis import (
    ANALYSIS_SCHEMA,
    BUILTIN_PROFILES,
    DatasetProfile,
    SynthesisInput,
    Synthesizer,
    export_schemas,
    get_profile,
)
from negsynth_hf.synthesis.schemas import SCHEMAS


def test_builtin_profiles():
    assert {"generic", "qa_wikipedia", "trivia", "multi_hop", "web_search", "scientific"} <= set(BUILTIN_PROFILES)
    sci = get_profile("scientific")
    assert sci.query_kind == "scientific claim" and "abstract" in sci.style
    assert len({p.hash for p in BUILTIN_PROFILES.values()}) == len(BUILTIN_PROFILES)


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown dataset profile 'scifact'.*'generic'.*'scientific'"):
        get_profile("scifact")


def test_custom_profile_dict_and_yaml(tmp_path):
    data = {"name": "legal", "relevance_definition": "Cites the statute asked about.", "style": "Court opinion prose."}
    custom = get_profile(data)
    assert custom == DatasetProfile(**data) and custom.document_kind == "passage"
    yaml_text = "name: legal\nrelevance_definition: Cites the statute asked about.\nstyle: Court opinion prose.\n"
    assert DatasetProfile.from_yaml(yaml_text) == custom
    path = tmp_path / "legal.yaml"
    path.write_text(yaml_text)
    assert get_profile(str(path)) == custom and get_profile(path) == custom
    assert custom.hash != DatasetProfile(**{**data, "style": "Statute text."}).hash
    with pytest.raises(ValueError, match="Unknown DatasetProfile field"):
        get_profile({**data, "stlye": "typo"})
    with pytest.raises(ValueError, match="non-empty"):
        DatasetProfile(name="x", relevance_definition="", style="s")
    with pytest.raises(ValueError, match="mapping"):
        DatasetProfile.from_yaml("- just\n- a list\n")
    with pytest.raises(TypeError):
        get_profile(42)


def test_profile_text_reaches_the_prompts():
    custom = DatasetProfile(
        name="legal",
        relevance_definition="Cites the statute asked about.",
        style="Court opinion prose.",
        query_kind="legal question",
        document_kind="opinion excerpt",
    )
    gen = ScriptedGenerator(lambda r: "")
    synth = Synthesizer(gen, profile=custom, max_attempts=1)
    assert synth.config_dict()["profile"] == "legal"
    synth.synthesize([SynthesisInput("q", "p")])
    prompt = user_text(gen.requests[0])
    assert "Cites the statute asked about." in prompt and "opinion excerpts retrieved for legal questions" in prompt


def test_published_schema_files_match_the_models(tmp_path):
    shipped = resources.files("negsynth_hf.synthesis").joinpath("schemas")
    for name, (_, schema) in SCHEMAS.items():
        assert json.loads(shipped.joinpath(f"{name}.json").read_text()) == schema, f"re-export {name}.json"
    written = export_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.json" for n in SCHEMAS)
    assert json.loads((tmp_path / "analysis.json").read_text()) == ANALYSIS_SCHEMA


def test_schemas_are_strict_and_carry_the_constraints():
    assert ANALYSIS_SCHEMA["additionalProperties"] is False
    for name in ("critical_requirements", "other_requirements"):  # 2-4 each: 4-8 nodes in all
        reqs = ANALYSIS_SCHEMA["properties"][name]
        assert reqs["minItems"] == 2 and reqs["maxItems"] == 4
    breaks_items = ANALYSIS_SCHEMA["$defs"]["CriticalRequirement"]["properties"]["break_strategies"]
    assert breaks_items["minItems"] == 2 and breaks_items["maxItems"] == 3
    node = ANALYSIS_SCHEMA["$defs"]["Requirement"]
    assert set(node["properties"]["facet"]["enum"]) == {
        "information_need",
        "entity",
        "attribute",
        "constraint",
        "relation",
        "reasoning",
        "other",
    }
    breaks = ANALYSIS_SCHEMA["$defs"]["BreakStrategy"]["properties"]["type"]["enum"]
    assert len(breaks) == 6 and "upstream_downstream" in breaks
