"""Control records on the compacted ``rollout`` topic: a canary's weight, changed without
a restart (``agentstream rollout set-weight``, or the watcher's rollback).

Keyed by the agent type, so compaction keeps each type's latest weight. Every router
reads the topic in full with a group-less reader (``WeightBoard``): a weight is a
broadcast that each replica must apply, where a consumer group would give each record
to one replica only. Until a type has a record, the topology's ``candidate.weight`` holds.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Message, Producer

from agentstream import metrics
from agentstream.blocking_send import ACK_TIMEOUT_S, Delivery, acknowledged, producer_settings
from agentstream.clients import producer_config
from agentstream.errors import ConfigurationError
from agentstream.runtime.errors import ProcessorError
from agentstream.events import ROLLOUT_CONTROL, now_ms
from agentstream.rollout.config import CANARY
from agentstream.rollout.rules import RuleCheck, in_words
from agentstream.rollout.window import TopicFollower
from agentstream.serde import SchemaSet, SerdeError
from agentstream.topology import Topology

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 30.0  # a router reads the few control records before it routes
_RETRY_S = 5.0  # after a failed read of the control topic


def canary_types(topology: Topology) -> list[str]:
    """The specialist types with a canary candidate."""
    return [t for t in topology.specialist_types if (c := topology.candidate_of(t)) is not None and c.mode == CANARY]


def control_record(agent_type: str, weight: float, reason: str, set_by: str, version: str | None = None,
                   previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new weight for ``agent_type``; the last rollback of ``previous`` (the type's
    latest record) is carried forward, since compaction keeps only the newest record."""
    if not 0 <= weight <= 1:
        raise ConfigurationError(f"weight {weight!r} is not a share of sessions; give a number from 0 to 1 (0.2: 20 %).")
    carried = {key: (previous or {}).get(key) for key in ("last_rollback_at", "last_rollback")}
    return {"agent_type": agent_type, "weight": float(weight), "reason": reason, "set_by": set_by,
            "candidate_version": version, "at": now_ms(), **carried}


def rollback_record(agent_type: str, set_by: str, version: str | None, broken: Sequence[RuleCheck], tasks: int) -> dict[str, Any]:
    """Weight 0 for ``agent_type``, with the rules ``broken`` and their figures, in words
    (``reason``) and as data (``last_rollback``), for the report and any other reader."""
    record = control_record(agent_type, 0.0, f"rolled back: {in_words(broken, tasks)}", set_by, version)
    breaches = [{"rule": c.rule, "value": c.value, "limit": c.limit, "text": c.text} for c in broken]
    return {**record, "last_rollback_at": record["at"],
            "last_rollback": {"candidate_version": version, "tasks": tasks, "breaches": breaches}}


def check_canary(topology: Topology, agent_type: str) -> None:
    """Refuse a weight for a type without a canary, naming the ones with one."""
    if agent_type not in canary_types(topology):
        raise ConfigurationError(
            f"{agent_type!r} has no canary candidate in the topology; types with one: {canary_types(topology) or 'none'} "
            "(declare `candidate: {mode: canary, ...}` under the specialist)."
        )


def send_control(bootstrap: str, topology: Topology, schemas: SchemaSet, record: Mapping[str, Any]) -> None:
    """Produce ``record`` and wait until the broker has it."""
    producer = Producer(producer_config(bootstrap, producer_settings()))
    delivery = Delivery()
    producer.produce(topology.topic("rollout"), schemas.encode(ROLLOUT_CONTROL, record), record["agent_type"].encode(),
                     on_delivery=delivery.report)
    acknowledged(producer, [delivery], ACK_TIMEOUT_S, f"The control record for {record['agent_type']}")


def read_controls(bootstrap: str, topology: Topology, schemas: SchemaSet) -> dict[str, dict[str, Any]]:
    """The latest control record per agent type (read in full)."""
    follower = TopicFollower(bootstrap, [topology.topic("rollout")])
    try:
        return latest_controls(follower.catch_up(CATCH_UP_TIMEOUT_S), schemas, {})
    finally:
        follower.close()


def latest_controls(messages: list[Message], schemas: SchemaSet, into: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for msg in messages:
        value = msg.value()
        if value is None:
            continue
        try:
            record = schemas.decode_as(ROLLOUT_CONTROL, value)
        except SerdeError as exc:
            log.warning("%s[%d]@%d: not a RolloutControl, ignored: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            continue
        into[record["agent_type"]] = record
    return into


class WeightBoard:
    """The canary weights a router applies: the topology's, then each control record as it
    comes (a thread of its own follows the topic, so no poll of the router waits on it)."""

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet) -> None:
        self._defaults = {t: c.weight for t in canary_types(topology) if (c := topology.candidate_of(t)) is not None}
        self._schemas = schemas
        self._controls: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._follower = TopicFollower(bootstrap, [topology.topic("rollout")])
        latest_controls(self._follower.catch_up(CATCH_UP_TIMEOUT_S), schemas, self._controls)
        for agent_type in self._defaults:
            metrics.canary_weight(agent_type, self.weight(agent_type))
        self._thread = threading.Thread(target=self._follow, name="rollout-weights", daemon=True)

    def start(self) -> WeightBoard:
        self._thread.start()
        # The router has no stop hook for helpers; at exit the reader leaves its fetches cleanly.
        atexit.register(self.stop)
        return self

    def weight(self, agent_type: str) -> float:
        control = self._controls.get(agent_type)
        return control["weight"] if control is not None else self._defaults.get(agent_type, 0.0)

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    messages = self._follower.poll(0.5)
                except ProcessorError as exc:  # the weights stand meanwhile; the reader goes on
                    log.error("rollout: reading the weights failed, trying again in %g s: %s", _RETRY_S, exc)
                    self._stop.wait(_RETRY_S)
                    continue
                for agent_type, record in latest_controls(messages, self._schemas, {}).items():
                    self._controls[agent_type] = record  # one dict item: atomic for the router's reads
                    metrics.canary_weight(agent_type, record["weight"])
                    log.warning("rollout: %s canary weight is now %g (%s, by %s)", agent_type, record["weight"],
                                record["reason"] or "no reason given", record["set_by"] or "?")
        finally:
            self._follower.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
