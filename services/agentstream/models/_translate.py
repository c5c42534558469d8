"""What the providers share at their boundary: SDK loading and HTTP status → our errors.

Both official SDKs raise an ``APIStatusError`` carrying the HTTP status, the response
headers and the error body; deciding on those (not on SDK class names, which differ
between the two and between versions) keeps one mapping for both providers.
"""

from __future__ import annotations

import email.utils
import importlib
import math
import re
import time
from collections.abc import Mapping
from types import ModuleType

from agentstream.models.errors import (
    BadRequestError,
    ContextTooLongError,
    ModelAuthError,
    ModelError,
    ModelServerError,
    ModelTimeoutError,
    PermanentModelError,
    ProviderNotInstalledError,
    RateLimitedError,
)

# How OpenAI, vLLM, Ollama, LiteLLM and Anthropic word "the prompt does not fit".
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|input is too long|too many tokens",
    re.IGNORECASE,
)
# OpenAI answers 429 for an exhausted billing quota too; waiting does not refill it.
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def load_sdk(package: str, provider: str) -> ModuleType:
    """Import a provider SDK on first use, so ``agentstream.models`` imports without it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ProviderNotInstalledError(provider, package) from exc


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_error(
    status: int, message: str, *, code: str | None, headers: Mapping[str, str] | None, model_id: str
) -> ModelError:
    """Our error for an HTTP error status; transient ones carry the server's retry hint."""
    text = f"{model_id}: HTTP {status}: {message}"
    retry_after = parse_retry_after(headers)
    if status == 429:
        if code in _QUOTA_CODES:
            return PermanentModelError(text, model_id=model_id)
        return RateLimitedError(text, model_id=model_id, retry_after=retry_after)
    if status in (401, 403):
        return ModelAuthError(text, model_id=model_id)
    if status == 408:
        return ModelTimeoutError(text, model_id=model_id, retry_after=retry_after)
    # 409 is a lock conflict on the provider's side: both SDKs retry it by default.
    if status == 409 or status >= 500:
        return ModelServerError(text, model_id=model_id, retry_after=retry_after)
    if status == 413 or code in _CONTEXT_CODES or _CONTEXT_WORDS.search(message):
        return ContextTooLongError(text, model_id=model_id)
    return BadRequestError(text, model_id=model_id)


def error_code(body: object) -> str | None:
    """The machine-readable code of an error body (``{"error": {"code"|"type": ...}}`` or flat)."""
    return _error_field(body, "code") or _error_field(body, "type")


def error_message(body: object, fallback: str) -> str:
    """The server's own sentence, without the SDK's "Error code: ..." wrapping."""
    return _error_field(body, "message") or fallback


def _error_field(body: object, key: str) -> str | None:
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    value = inner.get(key) if isinstance(inner, Mapping) else None
    return value if isinstance(value, str) and value else None
