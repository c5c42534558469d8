"""API keys: what the tenants file stores (a hash, never the key) and how a key is checked.

SHA-256, not scrypt or bcrypt: an API key is a random secret of at least MIN_KEY_CHARS
characters (``agentstream tenants hash-key`` refuses shorter ones), so guessing it from
its hash is infeasible however fast the hash is; a slow password hash would only add
tens of milliseconds of CPU to every gateway request (and hand an attacker a cheap way
to load it). No salt for the same reason: salts defend low-entropy passwords against
precomputed tables. Checking compares hashes with hmac.compare_digest, so the time taken
says nothing about how much of a stored hash a guess matched.
"""

from __future__ import annotations

import hashlib
import hmac

from agentstream.errors import ConfigurationError

SCHEME = "sha256:"
MIN_KEY_CHARS = 32  # e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'` (43 characters)
_HEX_CHARS = 64


def hash_api_key(key: str) -> str:
    """The value the tenants file stores for ``key``: ``sha256:<64 hex digits>``."""
    return SCHEME + hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_strength(key: str) -> None:
    """Refuse a key too short to be a random secret (see the module's docstring)."""
    if len(key) < MIN_KEY_CHARS:
        raise ConfigurationError(
            f"An API key must have at least {MIN_KEY_CHARS} characters, this one has {len(key)}; generate one "
            "with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )


def is_key_hash(value: str) -> bool:
    digest = value.removeprefix(SCHEME)
    return value.startswith(SCHEME) and len(digest) == _HEX_CHARS and all(c in "0123456789abcdef" for c in digest)


def matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_api_key(key).encode(), stored_hash.encode())
