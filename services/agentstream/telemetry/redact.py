"""Secrets never reach a log line: API keys, bearer tokens and the values of secret
environment variables are replaced by ``[REDACTED]`` in every formatted line.

Applied to the whole formatted text (message, arguments and traceback alike), so a key
inside an exception a provider SDK raised is caught as well as one a log call passes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentstream.settings import SECRET_ENV_SUFFIXES, SECRET_FILE_SUFFIX

REDACTED = "[REDACTED]"
# Shorter values are not taken as secrets: replacing "1" or "dev" everywhere garbles logs.
MIN_SECRET_CHARS = 6

_PATTERNS = (
    # OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) style keys.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    # An Authorization header's credentials, however they got into a message.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/\-]+=*"), rf"\1{REDACTED}"),
    # key=value / key: value pairs whose name says secret (api_key=..., "password": "...").
    (re.compile(r"(?i)\b((?:api[_-]?key|token|secret|password)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;}]{4,}"), rf"\1{REDACTED}"),
)
# Each pattern above needs "sk-" at the start of a word, or one of these words in any case:
# a line without them (most lines) skips the patterns. The words are looked for in the
# line's casefold(), which maps every character the patterns' IGNORECASE takes for one of
# their letters (the long s, the Kelvin sign) to that letter (tests/unit/test_logs.py
# checks every code point). The patterns cost ~10 µs per log line, the check about 1;
# the specialist and the supervisor each log a line per task.
KEY_PREFIX = "sk-"
PATTERN_WORDS = ("bearer", "key", "token", "secret", "password")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of every variable named ``*_KEY``/``*_TOKEN``/``*_SECRET``/``*_PASSWORD``,
    and the contents of the files their ``*_FILE`` variants name, longest first."""
    env = os.environ if environ is None else environ
    values: set[str] = set()
    for name, value in env.items():
        upper = name.upper()
        if upper.endswith(SECRET_ENV_SUFFIXES):
            values.add(value.strip())
        elif upper.endswith(SECRET_FILE_SUFFIX) and upper.removesuffix(SECRET_FILE_SUFFIX).endswith(SECRET_ENV_SUFFIXES):
            values.add(_read_secret_file(value))
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""  # the worker reports an unreadable secret file where it reads the secret


class Redactor:
    """Replaces known secret values and secret-looking strings in a text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = tuple(values)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        if may_match_a_pattern(text):
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        return text


def may_match_a_pattern(text: str) -> bool:
    """False when no secret-looking pattern can match ``text`` (it holds none of their words)."""
    folded = text.casefold()
    return any(word in folded for word in PATTERN_WORDS) or _starts_a_word(text, KEY_PREFIX)


def _starts_a_word(text: str, prefix: str) -> bool:
    """``prefix`` somewhere in ``text`` after a non-word character or at its start (``\\b``:
    "task-1" holds "sk-", but not at a word's start)."""
    at = text.find(prefix)
    while at != -1:
        if at == 0 or not (text[at - 1].isalnum() or text[at - 1] == "_"):
            return True
        at = text.find(prefix, at + 1)
    return False
