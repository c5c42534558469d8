"""Compare the topology with a cluster (``plan``) and create what is missing (``apply``).

Per topic the plan says CREATE (missing), OK, or CONFLICT: fewer partitions than declared,
more on a per-session topic (co-partitioning breaks), or another cleanup.policy. Nothing
is ever changed on an existing topic, and ``apply`` creates nothing while any conflict
stands. Run it with ``python -m agentstream.topology_admin plan|apply``.

What the embedded Tansu broker does (measured), and how this module copes:
- A Metadata request naming a topic auto-creates it with 4 partitions, so topics are only
  ever looked up in the full topic list.
- DescribeConfigs answers, but only with the configs given at creation (tagged as
  defaults); a topic created without cleanup.policy reports none. A policy the broker
  does not report is shown as "unknown" and not checked, never guessed.
- ``validate_only`` creation creates the topic, so it is not used; replication factors
  and config values are accepted unchecked; AlterConfigs and CreatePartitions fail.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from agentstream.broker import BOOTSTRAP_ENV
from agentstream.clients import admin_config
from agentstream.errors import AgentStreamError, BrokerUnavailableError, ConfigurationError
from agentstream.topology import TopicSpec, Topology, load_topology

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class Action(StrEnum):
    CREATE = "CREATE"
    OK = "OK"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True)
class TopicPlan:
    spec: TopicSpec
    action: Action
    reason: str
    partitions: int | None = None  # on the cluster; None when the topic is missing
    policy: str | None = None  # cleanup.policy on the cluster, or UNKNOWN when not reported
    fix: str = ""


@dataclass(frozen=True)
class TopologyPlan:
    """The verdict per topic. After ``apply``, the CREATE entries are the topics it created."""

    topics: tuple[TopicPlan, ...]

    def _of(self, action: Action) -> list[TopicPlan]:
        return [t for t in self.topics if t.action is action]

    @property
    def to_create(self) -> list[TopicPlan]:
        return self._of(Action.CREATE)

    @property
    def ok(self) -> list[TopicPlan]:
        return self._of(Action.OK)

    @property
    def conflicts(self) -> list[TopicPlan]:
        return self._of(Action.CONFLICT)


class TopologyConflictError(ConfigurationError):
    """Existing topics contradict the topology; nothing was created."""

    def __init__(self, plan: TopologyPlan) -> None:
        self.plan = plan
        count = len(plan.conflicts)
        lines = [f"Refusing to apply the topology: {count} topic(s) conflict with the cluster, so nothing was created."]
        lines += [f"  {t.spec.name}: {t.reason}. Fix: {t.fix}" for t in plan.conflicts]
        super().__init__("\n".join(lines))


def plan(admin: AdminClient, topology: Topology, timeout: float = 30.0) -> TopologyPlan:
    return plan_topics(admin, topology.all_topics(), timeout)


def apply(admin: AdminClient, topology: Topology, timeout: float = 30.0) -> TopologyPlan:
    return apply_topics(admin, topology.all_topics(), timeout)


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing ``specs`` (e.g. table changelogs at start-up); the names created."""
    result = apply_topics(AdminClient(admin_config(bootstrap)), specs, timeout)
    return [t.spec.name for t in result.to_create]


def plan_topics(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0) -> TopologyPlan:
    existing = _partition_counts(admin, timeout)
    policies = _cleanup_policies(admin, [s.name for s in specs if s.name in existing], timeout)
    return TopologyPlan(tuple(_compare(s, existing.get(s.name), policies.get(s.name, UNKNOWN)) for s in specs))


def apply_topics(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0) -> TopologyPlan:
    current = plan_topics(admin, specs, timeout)
    if current.conflicts:
        raise TopologyConflictError(current)
    missing = [t.spec for t in current.to_create]
    if not missing:
        return current
    new = [NewTopic(s.name, s.partitions, s.replication, config=dict(s.config)) for s in missing]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    raced: list[str] = []
    failed: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)  # another client created it between our plan and create
            else:
                failed[name] = f"{error.name()}: {error.str()}"
    if failed:
        raise ConfigurationError(
            f"The broker refused to create {failed}; any other missing topics were created. Fix the cause "
            "(e.g. a replication_factor above the broker count) and apply again: apply skips what exists."
        )
    _wait_visible(admin, {s.name: s.partitions for s in missing if s.name not in raced}, timeout)
    return _recheck_raced(admin, current, raced, timeout)


def _recheck_raced(admin: AdminClient, current: TopologyPlan, raced: list[str], timeout: float) -> TopologyPlan:
    """Whoever won the race may have made the topic differently: check it like any other."""
    if not raced:
        return current
    again = {
        t.spec.name: t
        for t in plan_topics(admin, [t.spec for t in current.topics if t.spec.name in raced], timeout).topics
    }
    if any(t.action is Action.CONFLICT for t in again.values()):
        raise TopologyConflictError(TopologyPlan(tuple(again.values())))
    merged = [
        replace(again[t.spec.name], reason=f"created concurrently by another client; {again[t.spec.name].reason}")
        if t.spec.name in again
        else t
        for t in current.topics
    ]
    return TopologyPlan(tuple(merged))


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    # Never name topics here: on Tansu a Metadata request for a topic creates it.
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"Could not list the cluster's topics: {exc.args[0]}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def _cleanup_policies(admin: AdminClient, names: list[str], timeout: float) -> dict[str, str]:
    """cleanup.policy per topic, for those whose broker reports it."""
    if not names:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=timeout)
    policies: dict[str, str] = {}
    for resource, future in futures.items():
        try:
            entry = future.result().get("cleanup.policy")
        except KafkaException as exc:  # e.g. DescribeConfigs unsupported or not authorised
            log.warning("cannot read configs of %s (%s); its cleanup.policy is unknown", resource.name, exc.args[0])
            continue
        # Not filtered on is_default: Tansu tags the configs set at creation as defaults.
        if entry is not None and entry.value:
            policies[resource.name] = entry.value
    return policies


def _compare(spec: TopicSpec, partitions: int | None, policy: str) -> TopicPlan:
    if partitions is None:
        return TopicPlan(spec, Action.CREATE, "missing")
    conflicts: list[tuple[str, str]] = []
    notes: list[str] = []
    if partitions < spec.partitions:
        conflicts.append(
            (
                f"has {partitions} partitions, fewer than the {spec.partitions} declared",
                _partition_fix(spec, partitions),
            )
        )
    elif partitions > spec.partitions and spec.per_session:
        conflicts.append(
            (
                f"has {partitions} partitions, more than the {spec.partitions} declared, "
                "which breaks co-partitioning by session",
                _partition_fix(spec, partitions),
            )
        )
    elif partitions > spec.partitions:
        notes.append(f"has {partitions} partitions, more than declared (fine: not co-partitioned)")
    if policy == UNKNOWN:
        notes.append("cleanup.policy not reported by the broker, not checked")
    elif set(policy.split(",")) != set(spec.cleanup_policy.split(",")):
        conflicts.append(
            (
                f"cleanup.policy is {policy}, not the {spec.cleanup_policy} declared",
                f"set it with kafka-configs --alter --entity-type topics --entity-name {spec.name} "
                f"--add-config cleanup.policy=[{spec.cleanup_policy}], or delete the topic and apply again",
            )
        )
    if conflicts:
        return TopicPlan(
            spec,
            Action.CONFLICT,
            "; ".join(r for r, _ in conflicts),
            partitions,
            policy,
            "; ".join(f for _, f in conflicts),
        )
    return TopicPlan(spec, Action.OK, "; ".join(notes) or "matches", partitions, policy)


def _partition_fix(spec: TopicSpec, actual: int) -> str:
    if spec.per_session:
        # Adding partitions to a keyed topic moves sessions to other partitions, so the
        # only safe ways out are recreating the topic or declaring the count it has.
        return (
            f"delete {spec.name} and apply again (its records are lost), or set partitions to {actual} "
            "for every per-session topic in topology.yaml"
        )
    return (
        f"add partitions with kafka-topics --alter --topic {spec.name} --partitions {spec.partitions}, "
        f"or declare {actual}"
    )


def _wait_visible(admin: AdminClient, expected: dict[str, int], timeout: float) -> None:
    """Return once metadata shows every created topic, so a consumer started next finds it."""
    deadline = time.monotonic() + timeout
    while True:
        counts = _partition_counts(admin, timeout)
        late = [name for name, n in expected.items() if counts.get(name) != n]
        if not late:
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"Topics {late} were created but do not show in metadata after {timeout:.0f} s."
            )
        time.sleep(0.1)


def format_plan(plan: TopologyPlan, *, applied: bool = False) -> str:
    """A table: action, topic, partitions, policy, reason; then a fix per conflict.

    ``applied``: the plan came from ``apply``, so its CREATE entries were created.
    """
    rows = [("ACTION", "TOPIC", "PARTITIONS", "POLICY", "REASON")]
    for t in plan.topics:
        parts = (
            str(t.spec.partitions)
            if t.partitions in (None, t.spec.partitions)
            else f"{t.spec.partitions} (cluster {t.partitions})"
        )
        policy = (
            t.spec.cleanup_policy
            if t.policy in (None, t.spec.cleanup_policy)
            else f"{t.spec.cleanup_policy} (cluster {t.policy})"
        )
        rows.append((t.action.value, t.spec.name, parts, policy, t.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]).rstrip() for row in rows
    ]
    done = "created" if applied else "to create"
    counts = f"{len(plan.to_create)} {done}, {len(plan.ok)} ok, {len(plan.conflicts)} in conflict"
    lines.append(f"{len(plan.topics)} topics: {counts}")
    lines += [f"fix {t.spec.name}: {t.fix}" for t in plan.conflicts]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentstream.topology_admin", description="Plan or apply the topology on a cluster."
    )
    parser.add_argument("command", choices=["plan", "apply"])
    parser.add_argument("--bootstrap", default=os.environ.get(BOOTSTRAP_ENV), help=f"default: ${BOOTSTRAP_ENV}")
    parser.add_argument("--topology", type=Path, help="default: $AGENTSTREAM_TOPOLOGY or topology/topology.yaml")
    parser.add_argument("--prefix", help="replace the topology's prefix")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error(f"give --bootstrap or set {BOOTSTRAP_ENV}")
    try:
        topology = load_topology(args.topology, prefix=args.prefix)
        admin = AdminClient(admin_config(args.bootstrap))
        result = plan(admin, topology) if args.command == "plan" else apply(admin, topology)
    except TopologyConflictError as exc:
        print(format_plan(exc.plan), file=sys.stderr)
        print(exc, file=sys.stderr)
        return 1
    except AgentStreamError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(format_plan(result, applied=args.command == "apply"))
    return 1 if result.conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
