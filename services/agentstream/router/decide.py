"""The routing decision by rules: which specialist agent types a task goes to.

Pure and deterministic (the topology's keyword rules, no model call) so the router can
run it inside its commit path: a replayed task always gets the same route. The rules
also stand in for the LLM classifier whenever that fails or is unsure (classifier.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.errors import ConfigurationError, UnknownAgentTypeError
from agentstream.specialist.checkpoint import REVISION_MARK
from agentstream.topology import RoutingSettings

_REQUIRED_IDS = ("task_id", "session_id", "tenant_id")


@dataclass(frozen=True)
class Rules:
    """Compiled routing rules: one expression per agent type, and the default type."""

    patterns: Mapping[str, re.Pattern[str]]
    default: str

    @classmethod
    def from_settings(cls, routing: RoutingSettings) -> Rules:
        return cls(routing.compiled(), routing.default)

    def classify(self, text: str) -> list[str]:
        """Every agent type whose rules match ``text``, sorted; empty when none match."""
        return sorted(agent_type for agent_type, pattern in self.patterns.items() if pattern.search(text))

    def route(self, text: str, requested_agent: str | None, known_types: Sequence[str]) -> list[str]:
        """The agent types a task goes to: sorted, without duplicates, never empty.

        ``requested_agent`` skips classification (the client knows better) but must name a
        type the deployment runs. Classified types the deployment does not run are dropped;
        when nothing is left the task goes to the default type.
        """
        known = sorted(set(known_types))
        if not known:
            raise ConfigurationError("Cannot route a task: no agent types are configured.")
        if requested_agent is not None:
            return [requested(requested_agent, known)]
        matched = [agent_type for agent_type in self.classify(text) if agent_type in known]
        if matched:
            return matched
        if self.default not in known:
            raise ConfigurationError(
                f"Default agent type {self.default!r} is not configured; configured agent types are {known}: "
                "set routing.default of the router in the topology to one of them."
            )
        return [self.default]


def requested(agent_type: str, known: Sequence[str]) -> str:
    """A client's ``requested_agent``, if the deployment runs it."""
    if agent_type not in known:
        raise UnknownAgentTypeError(f"Unknown agent type {agent_type!r}; valid agent types are {sorted(known)}.")
    return agent_type


# Ids are keys, log fields and table keys, and a task travels with its metadata through
# every stage and waits in its session's record (router/session_gate.py): both are kept
# small so no record derived from a task can outgrow a Kafka message.
MAX_ID_BYTES = 256
MAX_METADATA_BYTES = 16_384
# C0 controls and DEL; a search, not a test per character (the router checks ~10 ids a task).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def is_usable_id(value: object) -> bool:
    """An id the router may key a table with: printable text of at most MAX_ID_BYTES."""
    return (isinstance(value, str) and bool(value.strip()) and len(value.encode("utf-8", "replace")) <= MAX_ID_BYTES
            and _CONTROL_CHARACTER.search(value) is None)


def unusable_id_key(partition: int, offset: int | None, timestamp_ms: int) -> str | None:
    """The dedupe key of a task whose id is not usable (validate_task rejects it): its record
    on the tasks topic, by place and produce time (a topic deleted and made again numbers
    its records from 0 again, and a new task at an old offset must not pass for a repeat);
    None for a copy read elsewhere (a retry tier). It starts with a control character, so
    no usable id is ever the same key (not NUL: tables reserve it)."""
    return None if offset is None else f"\x01tasks@{partition}:{offset}:{timestamp_ms}"


def validate_task(record: Mapping[str, Any], max_input_bytes: int) -> str | None:
    """Why a submitted task must be rejected, or None when it may be routed.

    Checked before routing so a bad task becomes a REJECTED result at once instead of
    costing model calls; the size is measured in UTF-8 bytes because that is what the
    Kafka message limit counts.
    """
    for key in _REQUIRED_IDS:
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"missing or empty {key}"
    text = record.get("input")
    if not isinstance(text, str):
        return "input must be a string"
    if not text.strip():
        return "empty input"
    # Avro-decoded text never holds a lone surrogate, but a str from a Python or JSON
    # caller can, and UTF-8 (so the result's encode) cannot carry it.
    for key in (*_REQUIRED_IDS, "input"):
        try:
            size = len(record[key].encode("utf-8"))
        except UnicodeEncodeError as exc:
            return (f"{key} holds a lone surrogate U+{ord(record[key][exc.start]):04X} at index {exc.start}, "
                    "which UTF-8 cannot encode; send well-formed Unicode text")
        if key != "input" and size > MAX_ID_BYTES:
            return f"{key} is {size} bytes, over the limit of {MAX_ID_BYTES} bytes; use a shorter id (e.g. a UUID)"
        if key != "input" and not is_usable_id(record[key]):
            return f"{key} holds a control character; ids are printable text (e.g. a UUID)"
        if key == "task_id" and REVISION_MARK in record[key]:
            # A specialist keys the runs of a revised task "<task_id>#rev<n>" (specialist/checkpoint.py).
            return f"task_id {record[key]!r} contains {REVISION_MARK!r}, which marks a revision's run; use another id (e.g. a UUID)"
    if size > max_input_bytes:  # the size of input, the last one encoded
        return f"input is {size} bytes, over the limit of {max_input_bytes} bytes"
    problem = _metadata_problem(record.get("metadata"))
    if problem is not None:
        return problem
    # Checked here, not first in the specialist's loop: there a negative or NaN budget
    # fails the task as a crash, after routing, with a stack trace in the dead letter.
    budget = record.get("budget_usd")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0):
        return f"budget_usd must be a number >= 0, or null for the agent's default; got {budget!r}"
    return None


def _metadata_problem(metadata: object) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        return f"metadata must be a map of strings to strings, got {type(metadata).__name__}"
    size = sum(len(str(k).encode("utf-8", "replace")) + len(str(v).encode("utf-8", "replace")) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes, over the limit of {MAX_METADATA_BYTES} bytes; keep large data out of the task"
    return None
