"""The behaviour version: a short fingerprint of everything that shapes an agent's answers.

Stamped on every result (``behavior_versions`` in ``TaskResult``) so a change of prompt,
tools, model settings, limits, approval policy or code is visible downstream and results
can be grouped by it. Two versions that behave differently must never share a version: a
canary whose only change is its scripted rules or its budget is still another version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from agentstream.models.config import ModelSettings
from agentstream.specialist.loop import default_system_prompt

# 12 hex digits (48 bits): collisions between the handful of versions of one agent type
# are not a concern, and short ids read well in logs and dashboards.
_DIGITS = 12
# The prompt file's path is left out: its text is hashed as the prompt, and moving the file
# changes nothing the agent does.
_NOT_BEHAVIOUR = frozenset({"system_prompt_file"})


def behaviour_settings(
    model: ModelSettings, max_steps: int, approvals: Mapping[str, BaseModel] | None = None,
) -> dict[str, Any]:
    """The settings besides prompt, tools and model ids that change what the agent does:
    the whole model section (tiers, fallbacks, scripted rules, budgets, timeouts, output
    cap, temperature, history compression), the step limit and the approval policy.
    As plain JSON values, so the fingerprint is the same in every process."""
    return {
        "model": model.model_dump(mode="json", exclude=set(_NOT_BEHAVIOUR)),
        "max_steps": max_steps,
        "approvals": {tool: policy.model_dump(mode="json") for tool, policy in sorted((approvals or {}).items())},
    }


def behavior_version(
    agent_type: str,
    system_prompt: str | None,
    tool_schemas: Sequence[Mapping[str, Any]],
    model_id: str,
    package_version: str,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Hex digest of the canonical JSON of the inputs.

    ``system_prompt=None`` means the default prompt, as in ``run_agent``, so both spell
    the same behaviour the same way. Tool order does not matter; schema contents do (the
    allowlist is the set of schemas). ``settings`` is ``behaviour_settings(...)``.
    """
    # The standard library, not jsoncodec: versions are stored in results, transcripts and
    # rollout records and compared across releases; computed once at start-up.
    canonical = json.dumps(
        {
            "agent_type": agent_type,
            "system_prompt": system_prompt or default_system_prompt(agent_type),
            "tools": sorted((dict(schema) for schema in tool_schemas), key=lambda schema: str(schema.get("name"))),
            "model_id": model_id,
            "package_version": package_version,
            "settings": dict(settings or {}),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_DIGITS]
