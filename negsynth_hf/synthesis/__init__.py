"""The synthesis pipeline: prompts, schemas, profiles, parsing/repair/retry and four strategies.

Talks to an LLM only through the :class:`~negsynth_hf.generators.base.ChatGenerator` protocol.
"""

from __future__ import annotations

from .config import STRATEGIES, SynthesisConfig
from .edits import QueryDiff, diff_one_place
from .parsing import ParseOutcome, extract_json, parse_reply
from .profiles import BUILTIN_PROFILES, DatasetProfile, get_profile
from .prompts import PROMPT_VERSION, PROMPT_VERSIONS
from .quality import FLAG_NAMES, quality_flags
from .records import SynthesisInput, SynthesisResult, SynthesizedNegative
from .rule_edits import RULE_EDITS_VERSION, RuleEdit, rule_edit, rule_edits
from .schemas import (
    ANALYSIS_SCHEMA,
    BREAK_TYPES,
    EDITED_PASSAGE_SCHEMA,
    FACET_TYPES,
    GENERATION_SCHEMA,
    NAIVE_SCHEMA,
    QUERY_EDIT_SCHEMA,
    export_schemas,
    schemas_hash,
)
from .synthesizer import QUERY_EDITORS, Synthesizer

__all__ = [
    "ANALYSIS_SCHEMA",
    "BREAK_TYPES",
    "BUILTIN_PROFILES",
    "EDITED_PASSAGE_SCHEMA",
    "FACET_TYPES",
    "FLAG_NAMES",
    "GENERATION_SCHEMA",
    "NAIVE_SCHEMA",
    "PROMPT_VERSION",
    "PROMPT_VERSIONS",
    "QUERY_EDITORS",
    "QUERY_EDIT_SCHEMA",
    "RULE_EDITS_VERSION",
    "STRATEGIES",
    "DatasetProfile",
    "ParseOutcome",
    "QueryDiff",
    "RuleEdit",
    "SynthesisConfig",
    "SynthesisInput",
    "SynthesisResult",
    "SynthesizedNegative",
    "Synthesizer",
    "diff_one_place",
    "export_schemas",
    "extract_json",
    "get_profile",
    "parse_reply",
    "quality_flags",
    "rule_edit",
    "rule_edits",
    "schemas_hash",
]
