"""Rule-based one-detail query edits and the query_edit strategy's ``query_editor`` switch."""

from __future__ import annotations

import json

import pytest
from test_synthesis_helpers import ScriptedGenerator, user_text

from negsynth_hf.synthesis import SynthesisInput, Synthesizer, diff_one_place
from negsynth_hf.synthesis.rule_edits import EDIT_TYPE_ORDER, RULE_EDITS_VERSION, rule_edit, rule_edits

CLAIMS = [
    "0-dimensional biomaterials lack inductive properties.",
    "1 in 5 million in UK have abnormal PrP positivity.",
    "Aspirin reduces the risk of stroke in elderly women.",
    "IL-6 levels are 2.5-fold higher in 45% of COVID-19 patients in 2015.",
    "Mice lacking p53 develop tumors in vitro.",
    "Acute kidney injury is more common in children than in adults.",
]
POSITIVE = "An abstract that supports the claim with a cohort study of several thousand participants."
PASSAGE = "A cohort of 1,204 participants was followed for six years; incidence was recorded at each visit."


def _spans(query: str, k: int = 10, seed: int = 0) -> list[tuple[str, str, str]]:
    return [(e.edit_type, e.old, e.new) for e in rule_edits(query, k, seed=seed)]


# --------------------------------------------------------------------------- operators


def test_number_edits_keep_units_and_skip_identifiers():
    spans = _spans(CLAIMS[3])
    numbers = [(old, new) for t, old, new in spans if t == "number"]
    assert ("2.5-fold", "5.0-fold") in numbers and ("45%", "90%") in numbers and ("2015", "2005") in numbers
    # digits inside identifiers (IL-6, COVID-19, p53) are never touched
    assert not any(old in ("IL-6", "COVID-19") for old, _ in numbers)
    assert not any(t == "number" for t, *_ in _spans(CLAIMS[4]))
    # nor numbers that start a compound name (4-PBA, 5-HT): seen in a SciFact build, 4-PBA -> 8-PBA
    compounds = _spans("4-PBA and 5-HT reduce ER stress in 3-fold more cells.")
    assert {old for t, old, _ in compounds if t == "number"} == {"3-fold"}
    assert ("0-dimensional", "1-dimensional") in [(o, n) for t, o, n in _spans(CLAIMS[0])]
    prp = _spans(CLAIMS[1])
    assert ("number", "5", "10") in prp and ("number", "1", "2") in prp
    assert all(new.endswith("%") and float(new[:-1]) <= 100 for t, old, new in spans if old.endswith("%"))


def test_population_and_setting_swaps():
    aspirin = _spans(CLAIMS[2])
    assert ("population", "elderly", "young") in aspirin and ("population", "women", "men") in aspirin
    mice = rule_edits(CLAIMS[4], 10)
    assert any(e.edited_query == "Rats lacking p53 develop tumors in vitro." for e in mice)  # case kept
    assert any(e.edited_query.endswith("in vivo.") and e.edit_type == "setting" for e in mice)
    assert ("setting", "UK", "US") in _spans(CLAIMS[1])
    assert ("setting", "Acute", "Chronic") in _spans(CLAIMS[5])


def test_direction_flips_are_typed_and_come_last():
    for claim in CLAIMS:
        types = [t for t, *_ in _spans(claim)]
        if "direction" in types:
            first = types.index("direction")
            assert all(t == "direction" for t in types[first:]), claim
    assert _spans(CLAIMS[0], k=3)[-1] == ("direction", "lack", "have")
    assert ("direction", "reduces", "raises") in _spans(CLAIMS[2])
    assert ("direction", "more", "less") in _spans(CLAIMS[5])
    # no flip right before a negation ("have no role" -> "lack no role" seen with real SciFact claims)
    assert _spans("ATM and Rad3 related protein have no role in sensing DNA damage.") == []
    # with K=2 the Aspirin claim is edited by population swaps only, never flipped
    assert [t for t, *_ in _spans(CLAIMS[2], k=2)] == ["population", "population"]
    assert EDIT_TYPE_ORDER[-1] == "direction"


def test_k_distinct_edits_each_pass_the_one_place_check():
    for claim in CLAIMS:
        edits = rule_edits(claim, 4)
        assert edits, claim
        assert len({e.edited_query for e in edits}) == len(edits)
        for e in edits:
            assert e.edited_query != claim
            diff = diff_one_place(claim, e.edited_query)
            assert (diff.old, diff.new) == (e.old, e.new)
    # round robin over types: K=2 on the PrP claim mixes a number and a place edit
    assert {t for t, *_ in _spans(CLAIMS[1], k=2)} == {"number", "setting"}


def test_deterministic_and_seed_dependent_order():
    assert rule_edits(CLAIMS[1], 4, seed=3) == rule_edits(CLAIMS[1], 4, seed=3)
    orders = {tuple(_spans(CLAIMS[1], k=4, seed=s)) for s in range(6)}
    assert len(orders) > 1  # the seed reorders spans within a type
    assert all({t for t, *_ in order} <= set(EDIT_TYPE_ORDER) for order in orders)
    assert rule_edit(CLAIMS[2], 1) == rule_edits(CLAIMS[2], 2)[1]
    assert rule_edit(CLAIMS[2], 50) is None


def test_no_rule_applies():
    assert rule_edits("Headache is common.", 3) == []
    assert rule_edits("", 3) == []


# --------------------------------------------------------------------------- in the synthesizer


def _passage_responder(request):
    assert request.schema_name == "edited_passage"
    return json.dumps({"passage": PASSAGE + " " + user_text(request).split("<query>\n")[1].split("\n")[0]})


def test_rules_end_to_end_makes_no_edit_call():
    gen = ScriptedGenerator(_passage_responder)
    synth = Synthesizer(gen, strategy="query_edit", query_editor="rules", num_negatives=2, profile="scientific")
    items = [SynthesisInput(CLAIMS[2], POSITIVE, title="Aspirin"), SynthesisInput("Headache is common.", POSITIVE)]
    ok, none = synth.synthesize(items)
    assert all(r.schema_name == "edited_passage" for r in gen.requests)  # stage 1 made no LLM call
    assert len(gen.requests) == 2 and ok.llm_calls == 2 and none.llm_calls == 0
    assert ok.failure_reason is None and ok.prompt_version == f"qe-v4+rules:{RULE_EDITS_VERSION}"
    assert all(r.prompt_version.startswith(ok.prompt_version) for r in gen.requests)
    assert [n.strategy_type for n in ok.negatives] == ["query_edit:population"] * 2
    for n in ok.negatives:
        assert n.rule_edit and n.edited_query in n.text and n.changed_span[0] in ("elderly", "women")
        assert diff_one_place(CLAIMS[2], n.edited_query)
        assert n.to_dict()["rule_edit"] is True
    assert all(e["rule_edit"] for e in ok.analysis["edits"])
    assert none.negatives == [] and none.failure_reason == "query_edit: no rule-based edit applies"


def test_llm_then_rules_falls_back_after_failed_edits():
    def responder(request):
        if request.schema_name == "query_edit":
            text = user_text(request)
            if "(a number" in text:  # the LLM's one good edit
                return '{"original": "stroke", "replacement": "migraine", "edit_type": "entity"}'
            return CLAIMS[2]  # unchanged claim: fails the one-place check every time
        return _passage_responder(request)

    gen = ScriptedGenerator(responder)
    synth = Synthesizer(gen, strategy="query_edit", query_editor="llm_then_rules", num_negatives=2, max_attempts=2)
    res = synth.synthesize([SynthesisInput(CLAIMS[2], POSITIVE)])[0]
    assert res.failure_reason is None and len(res.negatives) == 2
    llm, ruled = res.negatives
    assert not llm.rule_edit and llm.changed_span == ("stroke", "migraine")
    assert ruled.rule_edit and ruled.strategy_type == "query_edit:population"
    assert any("identical" in n for n in res.notes) and any("rule-based" in n for n in res.notes)
    assert sum(r.schema_name == "query_edit" for r in gen.requests) == 3  # 2 edits + 1 re-ask


def test_llm_editor_is_unchanged_by_default():
    gen = ScriptedGenerator(lambda r: CLAIMS[2] if r.schema_name == "query_edit" else "x")
    res = Synthesizer(gen, strategy="query_edit", num_negatives=1).synthesize([SynthesisInput(CLAIMS[2], POSITIVE)])[0]
    assert res.negatives == [] and "identical" in res.failure_reason and res.prompt_version == "qe-v4"


def test_config_dict_and_validation():
    gen = ScriptedGenerator(_passage_responder)
    base = Synthesizer(gen, strategy="query_edit").config_dict()
    assert "query_editor" not in base  # default: existing fingerprints stay valid
    assert base == Synthesizer(gen, strategy="query_edit", query_editor="llm").config_dict()
    rules = Synthesizer(gen, strategy="query_edit", query_editor="rules").config_dict()
    fallback = Synthesizer(gen, strategy="query_edit", query_editor="llm_then_rules").config_dict()
    assert rules["query_editor"] == "rules" and fallback["query_editor"] == "llm_then_rules"
    assert len({base["prompt_version"], rules["prompt_version"], fallback["prompt_version"]}) == 3
    assert json.loads(json.dumps(rules)) == rules
    with pytest.raises(ValueError, match="query_editor"):
        Synthesizer(gen, strategy="query_edit", query_editor="regex")
    with pytest.raises(TypeError):
        Synthesizer(gen, "query_edit")  # keyword-only


# --------------------------------------------------------------------------- transform / build wiring


def test_transform_forwards_query_editor_and_hashes_it():
    import inspect
    import pickle

    from datasets.fingerprint import Hasher

    from negsynth_hf.build import build_dataset
    from negsynth_hf.generators import GeneratorConfig
    from negsynth_hf.transform import CounterfactualNegatives

    config = GeneratorConfig(backend="embedded", cache_dir="")
    default = CounterfactualNegatives(config, strategy="query_edit", query_editor="llm")
    rules = CounterfactualNegatives(config, strategy="query_edit", query_editor="rules")
    assert "query_editor" not in default.__getstate__()  # existing fingerprints stay valid
    # "auto" (the default) resolves from the config, without loading a model: SmolLM2 cannot edit, rules do
    auto = CounterfactualNegatives(config)
    assert (auto.strategy, auto.query_editor) == ("query_edit", "rules") and Hasher.hash(auto) == Hasher.hash(
        CounterfactualNegatives(config, strategy="query_edit", query_editor="rules")
    )
    assert Hasher.hash(default) != Hasher.hash(rules)
    assert rules.config_dict()["query_editor"] == "rules" and rules.prompt_version.startswith("qe-v4+rules")
    clone = pickle.loads(pickle.dumps(rules))
    assert clone.query_editor == "rules" and pickle.loads(pickle.dumps(default)).query_editor == "llm"
    synth = rules._make_synthesizer(ScriptedGenerator(_passage_responder))
    assert synth.query_editor == "rules" and synth.prompt_version == rules.prompt_version
    with pytest.raises(ValueError, match="query_editor"):
        CounterfactualNegatives(config, query_editor="regex")
    param = inspect.signature(build_dataset).parameters["query_editor"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default == "auto"


def test_recipe_key_reaches_build_kwargs():
    from negsynth_hf.pipeline.build import build_kwargs as _build_kwargs
    from negsynth_hf.recipe_config import ConfigError, parse_step_args

    cfg = parse_step_args("build", ["--query_editor", "rules"])
    assert cfg.build.query_editor == "rules"
    assert _build_kwargs(cfg, object(), "r")["query_editor"] == "rules"
    assert "query_editor" not in _build_kwargs(parse_step_args("build", []), object(), "r")  # default: unchanged
    cfg.build.build_options = {"query_editor": "llm"}
    with pytest.raises(ConfigError, match="query_editor"):
        _build_kwargs(cfg, object(), "r")
