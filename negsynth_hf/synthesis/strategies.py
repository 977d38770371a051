"""The four strategies as sans-IO plans (see ``engine``): counterfactual, naive, query_edit, rewrite.

Every strategy asks for K negatives per row (``num_negatives``); a row that ends with fewer records one reason per
missing negative (``SynthesisResult.unfilled``). Where a strategy makes one call per negative (query_edit,
rewrite), a value equal to one another slot of the row already holds is re-asked with that reason
(``engine.distinct``); the counterfactual generation, which writes up to K in one reply, is asked once more for
the ones its reply left out.

- counterfactual (method Module 1): analysis -> generation, both JSON, no plain-text fallback
  (the structure *is* the method).
- naive (ablation baseline): one prompt, no decomposition, no verification. A plain-text reply is
  accepted as passage(s): the baseline asks for nothing but passages, so prose is a sound answer.
- query_edit (for small generators): K one-detail edits of the query, each checked in code
  (``edits.diff_one_place``), then one passage per accepted edit written from the edited query and
  the title only. Plain-text replies are accepted in both stages when JSON parsing fails: the edit is
  validated by the diff check whatever its wrapping, and a passage is free text anyway, so nothing the
  schema would have guaranteed is lost (constrained decoding is often unavailable for small models).
  With ``query_editor="rules"`` stage 1 is done in code (``rule_edits``: no LLM call), for models too
  small to edit; ``"llm_then_rules"`` lets rules replace the LLM edits that still fail the check.
- rewrite (the method's "prefer rewriting; preserve the corpus style", for small generators): one call per
  negative asks for in-place span edits that change one detail of the positive (a different detail per
  negative); the code checks that every span occurs verbatim and every replacement differs
  (``span_edits.apply_span_edits``) and applies them, so the negative is corpus text with one requirement broken.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .edits import apply_replacement, diff_one_place, edit_problem, plain_edit, plain_text, split_passages
from .engine import CallSettings, Plan, RowStats, Task, distinct, reply_budget, run_tasks
from .fitting import Fitted, TokenBudget, fit_prompt
from .parsing import extract_json, parse_reply
from .profiles import DatasetProfile
from .prompts import (
    PROMPT_VERSIONS,
    REWRITE_FOCUS,
    counterfactual_analysis_messages,
    counterfactual_generation_messages,
    edited_passage_messages,
    more_slots_message,
    naive_messages,
    query_edit_focuses,
    query_edit_messages,
    rewrite_messages,
)
from .quality import deduplicate, normalize, quality_flags
from .records import SynthesisInput, SynthesisResult, SynthesizedNegative
from .rule_edits import edit_kind, rule_edits
from .schemas import (
    ANALYSIS_SCHEMA,
    EDITED_PASSAGE_SCHEMA,
    QUERY_EDIT_SCHEMA,
    REWRITE_SCHEMA,
    Analysis,
    EditedPassage,
    Generation,
    NaivePassages,
    QueryEdit,
    Rewrite,
    generation_schema,
    naive_schema,
)
from .span_edits import AppliedRewrite, apply_span_edits


@dataclass
class Context:
    """Shared state of one ``synthesize`` call. ``items[i] is None`` marks a row that already failed."""

    items: list[SynthesisInput | None]
    results: list[SynthesisResult]
    stats: list[RowStats]
    candidates: list[list[tuple[int, str]]]  # per row: (index in input.candidates, text), at most max_candidates
    profile: DatasetProfile
    settings: CallSettings
    num_negatives: int
    max_chars: int
    query_editor: str = "llm"  # query_edit only: "llm", "rules" or "llm_then_rules"
    prompt_version: str = ""  # the synthesizer's version id (query_edit's depends on the editor)
    budget: TokenBudget | None = None  # the generator's context window and tokenizer (None: not fitted)

    def fit(
        self,
        row: int,
        render: Callable[[str, Sequence[str]], tuple[dict[str, str], ...]],
        candidates: Sequence[str],
        schema: dict[str, Any],
    ) -> Fitted:
        """Fit one request of ``row`` to the context (counted in the row's result), see ``fitting``."""
        item, result = self.items[row], self.results[row]
        assert item is not None
        reply = reply_budget(schema, self.settings.max_new_tokens)
        fitted = fit_prompt(render, item.positive, candidates, reply_tokens=reply, budget=self.budget)
        if fitted.trimmed_tokens or fitted.dropped_candidates:
            result.trimmed_tokens += fitted.trimmed_tokens
            result.dropped_candidates += fitted.dropped_candidates
            result.notes.append(
                f"context: {fitted.trimmed_tokens} prompt tokens trimmed ({fitted.dropped_candidates} candidate(s) "
                f"dropped) to fit the {self.budget.window if self.budget else 0}-token context"
            )
        return fitted

    def rows(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item is not None and self.results[i].failure_reason is None]


def finalize_row(ctx: Context, row: int, negatives: list[SynthesizedNegative], unfilled: Sequence[str] = ()) -> None:
    """De-duplicate, flag, cap at K, and record; a row left with nothing gets a failure reason.

    ``unfilled``: why each of the row's slots that produced nothing failed; with the duplicates removed here they
    become the row's ``unfilled`` reasons (the synthesizer gives any slot still unexplained a generic one).
    """
    try:
        _finalize_row(ctx, row, negatives, list(unfilled))
    except Exception as exc:  # one odd row must not cost the batch
        ctx.results[row].negatives = []
        ctx.results[row].failure_reason = f"internal error while finalizing: {type(exc).__name__}: {exc}"


def _finalize_row(ctx: Context, row: int, negatives: list[SynthesizedNegative], unfilled: list[str]) -> None:
    item, result = ctx.items[row], ctx.results[row]
    assert item is not None
    keep, dup_counts = deduplicate([n.text for n in negatives])
    result.duplicates_removed = len(negatives) - len(keep)
    cand_texts = [c for _, c in ctx.candidates[row]]
    out = []
    for idx, dups in zip(keep, dup_counts, strict=True):
        neg = negatives[idx]
        flags = list(quality_flags(neg.text, query=item.query, positive=item.positive, candidates=cand_texts))
        if dups:
            flags.append("duplicate")
        neg.flags = tuple(dict.fromkeys([*neg.flags, *flags]))
        out.append(neg)
    if len(out) > ctx.num_negatives:
        result.notes.append(f"kept the first {ctx.num_negatives} of {len(out)} negatives")
    result.negatives = out[: ctx.num_negatives]
    unfilled += ["duplicate of another negative of this row (removed)"] * result.duplicates_removed
    result.unfilled = unfilled[: ctx.num_negatives - len(result.negatives)]
    if not result.negatives and result.failure_reason is None:
        result.failure_reason = unfilled[0] if unfilled else "no usable negative was produced"


# --------------------------------------------------------------------------- counterfactual


def _generation_parser(analysis: Analysis, n_candidates: int) -> Callable[[str], tuple[Any, str | None]]:
    """Schema validation plus checks against this row's analysis and candidates."""
    nodes = {n.id.lower(): n for n in analysis.requirements}

    def parse(text: str) -> tuple[Any, str | None]:
        outcome = parse_reply(text, Generation)
        if outcome.value is None:
            return None, outcome.error
        kept, notes = [], []
        for i, neg in enumerate(outcome.value.negatives):
            node = nodes.get(neg.node_id.strip().lower())
            if node is None:
                notes.append(f"negative {i}: unknown node_id {neg.node_id!r} (dropped)")
                continue
            kept.append((neg, node))
        if not kept:
            return (
                None,
                f"no negative names a requirement id of the analysis (valid ids: {[n.id for n in analysis.requirements]})",
            )
        return (kept, notes, n_candidates), None

    return parse


def counterfactual_plan(ctx: Context) -> Plan:
    """Analysis for every row, then generation for the rows whose analysis validated."""
    analysis_tasks = [_analysis_task(ctx, row) for row in ctx.rows()]
    yield from run_tasks(analysis_tasks, ctx.settings, ctx.stats)
    generation_tasks = []
    for task in analysis_tasks:
        if not task.ok:
            ctx.results[task.row].failure_reason = task.failure()
            continue
        ctx.results[task.row].analysis = task.value.with_ids()
        generation_tasks.append(_generation_task(ctx, task.row, task.value))
    yield from run_tasks(generation_tasks, ctx.settings, ctx.stats)
    written: dict[int, list[Any]] = {}
    for task in generation_tasks:
        if not task.ok:
            ctx.results[task.row].failure_reason = task.failure()
            ctx.results[task.row].unfilled = [task.failure()] * ctx.num_negatives
            continue
        kept, notes, _ = task.value
        ctx.results[task.row].notes.extend(notes)
        written[task.row] = list(kept)
    # a reply with fewer than K distinct negatives is asked for the rest, within the retry budget left
    more = [t for t in (_more_task(ctx, task, written[task.row]) for task in generation_tasks if task.ok) if t]
    if more:
        budget = dataclasses.replace(ctx.settings, max_attempts=ctx.settings.max_attempts - 1)
        yield from run_tasks(more, budget, ctx.stats)
    more_by_row = {t.row: t for t in more}
    for row, kept in written.items():
        unfilled = []
        extra = more_by_row.get(row)
        if extra is not None and extra.ok:
            kept += extra.value[0]
            ctx.results[row].notes.extend(extra.value[1])
        elif extra is not None:  # every slot the follow-up was to fill (finalize_row keeps as many as are empty)
            unfilled = [extra.failure()] * ctx.num_negatives
        finalize_row(ctx, row, [_counterfactual_negative(ctx, row, neg, node) for neg, node in kept], unfilled)


def _more_task(ctx: Context, task: Task, kept: list[Any]) -> Task | None:
    """A follow-up turn after ``task``'s accepted reply asking for the negatives it left out, or ``None``.

    The same conversation continues (the first request, and with it every cached first reply, is unchanged); the
    schema offers the critical ids the reply did not use (all of them when it used every one), and a negative
    repeating one already written is dropped, so the follow-up adds distinct negatives or fails with a reason.
    """
    missing = ctx.num_negatives - len(deduplicate([neg.text for neg, _ in kept])[0])
    if missing <= 0 or ctx.settings.max_attempts < 2 or task.reply is None:
        return None
    analysis: Analysis = task.meta["analysis"]
    used = list(dict.fromkeys(node.id for _, node in kept))
    critical = [n.id for n in analysis.requirements if n.critical]
    offered = [i for i in critical if i not in used] or critical
    seen = {normalize(neg.text) for neg, _ in kept}
    base = _generation_parser(analysis, task.meta["num_candidates"])

    def parse(text: str) -> tuple[Any, str | None]:
        value, error = base(text)
        if error is not None:
            return None, error
        fresh = [(neg, node) for neg, node in value[0] if normalize(neg.text) not in seen]
        if not fresh:
            return None, "every negative repeats one already written; write different ones"
        return (fresh[:missing], value[1]), None

    messages = (
        *task.messages,
        {"role": "assistant", "content": task.reply},
        {"role": "user", "content": more_slots_message(missing, used)},
    )
    return Task(
        row=task.row,
        stage="generation_more",
        messages=messages,
        schema_name="generation",
        schema=generation_schema(offered, num_candidates=task.meta["num_candidates"], num_negatives=missing),
        parse=parse,
        prompt_version=f"{PROMPT_VERSIONS['counterfactual']}:generation-more",
    )


def _analysis_task(ctx: Context, row: int) -> Task:
    """Stage 1 of one row, fitted to the context."""
    item = ctx.items[row]
    assert item is not None

    def render(positive: str, _: Sequence[str]) -> tuple[dict[str, str], ...]:
        return counterfactual_analysis_messages(
            item.query, positive, title=item.title, profile=ctx.profile, max_chars=ctx.max_chars
        )

    return Task(
        row=row,
        stage="analysis",
        messages=ctx.fit(row, render, (), ANALYSIS_SCHEMA).messages,
        schema_name="analysis",
        schema=ANALYSIS_SCHEMA,
        parse=lambda text: _as_pair(parse_reply(text, Analysis)),
        prompt_version=f"{PROMPT_VERSIONS['counterfactual']}:analysis",
    )


def _counterfactual_negative(ctx: Context, row: int, neg: Any, node: Any) -> SynthesizedNegative:
    """One generated negative as a record: its candidate number mapped back to the input's index, flags set."""
    flags: tuple[str, ...] = ()
    index = None
    if neg.rewrote_candidate:
        number = neg.candidate_index
        if number is not None and 1 <= number <= len(ctx.candidates[row]):
            index = ctx.candidates[row][number - 1][0]
        else:
            flags = ("invalid_candidate_index",)
    if not node.critical:
        flags = (*flags, "non_critical_node")
    return SynthesizedNegative(
        text=neg.text,
        violated_requirement=f"{node.id}: {node.description}",
        strategy_type=neg.strategy_type,
        rewrote_candidate=index is not None,
        candidate_index=index,
        explanation=neg.explanation,
        flags=flags,
        node_id=node.id,
    )


def _generation_task(ctx: Context, row: int, analysis: Analysis) -> Task:
    """Stage 2 of one row, fitted to the context; its schema offers exactly the critical ids and kept candidates."""
    item, shown = ctx.items[row], ctx.results[row].analysis
    assert item is not None and shown is not None
    critical = [n.id for n in analysis.requirements if n.critical]
    cands = [c for _, c in ctx.candidates[row]]

    def render(positive: str, candidates: Sequence[str]) -> tuple[dict[str, str], ...]:
        return counterfactual_generation_messages(
            item.query,
            positive,
            title=item.title,
            analysis=shown,
            candidates=candidates,
            profile=ctx.profile,
            num_negatives=ctx.num_negatives,
            max_chars=ctx.max_chars,
        )

    full = generation_schema(critical, num_candidates=len(cands), num_negatives=ctx.num_negatives)
    fitted = ctx.fit(row, render, cands, full)
    n_kept = len(cands) - fitted.dropped_candidates
    return Task(
        row=row,
        stage="generation",
        messages=fitted.messages,
        schema_name="generation",
        schema=generation_schema(critical, num_candidates=n_kept, num_negatives=ctx.num_negatives),
        parse=_generation_parser(analysis, n_kept),
        prompt_version=f"{PROMPT_VERSIONS['counterfactual']}:generation",
        meta={"analysis": analysis, "num_candidates": n_kept},
    )


def _as_pair(outcome: Any) -> tuple[Any, str | None]:
    return outcome.value, outcome.error


# --------------------------------------------------------------------------- naive


def _naive_parse(text: str) -> tuple[Any, str | None]:
    outcome = parse_reply(text, NaivePassages)
    if outcome.value is not None:
        passages = [p for p in outcome.value.passages if p.strip()]
        return (passages or None), (None if passages else "all passages are empty")
    prose = plain_text(text)
    if prose is None or prose.lstrip().startswith(("{", "[")):
        return None, outcome.error
    return split_passages(prose), None


def naive_plan(ctx: Context) -> Plan:
    version = PROMPT_VERSIONS["naive"]
    tasks = []
    for row in ctx.rows():
        item = ctx.items[row]
        assert item is not None
        tasks.append(
            Task(
                row=row,
                stage="naive",
                messages=naive_messages(
                    item.query, profile=ctx.profile, num_negatives=ctx.num_negatives, max_chars=ctx.max_chars
                ),
                schema_name="naive",
                schema=naive_schema(ctx.num_negatives),
                parse=_naive_parse,
                prompt_version=version,
            )
        )
    yield from run_tasks(tasks, ctx.settings, ctx.stats)
    for task in tasks:
        if not task.ok:
            ctx.results[task.row].failure_reason = task.failure()
            continue
        finalize_row(ctx, task.row, [SynthesizedNegative(text=p, strategy_type="naive") for p in task.value])


# --------------------------------------------------------------------------- query edit


def _edit_parser(query: str, profile: DatasetProfile) -> Callable[[str], tuple[Any, str | None]]:
    def parse(text: str) -> tuple[Any, str | None]:
        outcome = parse_reply(text, QueryEdit)
        try:
            if outcome.value is not None:
                edit_type = outcome.value.edit_type
                edited = apply_replacement(query, outcome.value.original, outcome.value.replacement)
            else:
                edit_type, edited = "other", _edited_from_json(text) or plain_edit(text, query)
                if edited is None or edited.lstrip().startswith(("{", "[")):
                    return None, outcome.error
            diff = diff_one_place(query, edited)
        except ValueError as exc:
            return None, str(exc)
        problem = edit_problem(query, diff.old, diff.new, edited=edited)
        if problem is not None:  # a nonsense or same-meaning edit costs a re-ask, with the reason
            return None, problem.message
        error = _relevant_kind_error(profile, diff.old, diff.new, edit_type)
        return (None, error) if error else ((edited, edit_type, diff), None)

    return parse


def _relevant_kind_error(profile: DatasetProfile, old: str, new: str, edit_type: str) -> str | None:
    """The re-ask reason when ``old -> new`` is an edit kind the profile marks relevant (its text would still be
    relevant to the original query), else ``None``."""
    kind = edit_kind(old, new, edit_type)
    if kind not in profile.relevant_edit_kinds:
        return None
    return (
        f"changing {old!r} to {new!r} is a {kind} edit, and in this corpus a {profile.document_kind} about such an "
        f"edit is still relevant; change a different detail"
    )


def _edited_from_json(text: str) -> str | None:
    """Models sometimes answer with the whole edited query as JSON instead; the diff check still applies."""
    try:
        data, _ = extract_json(text)
    except ValueError:
        return None
    value = data.get("edited_query") or data.get("query") or data.get("claim") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value.strip() else None


_TRUNCATED_PASSAGE = re.compile(r'^\s*\{\s*"passage"\s*:\s*"(.*)$', re.DOTALL)


def _passage_parse(text: str) -> tuple[Any, str | None]:
    """JSON, else plain prose, else the text of a JSON reply cut off by the token budget (flagged)."""
    outcome = parse_reply(text, EditedPassage)
    if outcome.value is not None:
        return (outcome.value.passage, ()), None
    prose = plain_text(text)
    if prose is None:
        return None, outcome.error
    if not prose.lstrip().startswith(("{", "[")):
        return (prose, ()), None
    cut = _TRUNCATED_PASSAGE.match(prose)
    if cut and "truncated" in (outcome.error or "") and len(cut[1].split()) >= 8:
        salvaged = cut[1].replace('\\"', '"').replace("\\n", "\n").strip()
        return (salvaged, ("truncated",)), None
    return None, outcome.error


def _rule_edit_dicts(
    query: str, k: int, seed: int, seen: set[str], avoid: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Up to ``k`` rule edits whose edited query is not in ``seen`` (which is updated), none of a kind in ``avoid``."""
    out = []
    for edit in rule_edits(query, k + len(seen), seed=seed, avoid=avoid):
        key = normalize(edit.edited_query)
        if key in seen or len(out) >= k:
            continue
        seen.add(key)
        out.append(
            {
                "edited_query": edit.edited_query,
                "edit_type": edit.edit_type,
                "changed_span": [edit.old, edit.new],
                "focus": None,
                "rule_edit": True,
            }
        )
    return out


def query_edit_plan(ctx: Context) -> Plan:
    """Stage 1 (edit) by the LLM, by rules (no LLM call), or by the LLM with rules filling failed edits;
    stage 2 writes one passage per accepted edit."""
    version = ctx.prompt_version or PROMPT_VERSIONS["query_edit"]
    edit_tasks = [] if ctx.query_editor == "rules" else _edit_tasks(ctx, version)
    if edit_tasks:
        yield from run_tasks(edit_tasks, ctx.settings, ctx.stats)
    by_row: dict[int, list[Task]] = {row: [] for row in ctx.rows()}
    for task in edit_tasks:
        by_row[task.row].append(task)
    passage_tasks = []
    unfilled: dict[int, list[str]] = {}
    for row, tasks in by_row.items():
        edits = _accepted_edits(ctx, row, tasks)
        ctx.results[row].analysis = {"edits": edits}
        # a failed edit slot that no rule edit replaced stays empty, with its reason
        unfilled[row] = _edit_failures(ctx, tasks, len(edits))
        if not edits:
            ctx.results[row].failure_reason = _no_edit_reason(ctx, tasks)
            ctx.results[row].unfilled = unfilled[row]
            continue
        passage_tasks.extend(_passage_task(ctx, row, edit, version) for edit in edits)
    yield from run_tasks(passage_tasks, ctx.settings, ctx.stats)
    passages_by_row: dict[int, list[Task]] = {}
    for task in passage_tasks:
        passages_by_row.setdefault(task.row, []).append(task)
    for row, tasks in passages_by_row.items():
        _record_passages(ctx, row, tasks, unfilled[row])


def _edit_tasks(ctx: Context, version: str) -> list[Task]:
    """K LLM edit calls per row, each asked to change a different kind of detail; an edit another slot of the row
    already made, or of a kind the profile marks relevant, is re-asked with that reason."""
    tasks = []
    for row in ctx.rows():
        item = ctx.items[row]
        assert item is not None
        seen: set[str] = set()
        for k in range(ctx.num_negatives):
            focuses = query_edit_focuses(ctx.profile)  # without the profile's relevant edit kinds
            focus = focuses[k % len(focuses)]
            tasks.append(
                Task(
                    row=row,
                    stage="query_edit",
                    messages=query_edit_messages(item.query, profile=ctx.profile, focus=focus, max_chars=ctx.max_chars),
                    schema_name="query_edit",
                    schema=QUERY_EDIT_SCHEMA,
                    parse=distinct(_edit_parser(item.query, ctx.profile), seen, _edited_key, "this edited query"),
                    prompt_version=f"{version}:edit",
                    meta={"focus": focus},
                )
            )
    return tasks


def _edited_key(value: Any) -> str:
    return normalize(value[0])


def _accepted_edits(ctx: Context, row: int, tasks: list[Task]) -> list[dict[str, Any]]:
    """The row's valid LLM edits (distinct and of allowed kinds: the parser re-asks the others), topped up with
    rule edits when the editor allows it (noted)."""
    item, result = ctx.items[row], ctx.results[row]
    assert item is not None
    edits: list[dict[str, Any]] = []
    seen: set[str] = set()
    for task in tasks:
        if not task.ok:
            result.notes.append(task.failure())
            continue
        edited, edit_type, diff = task.value
        seen.add(normalize(edited))
        edits.append(
            {
                "edited_query": edited,
                "edit_type": edit_type,
                "changed_span": [diff.old, diff.new],
                "focus": task.meta["focus"],
                "rule_edit": False,
            }
        )
    if ctx.query_editor != "llm" and len(edits) < ctx.num_negatives:
        # "rules": every edit; "llm_then_rules": one per LLM edit that failed the check or was a duplicate
        avoid = ctx.profile.relevant_edit_kinds
        ruled = _rule_edit_dicts(item.query, ctx.num_negatives - len(edits), ctx.settings.seed, seen, avoid)
        if ruled and ctx.query_editor == "llm_then_rules":
            result.notes.append(f"query_edit: {len(ruled)} rule-based edit(s) replaced failed LLM edits")
        edits.extend(ruled)
    return edits


def _edit_failures(ctx: Context, tasks: list[Task], accepted: int) -> list[str]:
    """One reason per edit slot left empty: the LLM's failures first, a generic one for slots rules could not
    fill (``rules``: no LLM task at all)."""
    missing = max(0, ctx.num_negatives - accepted)
    reasons = [t.failure() for t in tasks if not t.ok]
    if ctx.query_editor != "llm":
        reasons = [f"{r}; no rule-based edit applies either" for r in reasons]
    return (reasons + ["query_edit: no further distinct rule-based edit applies"] * missing)[:missing]


def _no_edit_reason(ctx: Context, tasks: list[Task]) -> str:
    if any(not t.ok for t in tasks):
        return next(t.failure() for t in tasks if not t.ok)
    return "query_edit: no rule-based edit applies" if ctx.query_editor == "rules" else "query_edit: no distinct edit"


def _passage_task(ctx: Context, row: int, edit: dict[str, Any], version: str) -> Task:
    """Stage 2: a passage answering the edited query, written from it and the title only."""
    item = ctx.items[row]
    assert item is not None
    return Task(
        row=row,
        stage="passage",
        messages=edited_passage_messages(
            edit["edited_query"], title=item.title, profile=ctx.profile, max_chars=ctx.max_chars
        ),
        schema_name="edited_passage",
        schema=EDITED_PASSAGE_SCHEMA,
        parse=_passage_parse,
        prompt_version=f"{version}:passage",
        meta=edit,
    )


def _record_passages(ctx: Context, row: int, tasks: list[Task], unfilled: list[str]) -> None:
    """The row's written passages as negatives (a failed passage is a note and an unfilled slot; no passage at all
    fails the row)."""
    result = ctx.results[row]
    negatives = []
    unfilled = list(unfilled)
    for task in tasks:
        if not task.ok:
            result.notes.append(task.failure())
            unfilled.append(task.failure())
            continue
        edit = task.meta
        old, new = edit["changed_span"]
        text, passage_flags = task.value
        negatives.append(
            SynthesizedNegative(
                text=text,
                flags=passage_flags,
                violated_requirement=f"{old!r} -> {new!r}",
                strategy_type=f"query_edit:{edit['edit_type']}",
                explanation=f"written for the edited query {edit['edited_query']!r}, which changes {old!r} to {new!r}",
                edited_query=edit["edited_query"],
                changed_span=(old, new),
                rule_edit=bool(edit.get("rule_edit")),
            )
        )
    if not negatives:
        result.failure_reason = tasks[-1].failure()
        result.unfilled = unfilled[: ctx.num_negatives]
        return
    finalize_row(ctx, row, negatives, unfilled)


# --------------------------------------------------------------------------- rewrite


def _rewrite_parser(source: str, query: str, profile: DatasetProfile) -> Callable[[str], tuple[Any, str | None]]:
    """Schema validation, then the span checks and the edit-kind rule; the value is the applied rewrite."""

    def parse(text: str) -> tuple[Any, str | None]:
        outcome = parse_reply(text, Rewrite)
        if outcome.value is None:
            return None, outcome.error
        edit_type = outcome.value.edit_type
        copied = _copied_from_query(source, query, [e.original for e in outcome.value.edits])
        if copied:
            return None, copied
        try:
            applied = apply_span_edits(source, [(e.original, e.replacement) for e in outcome.value.edits])
        except ValueError as exc:
            return None, str(exc)
        if normalize(applied.text) == normalize(source):
            return None, "the edits change only punctuation or letter case; change one detail's words"
        for edit in applied.edits:
            error = _relevant_kind_error(profile, edit.original, edit.replacement, edit_type)
            if error:
                return None, error
        return (applied, edit_type), None

    return parse


def _copied_from_query(source: str, query: str, spans: list[str]) -> str | None:
    """The re-ask reason when a span is words of the query that the document lacks (small models edit the query)."""
    for i, span in enumerate(spans, 1):
        words = span.strip().casefold()
        if words and words not in source.casefold() and words in query.casefold():
            return (
                f"edit {i}: 'original' ({span!r}) is copied from the query, not from the document; copy words "
                "that occur in the document"
            )
    return None


def _rewritten_key(value: Any) -> str:
    return normalize(value[0].text)


def rewrite_plan(ctx: Context) -> Plan:
    """K edit calls per row, each asked to change a different detail of the positive; the code applies them."""
    tasks = [task for row in ctx.rows() for task in _rewrite_tasks(ctx, row)]
    yield from run_tasks(tasks, ctx.settings, ctx.stats)
    by_row: dict[int, list[Task]] = {}
    for task in tasks:
        by_row.setdefault(task.row, []).append(task)
    for row, row_tasks in by_row.items():
        unfilled = [t.failure() for t in row_tasks if not t.ok]
        negatives = [_rewrite_negative(ctx, t) for t in row_tasks if t.ok]
        if not negatives:
            ctx.results[row].failure_reason, ctx.results[row].unfilled = unfilled[0], unfilled
            continue
        finalize_row(ctx, row, negatives, unfilled)


def _rewrite_tasks(ctx: Context, row: int) -> list[Task]:
    """The row's K edit calls; a rewrite equal to another slot's is re-asked with the reason."""
    item = ctx.items[row]
    assert item is not None
    focuses = query_edit_focuses(ctx.profile, REWRITE_FOCUS)  # without the profile's relevant edit kinds
    seen: set[str] = set()
    parse = distinct(
        _rewrite_parser(item.positive, item.query, ctx.profile), seen, _rewritten_key, "this edited document"
    )
    tasks = []
    for k in range(ctx.num_negatives):
        focus = focuses[k % len(focuses)]

        def render(positive: str, _: Sequence[str], focus: str = focus) -> tuple[dict[str, str], ...]:
            return rewrite_messages(item.query, positive, profile=ctx.profile, focus=focus, max_chars=ctx.max_chars)

        tasks.append(
            Task(
                row=row,
                stage="rewrite",
                messages=ctx.fit(row, render, (), REWRITE_SCHEMA).messages,
                schema_name="rewrite",
                schema=REWRITE_SCHEMA,
                parse=parse,
                prompt_version=PROMPT_VERSIONS["rewrite"],
                meta={"focus": focus},
            )
        )
    return tasks


def _rewrite_negative(ctx: Context, task: Task) -> SynthesizedNegative:
    """One applied rewrite as a record: its spans and replacements, the edited document and its id."""
    item = ctx.items[task.row]
    assert item is not None
    applied: AppliedRewrite
    applied, edit_type = task.value
    changes = "; ".join(f"{e.original!r} -> {e.replacement!r}" for e in applied.edits)
    return SynthesizedNegative(
        text=applied.text,
        violated_requirement=changes,
        strategy_type=f"rewrite:{edit_type}",
        explanation=f"the positive with {task.meta['focus']} changed ({changes})",
        source="positive",
        source_id=item.positive_id,
        edits=tuple((e.original, e.replacement) for e in applied.edits),
    )


PLANS: dict[str, Callable[[Context], Plan]] = {
    "counterfactual": counterfactual_plan,
    "naive": naive_plan,
    "query_edit": query_edit_plan,
    "rewrite": rewrite_plan,
}
