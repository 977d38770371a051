"""The rewrite strategy and K negatives per row, driven by a ScriptedGenerator (a scripted test double, no model)."""

from __future__ import annotations

import json

import pytest
from test_synthesis_helpers import ANALYSIS, ScriptedGenerator, generation_reply, last_user_text, neg, user_text

from negsynth_hf.synthesis import SynthesisInput, Synthesizer
from negsynth_hf.synthesis.schemas import REWRITE_SCHEMA, generation_schema
from negsynth_hf.synthesis.span_edits import apply_span_edits

QUERY = "Vitamin D supplementation reduces fracture risk in older adults."
POSITIVE = (
    "Vitamin D and fractures. In a randomized trial of 2,686 adults aged over 65, oral vitamin D every four "
    "months reduced the incidence of fractures by 22 percent compared with placebo over five years."
)
ENTITY = {"edits": [{"original": "vitamin D", "replacement": "vitamin K"}], "edit_type": "entity"}
TIME = {"edits": [{"original": "five years", "replacement": "six weeks"}], "edit_type": "time"}
NUMBER = {"edits": [{"original": "22 percent", "replacement": "3 percent"}], "edit_type": "number"}


def reply(*edits: tuple[str, str], edit_type: str = "other") -> str:
    return json.dumps({"edits": [{"original": o, "replacement": r} for o, r in edits], "edit_type": edit_type})


def by_focus(request) -> str:
    """The scripted editor: the entity focus gets the entity edit, every other focus the number edit."""
    return json.dumps(ENTITY if "find the main entity" in user_text(request) else NUMBER)


def run(responder, *, k=2, profile="generic", **options):
    gen = ScriptedGenerator(responder)
    synth = Synthesizer(gen, strategy="rewrite", num_negatives=k, profile=profile, **options)
    item = SynthesisInput(QUERY, POSITIVE, positive_id="doc-42")
    return gen, synth.synthesize([item])[0]


def test_applied_edits_and_provenance():
    gen, res = run(by_focus, k=2, profile="scientific")  # the entity focus first, then the population
    assert res.failure_reason is None and res.unfilled == [] and res.prompt_version == "rw-v2"
    assert len(gen.batches) == 1 and len(gen.batches[0]) == 2  # K calls per row, in one batch
    assert all(r.json_schema == REWRITE_SCHEMA and r.prompt_version == "rw-v2" for r in gen.requests)
    assert POSITIVE in user_text(gen.requests[0])  # the source document is in the prompt
    entity, number = res.negatives
    # every mention replaced, the sentence-initial one capitalized; nothing else of the document changed
    assert entity.text == POSITIVE.replace("Vitamin D", "Vitamin K").replace("vitamin D", "vitamin K")
    assert number.text == POSITIVE.replace("22 percent", "3 percent") and number.strategy_type == "rewrite:number"
    assert entity.edits == (("vitamin D", "vitamin K"),) and number.edits == (("22 percent", "3 percent"),)
    assert entity.source == "positive" and entity.source_id == "doc-42" and entity.strategy_type == "rewrite:entity"
    assert entity.violated_requirement == "'vitamin D' -> 'vitamin K'"
    record = entity.to_dict()
    assert record["edits"] == [["vitamin D", "vitamin K"]] and record["source_id"] == "doc-42"
    json.dumps(res.to_dict())
    # the strategy's prompt version goes into provenance and into every request (the response cache key)
    assert Synthesizer(ScriptedGenerator(by_focus), strategy="rewrite").config_dict()["prompt_version"] == "rw-v2"


def test_multi_span_edit():
    _, res = run(lambda r: reply(("2,686", "412"), ("over 65", "under 12"), edit_type="population"), k=1)
    (negative,) = res.negatives
    assert negative.edits == (("2,686", "412"), ("over 65", "under 12"))
    assert negative.text == POSITIVE.replace("2,686", "412").replace("over 65", "under 12")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (reply(("vitamin E", "vitamin K")), "does not occur verbatim in the document"),
        (reply(("vitamin D", "Vitamin D ")), "is the same text"),
        (reply(("vitamin D", "vitamin K"), ("vitamin D", "calcium")), "two different replacements"),
        (reply(("ears", "months")), "only inside longer words"),  # "years" holds it, but no whole word "ears"
        (reply((POSITIVE[:110], "Unrelated text.")), "at most 40%"),  # a new text, not a rewrite
        ('{"edits": []}', "edits: List should have at least 1 item"),
        (reply(("2,686", "2.686")), "change only punctuation or letter case"),
        (reply(("older adults", "children")), "is copied from the query, not from the document"),
    ],
)
def test_failed_check_costs_a_retry_with_the_reason(bad, reason):
    replies = iter([bad, json.dumps(ENTITY)])
    gen, res = run(lambda r: next(replies), k=1)
    assert res.failure_reason is None and res.attempts == 2 and res.llm_calls == 2
    reask = gen.batches[1][0]
    assert reask.messages[-2] == {"role": "assistant", "content": bad} and reason in last_user_text(reask)
    assert res.negatives[0].edits == (("vitamin D", "vitamin K"),)


def test_a_row_that_never_passes_fails_with_one_reason_per_slot():
    gen, res = run(lambda r: reply(("vitamin E", "vitamin K")), k=2, max_attempts=2)
    assert res.negatives == [] and res.llm_calls == 4
    assert res.failure_reason.startswith("rewrite: edit 1: 'original' ('vitamin E') does not occur verbatim")
    assert res.failure_reason.endswith("after 2 attempts")
    assert len(res.unfilled) == 2 and all("does not occur verbatim" in r for r in res.unfilled)


def test_slots_get_distinct_rewrites():
    """Both slots first propose the same edit: the second is re-asked with the reason and gives another."""
    seen: list[str] = []

    def responder(request):
        if len(request.messages) > 2:  # a re-ask
            seen.append(last_user_text(request))
            return json.dumps(TIME)
        return json.dumps(ENTITY)

    _, res = run(responder, k=2)
    assert [n.edits for n in res.negatives] == [(("vitamin D", "vitamin K"),), (("five years", "six weeks"),)]
    assert len(seen) == 1 and "same as one already given for this row" in seen[0]


def test_an_edit_kind_the_profile_marks_relevant_is_reasked():
    replies = iter([reply(("reduced", "increased"), edit_type="other"), json.dumps(ENTITY)])
    gen, res = run(lambda r: next(replies), k=1, profile="scientific")
    assert "is a direction edit" in last_user_text(gen.batches[1][0])
    assert res.negatives[0].strategy_type == "rewrite:entity"


def test_apply_span_edits_nested_spans_and_counts():
    applied = apply_span_edits(POSITIVE, [("vitamin D", "calcium"), ("oral vitamin D", "intravenous iron")])
    assert "intravenous iron every four months" in applied.text and applied.text.startswith("Calcium and fractures")
    assert [(e.original, e.occurrences) for e in applied.edits] == [("vitamin D", 1), ("oral vitamin D", 1)]
    assert applied.changed_chars == len("Vitamin D") + len("oral vitamin D")


# ----------------------------------------------------------------------------------- K negatives per row


def test_query_edit_reasks_duplicate_edits_so_every_slot_fills():
    """Both edit slots answer with the same edit first; the second is re-asked and gives a distinct one."""

    def responder(request):
        if request.schema_name == "edited_passage":
            topic = "calcium" if "Calcium" in user_text(request) else "muscle strength"
            return json.dumps({"passage": f"A cohort study of {topic} in older adults followed for ten years."})
        if len(request.messages) > 2:
            return '{"original": "fracture risk", "replacement": "muscle strength", "edit_type": "other"}'
        return '{"original": "Vitamin D", "replacement": "Calcium", "edit_type": "entity"}'

    gen = ScriptedGenerator(responder)
    res = Synthesizer(gen, strategy="query_edit", query_editor="llm", num_negatives=2).synthesize(
        [SynthesisInput(QUERY, POSITIVE)]
    )[0]
    assert len(res.negatives) == 2 and res.unfilled == []
    assert {n.changed_span for n in res.negatives} == {("Vitamin D", "Calcium"), ("fracture risk", "muscle strength")}
    reask = next(r for r in gen.requests if r.schema_name == "query_edit" and len(r.messages) > 2)
    assert "this edited query is the same as one already given" in last_user_text(reask)


def test_query_edit_unfilled_slot_is_counted_with_its_reason():
    def responder(request):
        if request.schema_name == "edited_passage":
            return json.dumps({"passage": "Calcium intake was studied in a large cohort of older adults over years."})
        if "(a number" in user_text(request):
            return QUERY  # identical: rejected every time
        return '{"original": "Vitamin D", "replacement": "Calcium", "edit_type": "entity"}'

    res = Synthesizer(ScriptedGenerator(responder), strategy="query_edit", query_editor="llm", num_negatives=2)
    out = res.synthesize([SynthesisInput(QUERY, POSITIVE)])[0]
    assert len(out.negatives) == 1 and len(out.unfilled) == 1
    assert (
        out.unfilled[0].startswith("query_edit: the edited query is identical")
        and "after 3 attempts" in out.unfilled[0]
    )


def _cf(generation):
    return lambda r: json.dumps(ANALYSIS) if r.schema_name == "analysis" else generation(r)


NEG_A = "Calcium supplementation was studied in 1,200 postmenopausal women; bone density rose slightly after two years."
NEG_B = "Vitamin D deficiency was common among adolescent athletes training indoors, affecting muscle strength."


def test_counterfactual_asks_for_the_negatives_a_reply_left_out():
    def generation(request):
        if request.messages[-1]["role"] == "user" and "more negative" in request.messages[-1]["content"]:
            return generation_reply(neg(NEG_B, "C2", "constraint_violation"))
        return generation_reply(neg(NEG_A, "C1"))

    gen = ScriptedGenerator(_cf(generation))
    res = Synthesizer(gen, num_negatives=2).synthesize([SynthesisInput(QUERY, POSITIVE)])[0]
    assert [n.node_id for n in res.negatives] == ["C1", "C2"] and res.unfilled == []
    follow = gen.batches[2][0]
    # the same conversation continued: the accepted reply, then the request for the rest, offering unused ids only
    assert follow.messages[:2] == gen.batches[1][0].messages and follow.messages[2]["role"] == "assistant"
    assert (
        "Write 1 more negative document" in follow.messages[3]["content"]
        and "used: C1" in follow.messages[3]["content"]
    )
    assert follow.json_schema == generation_schema(["C2"], num_candidates=0, num_negatives=1)
    assert follow.prompt_version == "cf-v2:generation-more"


def test_counterfactual_follow_up_that_repeats_leaves_slots_unfilled_with_the_reason():
    gen = ScriptedGenerator(_cf(lambda r: generation_reply(neg(NEG_A, "C1"))))
    res = Synthesizer(gen, num_negatives=3, max_attempts=2).synthesize([SynthesisInput(QUERY, POSITIVE)])[0]
    assert len(res.negatives) == 1 and len(res.unfilled) == 2
    assert all(r.startswith("generation_more: every negative repeats one already written") for r in res.unfilled)
    assert len(gen.batches) == 3  # analysis, generation, one follow-up (the budget left after the first attempt)


@pytest.mark.parametrize("strategy", ["counterfactual", "naive", "query_edit", "rewrite"])
def test_every_missing_negative_has_a_reason(strategy):
    """len(negatives) + len(unfilled) == K for good rows, failed rows and invalid inputs alike."""

    def responder(request):
        if request.schema_name == "analysis":
            return json.dumps(ANALYSIS)
        if request.schema_name == "generation":
            return generation_reply(neg(NEG_A, "C1"))
        if request.schema_name == "naive":
            return json.dumps({"passages": [NEG_A]})
        if request.schema_name == "edited_passage":
            return json.dumps({"passage": NEG_B})
        if request.schema_name == "query_edit":
            return '{"original": "Vitamin D", "replacement": "Calcium", "edit_type": "entity"}'
        return json.dumps(ENTITY)

    items = [SynthesisInput(QUERY, POSITIVE), {"query": "", "positive": POSITIVE}]
    synth = Synthesizer(ScriptedGenerator(responder), strategy=strategy, query_editor="llm", num_negatives=3)
    for res in synth.synthesize(items):
        assert len(res.negatives) + len(res.unfilled) == 3 and all(res.unfilled)
    good, bad = synth.synthesize(items)
    assert len(good.negatives) == 1 and bad.unfilled == [bad.failure_reason] * 3


def test_transform_records_rewrite_provenance_and_unfilled_columns():
    """Through CounterfactualNegatives: spans, replacements and source per negative; one reason per empty column."""
    import re

    from test_transform_helpers import ScriptedSpec, pairs

    from negsynth_hf.transform import PROVENANCE_COLUMN, CounterfactualNegatives, RowProvenance

    def responder(request):
        if "find the main entity" in user_text(request):
            number = re.search(r"by (\d+) percent", user_text(request))[1]
            return reply((f"{number} percent", "2 percent"), edit_type="number")
        return reply(("older adults", "children"))  # not in these positives: fails every attempt

    class Scripted(CounterfactualNegatives):
        def _make_synthesizer(self, generator):
            return Synthesizer(ScriptedGenerator(responder), config=self.synthesis)

    out = Scripted(ScriptedSpec(), strategy="rewrite", num_generated=2, max_attempts=2)(pairs(2))
    assert (
        out["generated_1"][0] == "A randomized trial found that vitamin D lowered the risk of disease 0 by 2 percent."
    )
    assert out["generated_2"] == ["", ""]
    record = RowProvenance.from_json(out[PROVENANCE_COLUMN][0])
    (negative,) = record.negatives
    assert negative.source == "positive" and negative.edits == (("10 percent", "2 percent"),)
    assert negative.strategy_type == "rewrite:number" and record.prompt_version == "rw-v2"
    assert len(record.unfilled) == 1 and "does not occur verbatim" in record.unfilled[0]


def _number_only(request) -> str:
    """Scripted editor for the build test: the first focus edits the row's percentage; other focuses fail."""
    import re

    if "find the main entity" in user_text(request):
        return reply((re.search(r"by (\d+ percent)", user_text(request))[1], "2 percent"), edit_type="number")
    return reply(("older adults", "children"))


class _RewriteSpec:
    """A picklable, config-only spec (what the transform hashes) building the scripted editor above."""

    def build(self):
        return ScriptedGenerator(_number_only, model_id="scripted-rewrite")

    def to_dict(self) -> dict:
        return {"type": "scripted-rewrite"}


def test_build_gives_every_empty_generated_slot_its_own_reason(tiny_model, tmp_path):
    from datasets import Dataset
    from test_transform_helpers import corpus, pairs

    from negsynth_hf.build import build_dataset

    result = build_dataset(
        Dataset.from_dict(pairs(4)),
        corpus=corpus(),
        retriever=tiny_model,
        generator=_RewriteSpec(),
        strategy="rewrite",
        num_mined=1,
        num_generated=2,
        max_attempts=2,
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=False,
    )
    slots = [s for s in result.provenance if s["source"] == "generated"]
    filled = [s for s in slots if s["status"] == "filled"]
    assert len(slots) == 8 and len(filled) == 4  # one rewrite per row; the second slot failed every attempt
    assert all("does not occur verbatim in the document" in s["weight_reason"] for s in filled)
    written = [s for s in slots if s["status"] != "filled"]
    assert all(s["strategy_type"] == "rewrite:number" and s["prompt_version"] == "rw-v2" for s in written)


def test_a_span_copied_with_other_letter_case_is_the_same_words():
    applied = apply_span_edits(POSITIVE, [("Oral Vitamin D", "intravenous iron")])
    assert "intravenous iron every four months" in applied.text and applied.edits[0].occurrences == 1
