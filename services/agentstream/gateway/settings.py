"""The gateway's settings: where it listens, which tenants file it trusts, its limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstream.errors import ConfigurationError
from agentstream.gateway.view_rules import RESULT_GRACE_S
from agentstream.settings import DEFAULT_GATEWAY_PORT, GATEWAY_HOST_ENV, GATEWAY_PORT_ENV


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=0, le=65535)
    host: str = "0.0.0.0"
    tenants_path: Path
    # Where the view's RocksDB goes: a directory of its own under it per process.
    state_dir: Path
    max_body_bytes: int = Field(default=256 * 1024, gt=0)  # a bigger request is a 413 before it is parsed
    sse_keepalive_s: float = Field(default=15.0, gt=0)  # a comment line this often keeps proxies from closing
    sse_result_grace_s: float = Field(default=RESULT_GRACE_S, ge=0)  # view_rules.RESULT_GRACE_S says why

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> GatewaySettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get(GATEWAY_PORT_ENV, "").strip():
            values["port"] = env[GATEWAY_PORT_ENV].strip()
        if env.get(GATEWAY_HOST_ENV, "").strip():
            values["host"] = env[GATEWAY_HOST_ENV].strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "?"
            raise ConfigurationError(f"Gateway setting {field}={error.get('input')!r} is not valid: {error['msg']} "
                                     f"(port: {GATEWAY_PORT_ENV} or --port; host: {GATEWAY_HOST_ENV}).") from None
