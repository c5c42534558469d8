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
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text
