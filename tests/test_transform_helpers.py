"""Scripted (not a model) generator specs for the transform/build tests: picklable configs with ``build()``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from negsynth_hf.generators.base import ChatRequest, ChatResponse

_QUERY = re.compile(r"<query>\s*(.*?)\s*</query>", re.DOTALL)
WORDS = "river forest copper lantern violin harbor meadow quartz falcon orchard glacier saddle".split()


def prompt_query(request: ChatRequest) -> str:
    user = next(m["content"] for m in request.messages if m["role"] == "user")
    match = _QUERY.search(user)
    return match.group(1) if match else user


def scripted_passage(query: str, k: int, *, marker: str = "") -> str:
    """A deterministic corpus-like passage about something else, different per (query, k)."""
    h = int(hashlib.sha256(f"{query}|{k}".encode()).hexdigest(), 16)
    words = [WORDS[(h >> (4 * j)) % len(WORDS)] for j in range(12)]
    return f"{marker}Report {h % 997} describes the {words[0]} {words[1]} near the {words[2]} {words[3]}. " + (
        f"Observers noted {words[4]} and {words[5]} patterns, unlike {words[6]} {words[7]} in {h % 50 + 1950}."
    )


class ScriptedNaiveGenerator:
    """Answers the naive strategy's prompt with scripted passages; fails rows whose query contains ``fail_token``."""

    def __init__(
        self,
        *,
        num: int = 3,
        fail_token: str = "",
        marker: str = "",
        copies: dict[str, str] | None = None,
        model_id: str = "scripted-naive",
    ) -> None:
        self.num = num
        self.fail_token = fail_token
        self.marker = marker
        self.copies = copies or {}
        self._model_id = model_id
        self.calls = 0
        self.requests = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.calls += 1
        self.requests += len(requests)
        out = []
        for request in requests:
            query = prompt_query(request)
            if self.fail_token and self.fail_token in query:
                out.append(ChatResponse(text=None, error="scripted failure"))
                continue
            passages = [scripted_passage(query, k, marker=self.marker) for k in range(self.num)]
            if query in self.copies:  # a planted false negative: the positive, copied
                passages[0] = self.copies[query]
            out.append(ChatResponse(text=json.dumps({"passages": passages}), completion_tokens=50))
        return out

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return self.generate(requests)


@dataclass(frozen=True)
class ScriptedSpec:
    """A picklable, config-only generator spec (what the transform hashes), like ``GeneratorConfig``."""

    num: int = 3
    fail_token: str = ""
    marker: str = ""
    copies: tuple[tuple[str, str], ...] = ()  # (query, text) pairs: answer that query's first passage with text
    cache_dir: str = ""

    def build(self):
        inner = ScriptedNaiveGenerator(
            num=self.num, fail_token=self.fail_token, marker=self.marker, copies=dict(self.copies)
        )
        if not self.cache_dir:
            return inner
        from negsynth_hf.generators import CachingGenerator

        return CachingGenerator(inner, self.cache_dir)

    def to_dict(self) -> dict:
        return asdict(self)


def pairs(n: int = 8, *, fail_rows: Sequence[int] = ()) -> dict[str, list[str]]:
    """Tiny (anchor, positive) pairs with ids; rows in ``fail_rows`` carry the FAIL token in their query."""
    topics = [
        "vitamin D",
        "aspirin",
        "insulin",
        "statins",
        "caffeine",
        "melatonin",
        "zinc",
        "iron",
        "folate",
        "lithium",
    ]
    anchors, positives = [], []
    for i in range(n):
        t = topics[i % len(topics)]
        anchors.append(f"does {t} reduce risk of disease {i}" + (" FAIL" if i in fail_rows else ""))
        positives.append(f"A randomized trial found that {t} lowered the risk of disease {i} by {10 + i} percent.")
    return {"anchor": anchors, "positive": positives, "query_id": [f"q{i}" for i in range(n)]}


def corpus(n: int = 40) -> list[str]:
    return [scripted_passage(f"corpus {i}", 0) + f" Trial {i} measured outcome {i % 7}." for i in range(n)]
