"""Typed settings of a worker process, from arguments and the environment.

Every environment variable agentstream reads is named here, in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentstream.broker import BOOTSTRAP_ENV

STATE_DIR_ENV = "AGENTSTREAM_STATE_DIR"
TOPOLOGY_ENV = "AGENTSTREAM_TOPOLOGY"
PREFIX_ENV = "AGENTSTREAM_PREFIX"
LOG_LEVEL_ENV = "AGENTSTREAM_LOG_LEVEL"
MAX_INFLIGHT_ENV = "AGENTSTREAM_MAX_INFLIGHT"

DEFAULT_STATE_DIR = Path(".state")


class WorkerSettings(BaseModel):
    """What every worker needs; unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str
    state_dir: Path = DEFAULT_STATE_DIR
    topology_path: Path | None = None
    prefix: str | None = None
    commit_interval_s: float = Field(default=1.0, gt=0)
    max_input_bytes: int = Field(default=32_768, gt=0)
    max_inflight: int = Field(default=256, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get(BOOTSTRAP_ENV):
            values["bootstrap"] = env[BOOTSTRAP_ENV]
        if env.get(STATE_DIR_ENV):
            values["state_dir"] = Path(env[STATE_DIR_ENV])
        if env.get(TOPOLOGY_ENV):
            values["topology_path"] = Path(env[TOPOLOGY_ENV])
        if env.get(PREFIX_ENV):
            values["prefix"] = env[PREFIX_ENV]
        if env.get(MAX_INFLIGHT_ENV):
            values["max_inflight"] = env[MAX_INFLIGHT_ENV]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
