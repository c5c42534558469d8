"""Compare the topology with a cluster (``plan``); create what is missing and, when asked,
set configs that drifted (``apply``).

Per topic the plan says:
- CREATE: missing.
- OK: as declared (more partitions than declared is fine where nothing is co-partitioned).
- DRIFT: a declared config (retention.ms, the changelog compaction settings, ...) has
  another value on the cluster. ``apply`` reports it and leaves it, unless ``apply_config``:
  then it sets the declared values with IncrementalAlterConfigs, only the keys that differ,
  so no other config of the topic changes.
- CONFLICT: fewer partitions than declared, more on a per-session topic (co-partitioning
  breaks), or another cleanup.policy (changing it changes what the topic keeps: a topic
  that ran with ``delete`` may have lost table state already, so a person decides).
  ``apply`` creates and changes nothing while a conflict stands.
Nothing is ever deleted and partitions are never added. Run it with
``python -m agentstream.topology_admin plan|apply`` or ``agentstream topology``.

Apache Kafka (KRaft, measured on 4.1): CreateTopics answers once the controller has the
topic, but the broker's metadata shows it up to ~150 ms later, so a topic another client
has just created can be missing from the topic list. So every topic the list misses is
asked of the controller with a ``validate_only`` CreateTopics (TOPIC_ALREADY_EXISTS, and
nothing created) and waited for; ``apply`` waits until what it created or set shows, so
the next reader sees it. DescribeConfigs reports every config, defaults included: the
effective value is what is compared, whatever its source.

What the embedded Tansu broker does (measured), and how this module copes:
- A Metadata request naming a topic auto-creates it with 4 partitions, so topics are only
  ever looked up in the full topic list.
- DescribeConfigs answers only with the configs given at creation or set since (tagged as
  defaults); a declared key it does not report is shown as "not checked", never guessed.
- ``validate_only`` creation creates the topic, so it is not used (Tansu lists a created
  topic at once, so it is not needed either).
- AlterConfigs fails; IncrementalAlterConfigs answers success but only stores the values,
  unchecked (it succeeds even for a topic that does not exist), and Tansu has no
  compaction to apply them to, so ``apply_config`` is refused there.
- Replication factors and config values are accepted unchecked; CreatePartitions fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from agentstream.broker import BOOTSTRAP_ENV, is_tansu
from agentstream.clients import admin_config
from agentstream.errors import AgentStreamError, BrokerUnavailableError, ConfigurationError
from agentstream.topology import TopicSpec, Topology, load_topology

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
CLEANUP_POLICY = "cleanup.policy"
APPLY_CONFIG_FIX = "`agentstream topology apply --apply-config` sets the declared values"
TANSU_CONFIG_FIX = (
    "Tansu cannot change topic configs: delete the topic and apply again (restarting Tansu "
    "empties it), or use Apache Kafka"
)


class Action(StrEnum):
    CREATE = "CREATE"
    OK = "OK"
    DRIFT = "DRIFT"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True)
class ConfigDrift:
    """A declared config whose value on the cluster differs."""

    key: str
    declared: str
    actual: str

    def __str__(self) -> str:
        return f"{self.key} is {self.actual}, not the {self.declared} declared"


@dataclass(frozen=True)
class ConfigCheck:
    drift: tuple[ConfigDrift, ...] = ()
    unchecked: tuple[str, ...] = ()  # declared keys the broker did not report


@dataclass(frozen=True)
class TopicPlan:
    spec: TopicSpec
    action: Action
    reason: str
    partitions: int | None = None  # on the cluster; None when the topic is missing
    policy: str | None = None  # cleanup.policy on the cluster, or UNKNOWN when not reported
    fix: str = ""
    drift: tuple[ConfigDrift, ...] = ()  # every declared config that differs, cleanup.policy included
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopologyPlan:
    """The verdict per topic. After ``apply``, the CREATE entries are the topics it created,
    and the DRIFT entries those whose configs it set if ``configs_set``."""

    topics: tuple[TopicPlan, ...]
    configs_set: bool = False

    def _of(self, action: Action) -> list[TopicPlan]:
        return [t for t in self.topics if t.action is action]

    @property
    def to_create(self) -> list[TopicPlan]:
        return self._of(Action.CREATE)

    @property
    def ok(self) -> list[TopicPlan]:
        return self._of(Action.OK)

    @property
    def drifted(self) -> list[TopicPlan]:
        return self._of(Action.DRIFT)

    @property
    def conflicts(self) -> list[TopicPlan]:
        return self._of(Action.CONFLICT)


class TopologyConflictError(ConfigurationError):
    """Existing topics contradict the topology; nothing was changed (see ``created``)."""

    def __init__(self, plan: TopologyPlan, created: Sequence[str] = ()) -> None:
        self.plan = plan
        self.created = list(created)
        count = len(plan.conflicts)
        done = (
            f"after creating {len(created)} other topic(s), as another client created these meanwhile"
            if created
            else "so nothing was created or changed"
        )
        lines = [f"Refusing to apply the topology: {count} topic(s) conflict with the cluster, {done}."]
        lines += [f"  {t.spec.name}: {t.reason}. Fix: {t.fix}" for t in plan.conflicts]
        super().__init__("\n".join(lines))


def plan(admin: AdminClient, topology: Topology, timeout: float = 30.0) -> TopologyPlan:
    return plan_topics(admin, topology.all_topics(), timeout)


def apply(
    admin: AdminClient, topology: Topology, timeout: float = 30.0, *, apply_config: bool = False
) -> TopologyPlan:
    return apply_topics(admin, topology.all_topics(), timeout, apply_config=apply_config)


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing ``specs`` (e.g. table changelogs at start-up); the names created."""
    result = apply_topics(AdminClient(admin_config(bootstrap)), specs, timeout)
    return [t.spec.name for t in result.to_create]


# -- comparing -----------------------------------------------------------------------


def config_drift(declared: Mapping[str, str], reported: Mapping[str, str]) -> ConfigCheck:
    """Which ``declared`` configs differ from the ``reported`` ones, and which were not reported."""
    drift = tuple(
        ConfigDrift(key, value, reported[key])
        for key, value in declared.items()
        if key in reported and not _same_value(key, value, reported[key])
    )
    return ConfigCheck(drift, tuple(key for key in declared if key not in reported))


def _same_value(key: str, declared: str, actual: str) -> bool:
    if key == CLEANUP_POLICY:  # a list: "compact,delete" is "delete,compact"
        return _policy_set(declared) == _policy_set(actual)
    if declared == actual:
        return True
    try:  # Kafka reports a number as it parsed it: "0.30" is "0.3", "1e-3" is "0.001"
        return float(declared) == float(actual)
    except ValueError:
        return False


def _policy_set(policy: str) -> frozenset[str]:
    return frozenset(part.strip() for part in policy.split(",") if part.strip())


def compare_topic(
    spec: TopicSpec, partitions: int | None, reported: Mapping[str, str], *, alterable: bool = True
) -> TopicPlan:
    """The verdict on one topic: its partition count and the configs its broker ``reported``
    (empty when none). ``alterable``: the broker can change topic configs (not Tansu)."""
    if partitions is None:
        return TopicPlan(spec, Action.CREATE, "missing")
    check = config_drift(spec.config, reported)
    policy = reported.get(CLEANUP_POLICY, UNKNOWN)
    conflicts = _partition_conflicts(spec, partitions) + [
        (str(d), _policy_fix(spec)) for d in check.drift if d.key == CLEANUP_POLICY
    ]
    settable = [d for d in check.drift if d.key != CLEANUP_POLICY]
    notes = _partition_notes(spec, partitions)
    if check.unchecked:
        notes.append(f"{', '.join(check.unchecked)} not reported by the broker, not checked")
    reason = "; ".join(notes) or "matches"
    found = TopicPlan(spec, Action.OK, reason, partitions, policy, drift=check.drift, unchecked=check.unchecked)
    if conflicts:
        reason = "; ".join([r for r, _ in conflicts] + [str(d) for d in settable])
        return replace(found, action=Action.CONFLICT, reason=reason, fix="; ".join(f for _, f in conflicts))
    if settable:
        reason = "; ".join([str(d) for d in settable] + notes)
        fix = APPLY_CONFIG_FIX if alterable else TANSU_CONFIG_FIX
        return replace(found, action=Action.DRIFT, reason=reason, fix=fix)
    return found


def _partition_conflicts(spec: TopicSpec, partitions: int) -> list[tuple[str, str]]:
    if partitions < spec.partitions:
        reason = f"has {partitions} partitions, fewer than the {spec.partitions} declared"
        return [(reason, _partition_fix(spec, partitions))]
    if partitions > spec.partitions and spec.per_session:
        reason = (
            f"has {partitions} partitions, more than the {spec.partitions} declared, "
            "which breaks co-partitioning by session"
        )
        return [(reason, _partition_fix(spec, partitions))]
    return []


def _partition_notes(spec: TopicSpec, partitions: int) -> list[str]:
    if partitions > spec.partitions and not spec.per_session:
        return [f"has {partitions} partitions, more than declared (fine: not co-partitioned)"]
    return []


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


def _policy_fix(spec: TopicSpec) -> str:
    return (
        f"check what the topic kept, then set it with kafka-configs --alter --entity-type topics --entity-name "
        f"{spec.name} --add-config cleanup.policy=[{spec.cleanup_policy}], or delete the topic and apply again"
    )


# -- reading the cluster -------------------------------------------------------------


def plan_topics(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0) -> TopologyPlan:
    return _plan(admin, specs, timeout)[0]


def _plan(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> tuple[TopologyPlan, bool]:
    """The plan, and whether the broker is Tansu."""
    metadata = _metadata_listing_a_broker(admin, timeout)
    tansu = _is_tansu(metadata)
    counts = _partition_counts(metadata)
    if not tansu:
        unlisted = _known_to_controller(admin, [s.name for s in specs if s.name not in counts], timeout)
        counts = _wait_listed(admin, unlisted, timeout) if unlisted else counts
    configs = _describe_configs(admin, [s.name for s in specs if s.name in counts], timeout)
    verdicts = (compare_topic(s, counts.get(s.name), configs.get(s.name, {}), alterable=not tansu) for s in specs)
    return TopologyPlan(tuple(verdicts)), tansu


def _metadata(admin: AdminClient, timeout: float) -> ClusterMetadata:
    # Never name topics here: on Tansu a Metadata request for a topic creates it.
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"Could not list the cluster's topics: {exc.args[0]}") from exc


def _metadata_listing_a_broker(admin: AdminClient, timeout: float) -> ClusterMetadata:
    """The cluster's metadata once it lists a broker. A KRaft broker still starting, or
    fenced by its controller for a moment (its heartbeats late on a starved machine: seen
    in a CI run), answers with none and is listed again within seconds."""
    deadline = time.monotonic() + timeout
    while not (metadata := _metadata(admin, timeout)).brokers:
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"The cluster's metadata has listed no broker for {timeout:.0f} s: the broker is still starting, "
                "or its controller fenced it; check the broker's log and run the command again."
            )
        time.sleep(0.1)  # the interval of the poll
    return metadata


def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def _is_tansu(metadata: ClusterMetadata) -> bool:
    first = metadata.brokers[min(metadata.brokers)]  # _metadata_listing_a_broker: one at least
    try:
        return is_tansu(f"{first.host}:{first.port}")
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"Could not describe the cluster at {first.host}:{first.port}: {exc.args[0]}"
        ) from exc


def _known_to_controller(admin: AdminClient, names: list[str], timeout: float) -> list[str]:
    """Apache Kafka only: which of these topics, absent from the metadata, exist already.

    ``validate_only`` creation is checked by the controller, which knows a topic before
    the brokers' metadata does, and creates nothing. Only the name is sent (broker
    defaults for the rest), so little but existence can fail it; other errors (a name
    that collides, a create policy, no CREATE ACL) are left to ``apply``, which reports
    them when it creates the topic.
    """
    if not names:
        return []
    futures = admin.create_topics([NewTopic(n) for n in names], validate_only=True, request_timeout=timeout)
    existing: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(name)
            else:
                log.debug("validate_only creation of %s: %s", name, exc.args[0])
    return existing


def _wait_listed(admin: AdminClient, names: list[str], timeout: float) -> dict[str, int]:
    """Wait until the metadata lists ``names``; the partition counts then."""
    counts: dict[str, int] = {}

    def late() -> list[str]:
        counts.clear()
        counts.update(_partition_counts(_metadata(admin, timeout)))
        return [n for n in names if n not in counts]

    _wait_until(late, timeout, "exist (the controller says so) but are not in the broker's metadata")
    return counts


def _describe_configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """The configs each topic's broker reports, by topic; a topic it cannot describe maps to {}."""
    if not names:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=timeout)
    configs: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result()
        except KafkaException as exc:  # e.g. DescribeConfigs unsupported or not authorised
            log.warning("cannot read configs of %s (%s); they are not checked", resource.name, exc.args[0])
            continue
        # Not filtered on is_default: on Kafka a default is the value in force, and Tansu
        # tags the configs set at creation as defaults.
        configs[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
    return configs


def _wait_until(late: Callable[[], list[str]], timeout: float, problem: str) -> None:
    """Poll ``late`` (the names still pending) until it is empty, or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pending := late():
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"Topics {pending} {problem} after {timeout:.0f} s; check the broker's health "
                "(e.g. under-replicated controller, overloaded node) and run the command again."
            )
        time.sleep(0.05)


# -- changing the cluster ------------------------------------------------------------


def apply_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0, *, apply_config: bool = False
) -> TopologyPlan:
    """Create the missing topics and, with ``apply_config``, set drifted configs; refuse
    (changing nothing) while any topic conflicts."""
    current, tansu = _plan(admin, specs, timeout)
    if current.conflicts:  # first: they need fixing on any broker, and list every topic at fault
        raise TopologyConflictError(current)
    if apply_config and tansu:
        raise ConfigurationError(
            "--apply-config is not supported by this broker (Tansu): it has no AlterConfigs, and its "
            "IncrementalAlterConfigs stores values unchecked with no compaction to act on them. Nothing "
            "was created. Run without --apply-config, or against Apache Kafka; on Tansu delete a drifted "
            "topic and apply again."
        )
    result = _create_missing(admin, current, timeout)
    if not apply_config or not result.drifted:
        return result
    _set_configs(admin, result.drifted, timeout)
    return replace(result, configs_set=True)


def _create_missing(admin: AdminClient, current: TopologyPlan, timeout: float) -> TopologyPlan:
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
    created = {s.name: s.partitions for s in missing if s.name not in raced}
    _wait_until(
        lambda: _not_listed_with(admin, created, timeout), timeout, "were created but do not show in metadata"
    )
    return _recheck_raced(admin, current, raced, list(created), timeout)


def _not_listed_with(admin: AdminClient, expected: dict[str, int], timeout: float) -> list[str]:
    counts = _partition_counts(_metadata(admin, timeout))
    return [name for name, n in expected.items() if counts.get(name) != n]


def _recheck_raced(
    admin: AdminClient, current: TopologyPlan, raced: list[str], created: list[str], timeout: float
) -> TopologyPlan:
    """Whoever won the race may have made the topic differently: check it like any other."""
    if not raced:
        return current
    specs = [t.spec for t in current.topics if t.spec.name in raced]
    again = {t.spec.name: t for t in plan_topics(admin, specs, timeout).topics}
    if any(t.action is Action.CONFLICT for t in again.values()):
        raise TopologyConflictError(TopologyPlan(tuple(again.values())), created)
    merged = [
        replace(again[t.spec.name], reason=f"created concurrently by another client; {again[t.spec.name].reason}")
        if t.spec.name in again
        else t
        for t in current.topics
    ]
    return TopologyPlan(tuple(merged))


def _set_configs(admin: AdminClient, drifted: list[TopicPlan], timeout: float) -> None:
    """IncrementalAlterConfigs SET of the drifted keys only, then wait until they show."""
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            t.spec.name,
            incremental_configs=[
                ConfigEntry(d.key, d.declared, incremental_operation=AlterConfigOpType.SET) for d in t.drift
            ],
        )
        for t in drifted
    ]
    failed: dict[str, str] = {}
    for resource, future in admin.incremental_alter_configs(resources, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            failed[resource.name] = f"{error.name()}: {error.str()}"
    if failed:
        raise ConfigurationError(
            f"The broker refused to set the configs of {failed}; those of the other topics were set. Fix the "
            "cause (e.g. a value out of range in topology.yaml, or a missing ALTER_CONFIGS ACL) and run "
            "apply --apply-config again."
        )
    declared = {t.spec.name: {d.key: d.declared for d in t.drift} for t in drifted}
    _wait_until(
        lambda: _still_drifted(admin, declared, timeout), timeout, "had their configs set but report the old values"
    )


def _still_drifted(admin: AdminClient, declared: dict[str, dict[str, str]], timeout: float) -> list[str]:
    reported = _describe_configs(admin, list(declared), timeout)
    return [name for name, want in declared.items() if config_drift(want, reported.get(name, {})).drift]


# -- output --------------------------------------------------------------------------


def format_plan(plan: TopologyPlan, *, applied: bool = False) -> str:
    """A table: action, topic, partitions, policy, reason; a summary; a fix per conflict
    and one for config drift left as it is.

    ``applied``: the plan came from ``apply``, so its CREATE entries were created.
    """
    rows = [("ACTION", "TOPIC", "PARTITIONS", "POLICY", "REASON")]
    rows += [
        (t.action.value, t.spec.name, _partitions_cell(t), _policy_cell(t), _reason_cell(t, plan)) for t in plan.topics
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]).rstrip() for row in rows
    ]
    done = "created" if applied else "to create"
    drift = "config set" if plan.configs_set else "with config drift"
    counts = (
        f"{len(plan.to_create)} {done}, {len(plan.ok)} ok, {len(plan.drifted)} {drift}, "
        f"{len(plan.conflicts)} in conflict"
    )
    lines.append(f"{len(plan.topics)} topics: {counts}")
    lines += [f"fix {t.spec.name}: {t.fix}" for t in plan.conflicts]
    if plan.drifted and not plan.configs_set:
        lines += [f"fix config drift: {fix}" for fix in dict.fromkeys(t.fix for t in plan.drifted)]
    return "\n".join(lines)


def _partitions_cell(t: TopicPlan) -> str:
    if t.partitions in (None, t.spec.partitions):
        return str(t.spec.partitions)
    return f"{t.spec.partitions} (cluster {t.partitions})"


def _policy_cell(t: TopicPlan) -> str:
    if t.policy is None or _policy_set(t.policy) == _policy_set(t.spec.cleanup_policy):
        return t.spec.cleanup_policy
    return f"{t.spec.cleanup_policy} (cluster {t.policy})"


def _reason_cell(t: TopicPlan, plan: TopologyPlan) -> str:
    if t.action is Action.DRIFT and plan.configs_set:
        return "set " + ", ".join(f"{d.key}={d.declared} (was {d.actual})" for d in t.drift)
    return t.reason


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentstream.topology_admin", description="Plan or apply the topology on a cluster."
    )
    parser.add_argument("command", choices=["plan", "apply"])
    parser.add_argument("--bootstrap", default=os.environ.get(BOOTSTRAP_ENV), help=f"default: ${BOOTSTRAP_ENV}")
    parser.add_argument("--topology", type=Path, help="default: $AGENTSTREAM_TOPOLOGY or examples/support_desk")
    parser.add_argument("--prefix", help="replace the topology's prefix")
    parser.add_argument("--apply-config", action="store_true", help="apply: also set drifted configs (not on Tansu)")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error(f"give --bootstrap or set {BOOTSTRAP_ENV}")
    if args.apply_config and args.command != "apply":
        parser.error("--apply-config goes with apply: plan never changes the cluster")
    try:
        topology = load_topology(args.topology, prefix=args.prefix)
        admin = AdminClient(admin_config(args.bootstrap))
        if args.command == "plan":
            result = plan(admin, topology)
        else:
            result = apply(admin, topology, apply_config=args.apply_config)
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
