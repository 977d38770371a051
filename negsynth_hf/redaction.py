"""The one rule for secrets: which field names hold one, and how a value is made safe to write or log.

Every output the package writes (build/recipe configs, provenance, dataset and model cards, logs, reprs)
passes its settings through :func:`redact`, so a field named ``password`` is hidden everywhere or nowhere.

A name is secret when one of its words is a secret word. Names are split into words at ``_``, ``-``, ``.``,
spaces and camelCase humps, and a word also counts when it merely starts or ends with a secret word
(``apikey``, ``hftoken``, ``authorization``), so prefixed and suffixed forms match while ``max_new_tokens``
or ``author`` do not. A name whose last word is ``env`` (``api_key_env``, ``token_env``) holds the NAME of an
environment variable, never its value: it is kept, because it tells a reader where the key comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS: tuple[str, ...] = ("key", "token", "secret", "password", "passwd", "credential", "auth")
# words that start or end with a secret word but name something else
_NOT_SECRET = frozenset({"keys", "tokens", "author", "authors", "keyword", "keywords", "tokenizer", "monkey"})
_WORD_SPLIT = re.compile(r"[^0-9A-Za-z]+|(?<=[a-z0-9])(?=[A-Z])")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(name) if w]


def _secret_word(word: str) -> bool:
    if word in _NOT_SECRET:
        return False
    return any(word.startswith(s) or word.endswith(s) for s in SECRET_WORDS)


def is_secret_name(name: str) -> bool:
    """True if a field called ``name`` may hold a secret (see the module docstring for the rule)."""
    words = _words(str(name))
    if not words or words[-1] == "env":
        return False
    return any(_secret_word(w) for w in words)


def redact(value: Any) -> Any:
    """``value`` with every secret-named field's value replaced by ``"<redacted>"``, recursively.

    Mappings become plain dicts, lists and tuples become lists; anything else is returned unchanged.
    """
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_name(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
