"""The ``contrast`` guard policy, the edit checks behind it, and guard_eval's precision/recall arithmetic.

``BagOfWordsEncoder`` is a stand-in for a SentenceTransformer, named as such: normalized word counts over the texts'
vocabulary, so "closer to the edited query than to the original" is exact and readable in each test.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from negsynth_hf.synthesis.edits import edit_problem
from negsynth_hf.synthesis.profiles import get_profile
from negsynth_hf.synthesis.quality import looks_like_commentary
from negsynth_hf.synthesis.rule_edits import rule_edits
from negsynth_hf.synthesis.strategies import _edit_parser
from negsynth_hf.verification import Candidate, GuardPolicy, apply_policy

ROOT = Path(__file__).resolve().parent.parent


def _guard_eval():
    spec = importlib.util.spec_from_file_location("guard_eval_bench", ROOT / "benchmarks" / "guard_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BagOfWordsEncoder:
    """A stand-in encoder (not a neural model): each text is its normalized word-count vector."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        rows = []
        for text in texts:
            counts: dict[int, float] = {}
            for w in re.findall(r"[a-z0-9]+", text.lower()):
                i = self.vocab.setdefault(w, len(self.vocab))
                counts[i] = counts.get(i, 0.0) + 1.0
            rows.append(counts)
        out = np.zeros((len(rows), 512), dtype=np.float32)
        for r, counts in enumerate(rows):
            for i, v in counts.items():
                out[r, i] = v
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


# ------------------------------------------------------------------------------------------------ edit checks
@pytest.mark.parametrize(
    ("query", "old", "new", "code"),
    [
        ("has anyone developed an analysis of conical shells .", "has", "lacks", "auxiliary_flip"),
        ("what factors have been shown to influence sonic boom strength .", "have", "lack", "auxiliary_flip"),
        ("Basophils promote disease in patients with lupus.", "patients", "healthy volunteers",
         "contradictory_population"),
        ("Chlamydia is most prevalent among individuals aged 16 to 24.", "16", "32", "inverted_range"),
        ("Sweet taste receptors are deactivated by between 1 and 10 mM glucose.", "1", "100", "inverted_range"),
        ("Bibliographic control before and after MARC is reviewed.", "after", "before", "replacement_in_query"),
        ("Women who are non-infertile conceive.", "non-infertile", "fertile", "same_meaning"),
        ("Individuals with Alzheimers improve.", "Alzheimers", "Alzheimer's", "same_meaning"),
        ("jet interference with supersonic flow .", "", "in space", "insertion"),
        ("is information on the buckling of sandwich spheres available .", "sandwich spheres", "a different shape",
         "vague_replacement"),
    ],
)  # fmt: skip
def test_edit_problem_names_what_is_wrong(query, old, new, code):
    problem = edit_problem(query, old, new)
    assert problem is not None and problem.code == code and problem.message


@pytest.mark.parametrize(
    ("query", "old", "new"),
    [
        ("Mice that have high ATP levels live longer.", "have", "lack"),  # a main verb: a real flip
        ("Less than 10% of patients exposed to radiation have markers.", "patients", "healthy volunteers"),
        ("Chlamydia is most prevalent among individuals aged 16 to 24.", "16", "18"),
        ("In pediatric tissue most T cells are naive.", "pediatric", "adult"),
        ("Women who are infertile conceive less often.", "infertile", "non-infertile"),  # a real flip
    ],
)
def test_edit_problem_accepts_real_counterfactual_edits(query, old, new):
    assert edit_problem(query, old, new) is None


def test_rule_edits_make_no_nonsense_edits():
    for query in (
        "has anyone developed an analysis which establishes the deflection of conical shells .",
        "Basophils promote disease development in patients with lupus.",
        "Chlamydia is most prevalent among individuals aged 16 to 24.",
    ):
        for edit in rule_edits(query, 10):
            assert edit_problem(query, edit.old, edit.new, edited=edit.edited_query) is None, edit
            assert not (edit.old.lower() in ("has", "have") and edit.new.lower().startswith("lack")), edit
    # the operators still apply where they make sense
    assert any(e.new == "18" or e.new == "8" for e in rule_edits("Prevalent among individuals aged 16 to 24.", 10))


def test_llm_edit_with_a_problem_is_reasked_with_the_reason():
    parse = _edit_parser("has anyone developed an analysis of conical shells .", get_profile("generic"))
    value, error = parse(json.dumps({"original": "has", "replacement": "lacks", "edit_type": "direction"}))
    assert value is None and "auxiliary" in error
    value, error = parse(json.dumps({"original": "conical", "replacement": "spherical", "edit_type": "entity"}))
    assert error is None and value[0] == "has anyone developed an analysis of spherical shells ."


def test_commentary_is_recognised():
    assert looks_like_commentary("This abstract aims to provide a comprehensive analysis of the claim.")
    assert looks_like_commentary("The research question posed in the query, 'what factors', is critical.")
    assert not looks_like_commentary("This study measured the drag of ring wings at Mach 2.")


# ------------------------------------------------------------------------------------------------ the policy
QUERY = "buckling of conical shells under axial compression"


def _cand(text: str, old: str, new: str, *, query: str = QUERY, band: bool = False, **kw) -> Candidate:
    edited = query.replace(old, new) if old else query
    return Candidate(
        query=query, positive="a positive about conical shells", text=text, near_duplicate=False,
        contains_query=kw.pop("contains_query", False), margin_reason="in band" if band else None,
        strategy_type="query_edit:entity", violated_requirement=f"{old!r} -> {new!r}", edited_query=edited, **kw,
    )  # fmt: skip


def test_contrast_policy_keeps_passages_about_the_edited_query_and_masks_the_rest():
    cands = [
        _cand(
            "buckling of spherical shells under axial compression measured in tests", "conical", "spherical", band=True
        ),  # fmt: skip
        _cand("buckling of spherical conical shells under compression", "conical", "spherical"),  # carries both
        _cand("This abstract aims to provide an overview of spherical shells.", "conical", "spherical"),
        _cand("quantum mechanics of spherical atoms", "conical", "spherical"),  # off topic
        _cand("buckling of shells under axial compression", "conical", "spherical"),  # neither: not carried
        Candidate(QUERY, "pos", "a counterfactual passage", False, False, "in band", strategy_type="counterfactual"),
        Candidate(QUERY, "pos", "another counterfactual", False, False, None, strategy_type="counterfactual"),
    ]
    policy = GuardPolicy(mode="contrast", encoder=BagOfWordsEncoder(), min_contrast=0.05, min_sim_query=0.3)
    out = apply_policy(policy, cands, get_profile("generic"))
    got = [(d.decision, d.reason) for d in out.decisions]
    assert got == [
        ("kept", "contrast_passed"),  # in the margin band and kept: the margin plays no part for query edits
        ("masked", "edit_not_carried"),
        ("masked", "commentary"),
        ("masked", "off_topic"),
        ("masked", "edit_not_carried"),
        ("masked", "margin"),  # no query edit: the margin rule stands
        ("kept", "margin_passed"),
    ]
    assert "sim(text, edited)-sim(text, query)=" in out.decisions[0].detail
    assert out.counts["guard_masked_edit_not_carried"] == 2 and out.counts["guard_kept_contrast_passed"] == 1


def test_contrast_threshold_and_edit_problems_decide():
    text = "buckling of spherical shells under axial compression"
    enc = BagOfWordsEncoder()
    strict = GuardPolicy(mode="contrast", encoder=enc, min_contrast=0.9, min_sim_query=0.0)
    [d] = apply_policy(strict, [_cand(text, "conical", "spherical")], get_profile("generic")).decisions
    assert (d.decision, d.reason) == ("masked", "low_contrast") and "< 0.9" in d.detail
    question = "has anyone analysed the buckling of conical shells"
    lenient = GuardPolicy(mode="contrast", encoder=enc, min_contrast=-1.0, min_sim_query=-1.0)
    [d] = apply_policy(lenient, [_cand("lacks anyone analysed ...", "has", "lacks", query=question)],
                       get_profile("generic")).decisions  # fmt: skip
    assert (d.decision, d.reason) == ("masked", "edit_auxiliary_flip")
    [d] = apply_policy(lenient, [_cand(text, "conical", "spherical", contains_query=True)],
                       get_profile("generic")).decisions  # fmt: skip
    assert d.reason == "contains_query"


def test_contrast_is_the_default_policy_and_its_config_is_json_safe():
    policy = GuardPolicy()
    assert policy.mode == "contrast" and policy.min_contrast == 0.03 and policy.min_sim_query == 0.5
    config = GuardPolicy(encoder=BagOfWordsEncoder()).to_config()
    assert config["encoder"] == "BagOfWordsEncoder" and json.dumps(config)
    with pytest.raises(ValueError, match="min_contrast"):
        GuardPolicy(min_contrast=2.0)


# ------------------------------------------------------------------------------------------------ guard_eval
def test_precision_recall_on_a_hand_made_case():
    ge = _guard_eval()
    r = ge.precision_recall(["true", "true", "false", "junk", "true"], [True, False, True, False, True])
    assert r == {"n_labelled": 5, "n_true": 3, "kept": 3, "kept_true": 2, "true_share": 0.6,
                 "precision": 2 / 3, "recall": 2 / 3}  # fmt: skip
    assert ge.precision_recall(["true", "junk"], [False, False])["precision"] is None
    assert ge.precision_recall(["false"], [True])["recall"] is None
    assert ge.f_beta({"precision": 1.0, "recall": 0.5}, beta=1.0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="align"):
        ge.precision_recall(["true"], [True, False])


def test_split_by_query_and_labels_validated(tmp_path):
    ge = _guard_eval()
    halves = {ge.split_of(str(q)) for q in range(20)}
    assert halves == {"dev", "eval"} and ge.split_of("7") == ge.split_of("7")
    (tmp_path / "x.jsonl").write_text('{"query_id": "1", "text_sha1": "ab", "label": "maybe", "reason": ""}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:1: label"):
        ge.read_labels("x", tmp_path)
