"""Reply parsing and repair, the query-edit one-place check, and the plain-text fallbacks."""

from __future__ import annotations

import json

import pytest

from negsynth_hf.synthesis import diff_one_place, extract_json, parse_reply
from negsynth_hf.synthesis.edits import apply_replacement, plain_edit, plain_query, plain_text, split_passages
from negsynth_hf.synthesis.schemas import Analysis, Generation, NaivePassages, QueryEdit

OBJ = {"original": "adults", "replacement": "children", "edit_type": "population"}


@pytest.mark.parametrize(
    ("text", "repair"),
    [
        (json.dumps(OBJ), None),
        ("```json\n" + json.dumps(OBJ) + "\n```", "code_fence"),
        ("```\n" + json.dumps(OBJ) + "\n```\nHope this helps!", "code_fence"),
        ("<think>The user wants {an edit}.</think>\n" + json.dumps(OBJ), "think_block"),
        (
            "Sure! Here is the JSON you asked for: " + json.dumps(OBJ) + " Let me know if you need more.",
            "surrounding_text",
        ),
        ("{'original': 'adults', 'replacement': 'children', 'edit_type': 'population',}", "syntax"),
        ('{"original": "adults", "replacement": "children", "edit_type": "population",}', "syntax"),
    ],
)
def test_repairs(text, repair):
    outcome = parse_reply(text, QueryEdit)
    assert outcome.ok, outcome.error
    assert outcome.value.original == "adults" and outcome.value.replacement == "children"
    assert outcome.value.edit_type == "population"
    assert (repair in outcome.repairs) if repair else outcome.repairs == []


def test_braces_and_quotes_inside_strings_survive():
    text = 'Result: {"passages": ["a {curly} [bracket] \\"quoted\\" passage", "it\'s fine"]} trailing'
    outcome = parse_reply(text, NaivePassages)
    assert outcome.value.passages == ['a {curly} [bracket] "quoted" passage', "it's fine"]


def test_python_literals_only_in_value_position():
    value, repairs = extract_json('{"a": True, "b": None, "c": "None of True",}')
    assert value == {"a": True, "b": None, "c": "None of True"} and "syntax" in repairs


def test_bare_list_is_wrapped_under_the_only_list_field():
    outcome = parse_reply('["first passage", "second passage"]', NaivePassages)
    assert outcome.value.passages == ["first passage", "second passage"] and "bare_list" in outcome.repairs
    assert "expected a JSON object" in parse_reply("[1, 2]", QueryEdit).error


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty response"),
        (None, "empty response"),
        ("I'm sorry, but I cannot comply with that request.", "refusal instead of JSON"),
        ("The edited claim is about children.", "no JSON object found"),
        ('{"original": "abc"', "truncated or unbalanced JSON"),
        ('{"original": abc}', "invalid JSON"),
        ('"just a string"', "expected a JSON object, got str"),
        ('{"original": "adults", "edit_type": "number"}', "schema violation: replacement: Field required"),
        ('{"original": "", "replacement": "x"}', "original: String should have at least 1 character"),
    ],
)
def test_errors_are_precise(text, error):
    outcome = parse_reply(text, QueryEdit)
    assert not outcome.ok and error in outcome.error


def test_lenient_spelling_strict_content():
    critical = {
        "facet": "Information Need",
        "description": "a requirement",
        "break_strategies": [{"type": "Entity-Shift", "idea": "swap it"}, {"type": "intent drift", "idea": "drift"}],
    }
    analysis = {
        "core_need": "need",
        "how_positive_answers": "how",
        "answer_boundary": "boundary",
        "critical_requirements": [critical, critical],
        "other_requirements": [{"facet": "entity", "description": "another requirement"}] * 2,
    }
    outcome = parse_reply(json.dumps(analysis), Analysis)
    assert outcome.ok, outcome.error
    nodes = outcome.value.requirements
    assert [n.id for n in nodes] == ["C1", "C2", "O1", "O2"]  # numbered by the code: unique by construction
    assert nodes[0].facet == "information_need" and nodes[0].critical and not nodes[2].critical
    assert [b.type for b in nodes[0].break_strategies] == ["entity_shift", "intent_drift"]
    one_break = dict(critical, break_strategies=critical["break_strategies"][:1])
    error = parse_reply(json.dumps(dict(analysis, critical_requirements=[critical, one_break])), Analysis).error
    assert "critical_requirements.1.break_strategies: List should have at least 2 items" in error
    error = parse_reply(json.dumps(dict(analysis, other_requirements=[])), Analysis).error
    assert "other_requirements: List should have at least 2 items" in error


def test_generation_schema_violation_names_the_field():
    bad = {"negatives": [{"node_id": "C1", "strategy_type": "paraphrase", "text": "t"}]}
    error = parse_reply(json.dumps(bad), Generation).error
    assert "negatives.0.strategy_type" in error and "negatives.0.explanation: Field required" in error


@pytest.mark.parametrize(
    ("edited", "span"),
    [
        ("10% of SIDS deaths happen in newborns aged less than 3 months.", ("6", "3")),
        ("25% of SIDS deaths happen in newborns aged less than 6 months.", ("10%", "25%")),
        ("10% of SIDS deaths happen in toddlers aged less than 6 months.", ("newborns", "toddlers")),
        ("10% of SIDS deaths happen in newborns aged more than 6 months", ("less", "more")),  # punctuation ignored
        ("10% of SIDS deaths do not happen in newborns aged less than 6 months.", ("", "do not")),  # inside: ok
    ],
)
def test_one_place_edits_accepted(edited, span):
    diff = diff_one_place("10% of SIDS deaths happen in newborns aged less than 6 months.", edited)
    assert (diff.old, diff.new) == span


@pytest.mark.parametrize(
    ("edited", "reason"),
    [
        ("10% of SIDS deaths happen in newborns aged less than 6 months.", "identical"),
        ("10% OF sids deaths happen in newborns aged less than 6 months", "identical"),
        ("25% of SIDS deaths happen in toddlers aged less than 6 months.", "2 separate places"),
        ("Smoking during pregnancy is the leading cause of SIDS in most countries.", "separate places"),
        ("10% of SIDS deaths happen among infants whose parents smoke heavily at home daily.", "consecutive words"),
        ("", "empty"),
        # seen from SmolLM2: a label glued in front of the unchanged claim is not an edit
        ('The original text is: "10% of SIDS deaths happen in newborns aged less than 6 months.', "only adds words"),
        ("10% of SIDS deaths happen in newborns aged less than 6 months, in Sweden.", "only adds words"),
        ("10% of SIDS deaths happen in newborns.", "only deletes words"),
    ],
)
def test_one_place_edits_rejected(edited, reason):
    with pytest.raises(ValueError, match=reason):
        diff_one_place("10% of SIDS deaths happen in newborns aged less than 6 months.", edited)


def test_apply_replacement_and_plain_edits():
    q = "Aspirin lowers the risk of stroke in adults."
    assert apply_replacement(q, ' "Adults" ', "children") == "Aspirin lowers the risk of stroke in children."
    with pytest.raises(ValueError, match="does not occur in the query"):
        apply_replacement(q, "elderly", "children")
    assert plain_edit("adults -> children", q) == "Aspirin lowers the risk of stroke in children."
    assert plain_edit("original: stroke, replacement: migraine", q) == "Aspirin lowers the risk of migraine in adults."
    assert plain_edit("Edited claim: Aspirin raises the risk of stroke in adults.", q) == (
        "Aspirin raises the risk of stroke in adults."
    )


def test_plain_query_strips_labels_and_numbering():
    claim = "50% of patients have activated markers."
    for reply in (
        f'The original sentence is: "{claim}',
        f"1. {claim}",
        f"The original: {claim}",
        f"Edited claim: {claim}",
    ):
        assert plain_query(reply) == claim


def test_plain_text_fallbacks():
    assert (
        plain_query('Edited claim: "Aspirin lowers stroke risk in children."')
        == "Aspirin lowers stroke risk in children."
    )
    assert plain_query('"A in adults." -> "A in children."\nMore text') == "A in children."
    assert plain_text("<think>hmm</think>Passage: The trial enrolled 40 mice.") == "The trial enrolled 40 mice."
    assert plain_text("I'm sorry, I can't do that.") is None
    assert plain_text("   ") is None
    assert split_passages("1. First passage.\n2. Second passage.") == ["First passage.", "Second passage."]
    assert split_passages("One passage only.") == ["One passage only."]
