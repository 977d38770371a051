"""Profile-aware edits: a profile names edit kinds whose passage is still relevant; editors and prompts avoid them."""

from __future__ import annotations

import pytest

from negsynth_hf.synthesis.profiles import BUILTIN_PROFILES, DatasetProfile, get_profile
from negsynth_hf.synthesis.prompts import QUERY_EDIT_FOCUS, query_edit_focuses, query_edit_messages
from negsynth_hf.synthesis.rule_edits import edit_kind, rule_edits

CLAIM = "ATR increases the sensing of DNA damage in 30 mice."


def test_scientific_profile_avoids_direction_and_others_keep_their_hash():
    assert get_profile("scientific").relevant_edit_kinds == ("direction",)
    generic = get_profile("generic")
    assert "relevant_edit_kinds" not in generic.to_dict()  # unset: hash (and caches) unchanged
    assert generic.hash == DatasetProfile.from_dict(generic.to_dict()).hash
    assert len({p.hash for p in BUILTIN_PROFILES.values()}) == len(BUILTIN_PROFILES)


def test_relevant_edit_kinds_validation_names_the_field():
    with pytest.raises(ValueError, match="relevant_edit_kinds"):
        DatasetProfile(name="x", relevance_definition="r", style="s", relevant_edit_kinds=("sideways",))
    with pytest.raises(ValueError, match="relevant_edit_kinds"):
        DatasetProfile(name="x", relevance_definition="r", style="s", relevant_edit_kinds="direction")  # type: ignore[arg-type]
    from_yaml = DatasetProfile.from_yaml("name: x\nrelevance_definition: r\nstyle: s\nrelevant_edit_kinds: [number]\n")
    assert from_yaml.relevant_edit_kinds == ("number",)


def test_rule_editor_never_makes_an_avoided_kind():
    flips = rule_edits("Smoking increases the risk of asthma.", 5)
    assert [e.edit_type for e in flips] == ["direction"]
    assert rule_edits("Smoking increases the risk of asthma.", 5, avoid=("direction",)) == []
    kept = rule_edits(CLAIM, 8, avoid=("direction",))
    assert kept and all(e.edit_type != "direction" for e in kept)


@pytest.mark.parametrize(
    ("old", "new", "declared", "kind"),
    [
        ("has no role", "has a role", "other", "direction"),  # negation removed, whatever the LLM calls it
        ("increases", "decreases", "entity", "direction"),
        ("does", "doesn't", None, "direction"),
        ("30%", "60%", "other", "number"),
        ("children", "adults", "other", "population"),
        ("cardiovascular disease", "cancer", "entity", "entity"),
        ("in vitro", "in vivo", None, "setting"),
    ],
)
def test_edit_kind_reads_the_words(old, new, declared, kind):
    assert edit_kind(old, new, declared) == kind


def test_llm_edit_prompt_drops_the_direction_focus_and_says_why():
    scientific, generic = get_profile("scientific"), get_profile("generic")
    assert query_edit_focuses(generic) == QUERY_EDIT_FOCUS
    assert not any("direction" in f for f in query_edit_focuses(scientific))
    text = query_edit_messages(CLAIM, profile=scientific, focus="a number", max_chars=500)[1]["content"]
    assert "Do NOT change the direction" in text and "still relevant" in text
    assert "Do NOT" not in query_edit_messages(CLAIM, profile=generic, focus="a number", max_chars=500)[1]["content"]
