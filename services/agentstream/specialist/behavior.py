"""The behaviour version: a short fingerprint of everything that shapes an agent's answers.

Stamped on every result (``behavior_versions`` in ``TaskResult``) so a change of prompt,
tools, model or code is visible downstream and results can be grouped by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.specialist.loop import default_system_prompt

# 12 hex digits (48 bits): collisions between the handful of versions of one agent type
# are not a concern, and short ids read well in logs and dashboards.
_DIGITS = 12


def behavior_version(
    agent_type: str,
    system_prompt: str | None,
    tool_schemas: Sequence[Mapping[str, Any]],
    model_id: str,
    package_version: str,
) -> str:
    """Hex digest of the canonical JSON of the inputs.

    ``system_prompt=None`` means the default prompt, as in ``run_agent``, so both spell
    the same behaviour the same way. Tool order does not matter; schema contents do.
    """
    canonical = json.dumps(
        {
            "agent_type": agent_type,
            "system_prompt": system_prompt or default_system_prompt(agent_type),
            "tools": sorted((dict(schema) for schema in tool_schemas), key=lambda schema: str(schema.get("name"))),
            "model_id": model_id,
            "package_version": package_version,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_DIGITS]
