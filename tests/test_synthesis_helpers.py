"""A scripted (non-LLM) ChatGenerator and canned stage replies, shared by the synthesis tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from negsynth_hf.generators.base import ChatRequest, ChatResponse

Reply = str | ChatResponse | None


class ScriptedGenerator:
    """Answers each request with ``responder(request)``: scripted text, not a model.

    Records every batch it was sent, so tests can check batching, schemas and re-ask messages.
    """

    def __init__(self, responder: Callable[[ChatRequest], Reply], *, model_id: str = "scripted") -> None:
        self.responder = responder
        self._model_id = model_id
        self.batches: list[list[ChatRequest]] = []
        self.async_batches = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.batches.append(list(requests))
        out = []
        for request in requests:
            reply = self.responder(request)
            if isinstance(reply, ChatResponse):
                out.append(reply)
            elif reply is None:
                out.append(ChatResponse(text=None, error="timeout"))
            else:
                out.append(ChatResponse(text=reply, completion_tokens=len(reply.split()), prompt_tokens=10))
        return out

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.async_batches += 1
        return self.generate(requests)

    @property
    def requests(self) -> list[ChatRequest]:
        return [r for batch in self.batches for r in batch]


def user_text(request: ChatRequest) -> str:
    """The first user message (the rendered prompt, without re-ask turns)."""
    return next(m["content"] for m in request.messages if m["role"] == "user")


def last_user_text(request: ChatRequest) -> str:
    return [m["content"] for m in request.messages if m["role"] == "user"][-1]


ANALYSIS = {
    "core_need": "Whether vitamin D reduces fractures in older adults.",
    "how_positive_answers": "It reports a trial where vitamin D lowered fracture rates in adults over 65.",
    "answer_boundary": "A document must report the effect of vitamin D on fractures in older adults.",
    "critical_requirements": [
        {
            "facet": "entity",
            "description": "The intervention is vitamin D.",
            "break_strategies": [
                {"type": "entity_shift", "idea": "Use calcium instead of vitamin D."},
                {"type": "upstream_downstream", "idea": "Discuss vitamin D synthesis in skin."},
            ],
        },
        {
            "facet": "constraint",
            "description": "The population is older adults.",
            "break_strategies": [
                {"type": "constraint_violation", "idea": "Study children."},
                {"type": "entity_shift", "idea": "Study athletes."},
            ],
        },
    ],
    "other_requirements": [
        {"facet": "attribute", "description": "The outcome is fracture risk."},
        {"facet": "information_need", "description": "Effect size is reported."},
    ],
}


def generation_reply(*negs: dict) -> str:
    return json.dumps({"negatives": list(negs)})


def neg(text: str, node: str = "C1", kind: str = "entity_shift", *, cand: int | None = None) -> dict:
    return {
        "node_id": node,
        "strategy_type": kind,
        "candidate_index": cand,
        "text": text,
        "explanation": "It is about a different intervention, so it does not address the query.",
    }


def test_scripted_generator_follows_the_protocol():
    from negsynth_hf.generators.base import ChatGenerator

    gen = ScriptedGenerator(lambda r: None)
    assert isinstance(gen, ChatGenerator)
    (resp,) = gen.generate([ChatRequest(messages=({"role": "user", "content": "hi"},))])
    assert not resp.ok and resp.error == "timeout"
