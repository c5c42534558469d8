"""What ``agentstream tenants`` does: hash a key read from stdin, check a tenants file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from agentstream.errors import ConfigurationError
from agentstream.settings import TENANTS_ENV
from agentstream.tenancy.config import read_tenants_file
from agentstream.tenancy.keys import check_strength, hash_api_key
from agentstream.tenancy.tenants import Tenants


def hash_key_from(stream: TextIO) -> str:
    """The hash of the key on ``stream`` (stdin: the key never appears in argv, so not in
    `ps` or the shell's history); one trailing newline is not part of the key."""
    key = stream.read().removesuffix("\n").removesuffix("\r")
    if not key:
        raise ConfigurationError("No API key on stdin; e.g. `printf %s \"$KEY\" | agentstream tenants hash-key`.")
    check_strength(key)
    return hash_api_key(key)


def check_file(path: Path | None) -> str:
    """A summary of the tenants file (every tenant, its limits and key names) once it loads whole."""
    source = path or _from_env()
    file = read_tenants_file(source)
    Tenants.from_file(file, source.parent)  # the JWT keys too: a missing secret or PEM file is reported here
    lines = [f"{source}: {len(file.tenants)} tenants" + (f", JWT from {file.jwt.issuer}" if file.jwt else "")]
    for tenant_id, section in file.tenants.items():
        limits = section.limits.model_dump()
        shown = ", ".join(f"{name}={value}" for name, value in limits.items() if value is not None) or "no limits"
        keys = ", ".join(f"{key.name} ({'+'.join(key.roles)})" for key in section.api_keys) or "no API keys"
        lines.append(f"  {tenant_id}: {shown}; keys: {keys}")
    return "\n".join(lines)


def _from_env() -> Path:
    named = os.environ.get(TENANTS_ENV, "").strip()
    if not named:
        raise ConfigurationError(f"No tenants file: pass --tenants FILE or set {TENANTS_ENV}.")
    return Path(named)
