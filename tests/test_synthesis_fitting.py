"""Context fitting (synthesis.fitting): candidates dropped first, then the positive trimmed, counted.

The tokenizer here is a stand-in (one token per whitespace-separated word), named as such; the real one is the
llama.cpp server's, exercised in test_generators_llamacpp.py.
"""

from __future__ import annotations

from negsynth_hf.synthesis.fitting import TokenBudget, fit_prompt


def word_tokenizer(texts):  # stand-in tokenizer: one token per word
    return [len(t.split()) for t in texts]


def render(positive, candidates):
    user = " ".join(["query words here", positive, *candidates])
    return ({"role": "system", "content": "sys"}, {"role": "user", "content": user})


def test_prompt_that_surely_fits_is_not_tokenized():
    calls = []
    budget = TokenBudget(10_000, lambda texts: calls.append(texts) or word_tokenizer(texts))
    fitted = fit_prompt(render, "short positive", ["one candidate"], reply_tokens=100, budget=budget)
    assert fitted.fits and fitted.trimmed_tokens == 0 and fitted.dropped_candidates == 0 and calls == []


def test_candidates_go_first_then_the_positive_is_trimmed():
    positive = "p " * 400
    candidates = ["c " * 100, "d " * 100]
    budget = TokenBudget(400, word_tokenizer)
    fitted = fit_prompt(render, positive, candidates, reply_tokens=50, budget=budget)
    user = fitted.messages[1]["content"]
    assert fitted.fits and fitted.dropped_candidates == 2 and " c " not in f" {user} "
    assert 0 < user.count("p ") < 400 and user.rstrip().endswith("...")  # the positive is cut, and marked
    assert budget.prompt_tokens(fitted.messages) + 50 <= 400
    original = budget.prompt_tokens(render(positive, candidates))
    assert fitted.trimmed_tokens == original - budget.prompt_tokens(fitted.messages)


def test_reports_when_nothing_can_make_it_fit():
    budget = TokenBudget(40, word_tokenizer)
    fitted = fit_prompt(render, "p " * 50, [], reply_tokens=39, budget=budget)
    assert not fitted.fits
