"""An exact-match response cache in RocksDB (rocksdict), with a time to live.

The key is the sha256 of canonical JSON of model id, call parameters, messages and tool
schemas, so only a byte-for-byte identical request hits: no semantic guessing, no risk
of answering a different question. It is worth having because agent traffic repeats
(retried tasks, replays from the DLQ, the same FAQ from many users) and a hit costs
nothing. Responses of non-deterministic settings (temperature > 0) must not be cached:
a cache would freeze one sample of a distribution the caller asked to sample from;
``cache_allowed`` decides that.

The store is a local RocksDB directory per worker process (RocksDB locks it): entries are
only ever an optimisation, so they need no changelog; losing the directory costs calls,
never correctness. Expiry uses wall-clock time because entries outlive the process.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict

from agentstream.errors import ConfigurationError
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage

# Bump when the key or value layout changes: old entries then simply miss.
_FORMAT = "v1"


def cache_allowed(temperature: float | None, deterministic: bool = True) -> bool:
    """Whether responses of these settings may be cached.

    ``temperature`` None means the caller did not set one; ``deterministic=False`` is the
    settings' way to say "never cache" for other sampling knobs (top_p, seeds, tools
    with side effects in the prompt...).
    """
    return deterministic and (temperature is None or temperature <= 0)


def cache_key(
    model_id: str,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
) -> bytes:
    """sha256 over canonical JSON (sorted keys, no whitespace) of the whole request."""
    document = {
        "format": _FORMAT,
        "model": model_id,
        "params": dict(params or {}),
        "messages": [asdict(message) for message in messages],
        "tools": list(tools),
    }
    # The standard library, not jsoncodec: the key of entries a worker before it cached, and
    # ``default=str`` spells dataclasses, datetimes and enums otherwise than orjson does.
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def encode_response(response: ModelResponse, expires_at: float) -> bytes:
    return json.dumps({"expires_at": expires_at, "response": asdict(response)}, separators=(",", ":")).encode("utf-8")


def decode_response(raw: bytes) -> tuple[ModelResponse, float]:
    document = json.loads(raw)
    body = document["response"]
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in body["tool_calls"])
    usage = Usage(**body["usage"])
    return ModelResponse(body["text"], calls, usage, body["model"]), float(document["expires_at"])


class ResponseCache:
    """Model responses by request hash, each valid for ``ttl_s`` seconds."""

    def __init__(self, path: Path, *, ttl_s: float = 3600.0, now: Callable[[], float] = time.time) -> None:
        if ttl_s <= 0:
            raise ConfigurationError(f"The response cache ttl_s must be positive, got {ttl_s}.")
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = path
        self.ttl_s = ttl_s
        self._now = now
        self._db: Rdict | None = Rdict(str(path), options, access_type=AccessType.read_write())
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> ModelResponse | None:
        """The cached response, or None when absent or expired (expired ones are dropped)."""
        db = self._open()
        raw = db.get(key)
        if raw is not None:
            response, expires_at = decode_response(bytes(raw))
            if expires_at > self._now():
                self.hits += 1
                return response
            db.delete(key)
        self.misses += 1
        return None

    def put(self, key: bytes, response: ModelResponse) -> None:
        self._open()[key] = encode_response(response, self._now() + self.ttl_s)

    def purge_expired(self) -> int:
        """Delete every expired entry (housekeeping); returns how many went."""
        db = self._open()
        now = self._now()
        expired = [key for key, raw in db.items() if isinstance(raw, bytes) and decode_response(raw)[1] <= now]
        for key in expired:
            db.delete(key)
        return len(expired)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> Rdict:
        if self._db is None:
            raise ConfigurationError(f"Cannot use the response cache at {self.path}, as it has been closed.")
        return self._db
