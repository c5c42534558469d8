"""topology plan/apply against a real broker, each test with its own topic prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from agentstream.broker import is_tansu
from agentstream.clients import admin_config
from agentstream.errors import ConfigurationError
from agentstream.settings import BOOTSTRAP_ENV, PREFIX_ENV, TOPOLOGY_ENV
from agentstream.topology import DEFAULT_PATH, TopicSpec, Topology, load_topology
from agentstream.topology_admin import (
    APPLY_CONFIG_FIX,
    TANSU_CONFIG_FIX,
    Action,
    ConfigDrift,
    TopicPlan,
    TopologyConflictError,
    TopologyPlan,
    apply,
    ensure_topics,
    plan,
)

HOUR_MS = "3600000"
WEEK_MS = "604800000"  # retention.ms declared for results in topology.yaml
# Apache Kafka 4's topic defaults for the changelog keys the topology declares.
KAFKA_DEFAULTS = {
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "9223372036854775807",
    "segment.ms": "604800000",
    "delete.retention.ms": "86400000",
    "min.cleanable.dirty.ratio": "0.5",
}


@pytest.fixture
def admin(bootstrap: str) -> AdminClient:
    return AdminClient(admin_config(bootstrap))


@pytest.fixture
def topology(unique: str) -> Topology:
    return load_topology(prefix=f"t{unique}")


def partition_counts(admin: AdminClient, prefix: str) -> dict[str, int]:
    topics = admin.list_topics(timeout=10).topics
    return {name: len(t.partitions) for name, t in topics.items() if name.startswith(f"{prefix}.")}


def create(admin: AdminClient, *topics: NewTopic) -> None:
    for future in admin.create_topics(list(topics), operation_timeout=10).values():
        future.result()


def topic_config(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, name)
    return {key: entry.value for key, entry in admin.describe_configs([resource])[resource].result().items()}


def entry(result: TopologyPlan, name: str) -> TopicPlan:
    return next(t for t in result.topics if t.spec.name == name)


def test_plan_on_an_empty_cluster_creates_everything_and_touches_nothing(
    admin: AdminClient, topology: Topology
) -> None:
    result = plan(admin, topology)
    assert [t.spec.name for t in result.to_create] == [s.name for s in topology.all_topics()]
    assert not result.ok and not result.conflicts
    assert partition_counts(admin, topology.prefix) == {}, "planning must not create topics"


def test_apply_creates_every_topic_once(admin: AdminClient, topology: Topology) -> None:
    first = apply(admin, topology)
    assert len(first.to_create) == len(topology.all_topics())
    assert partition_counts(admin, topology.prefix) == {s.name: s.partitions for s in topology.all_topics()}

    second = apply(admin, topology)
    assert second.to_create == []
    assert [t.action for t in second.topics] == [Action.OK] * len(topology.all_topics())
    # Both Kafka and Tansu report a cleanup.policy that was set at creation.
    checkpoints = next(t for t in second.topics if t.spec.name == topology.changelog_topic("billing", "checkpoints"))
    assert checkpoints.policy == "compact"


def test_conflicts_are_listed_and_nothing_is_created(admin: AdminClient, topology: Topology) -> None:
    results, checkpoints, tasks = topology.topic("results"), topology.changelog_topic("billing", "checkpoints"), topology.topic("tasks")
    create(
        admin,
        NewTopic(results, 3, 1),  # fewer partitions than declared
        NewTopic(checkpoints, 6, 1, config={"cleanup.policy": "delete"}),  # compact declared
        NewTopic(tasks, 8, 1, config={"cleanup.policy": "delete"}),  # more: breaks co-partitioning
    )
    # Not read back from the metadata: on Kafka it lists a new topic only some ms later, and
    # apply must see these three even so (it asks the controller about unlisted topics).
    before = {results: 3, checkpoints: 6, tasks: 8}

    with pytest.raises(TopologyConflictError) as caught:
        apply(admin, topology)

    assert partition_counts(admin, topology.prefix) == before, "apply must refuse before creating anything"
    by_name = {t.spec.name: t for t in caught.value.plan.topics}
    assert {t.spec.name for t in caught.value.plan.conflicts} == {results, checkpoints, tasks}
    assert "fewer than the 6 declared" in by_name[results].reason
    assert "cleanup.policy is delete, not the compact declared" in by_name[checkpoints].reason
    assert "breaks co-partitioning" in by_name[tasks].reason
    message = str(caught.value)
    assert all(f"{name}: " in message for name in (results, checkpoints, tasks))
    assert message.count("Fix:") == 3


def test_more_partitions_are_fine_where_nothing_is_co_partitioned(admin: AdminClient, topology: Topology) -> None:
    # With the declared configs: a topic made without retention.ms would (rightly) show drift.
    dlq_spec = topology.topic_spec("dlq")
    create(admin, NewTopic(dlq_spec.name, 8, 1, config=dict(dlq_spec.config)))
    dlq = next(t for t in plan(admin, topology).topics if t.spec.name == topology.topic("dlq"))
    assert dlq.action is Action.OK
    assert "more than declared" in dlq.reason


def test_concurrent_applies_split_the_work_and_both_succeed(bootstrap: str, topology: Topology) -> None:
    with ThreadPoolExecutor(2) as pool:
        runs: list[TopologyPlan] = list(
            pool.map(lambda _: apply(AdminClient(admin_config(bootstrap)), topology), range(2))
        )
    created = [t.spec.name for run in runs for t in run.to_create]
    assert sorted(created) == sorted(s.name for s in topology.all_topics()), "each topic created exactly once"


def test_ensure_topics_creates_missing_changelogs(bootstrap: str, admin: AdminClient, unique: str) -> None:
    spec = TopicSpec(f"t{unique}.worker.store.changelog", 6, 1, {"cleanup.policy": "compact"})
    assert ensure_topics(bootstrap, [spec]) == [spec.name]
    assert ensure_topics(bootstrap, [spec]) == []
    assert partition_counts(admin, f"t{unique}") == {spec.name: 6}


def test_plan_shows_config_drift_of_an_existing_topic(admin: AdminClient, topology: Topology) -> None:
    results = topology.topic("results")
    create(admin, NewTopic(results, 6, 1, config={"cleanup.policy": "delete", "retention.ms": HOUR_MS}))

    found = entry(plan(admin, topology), results)

    assert found.action is Action.DRIFT
    assert found.drift == (ConfigDrift("retention.ms", WEEK_MS, HOUR_MS),)
    assert f"retention.ms is {HOUR_MS}, not the {WEEK_MS} declared" in found.reason


def test_a_changelog_without_the_compaction_settings(bootstrap: str, admin: AdminClient, topology: Topology) -> None:
    """As an older runtime made them: only cleanup.policy=compact."""
    changelog = topology.changelog_topic("supervisor", "pending")
    create(admin, NewTopic(changelog, 6, 1, config={"cleanup.policy": "compact"}))

    found = entry(plan(admin, topology), changelog)

    declared = {k: v for k, v in topology.changelog_config.items() if k != "cleanup.policy"}
    if is_tansu(bootstrap):  # reports only the configs given at creation: the rest is not checked
        assert found.action is Action.OK
        assert set(found.unchecked) == set(declared)
        assert "not reported by the broker, not checked" in found.reason
    else:  # Kafka reports its defaults, e.g. segment.ms 7 d: each declared key that differs is drift
        assert found.action is Action.DRIFT
        assert {d.key for d in found.drift} == {k for k, v in declared.items() if v != KAFKA_DEFAULTS[k]}
        assert found.unchecked == ()


def test_apply_reports_drift_and_apply_config_sets_it(bootstrap: str, admin: AdminClient, topology: Topology) -> None:
    results, changelog = topology.topic("results"), topology.changelog_topic("billing", "checkpoints")
    create(
        admin,
        NewTopic(results, 6, 1, config={"cleanup.policy": "delete", "retention.ms": HOUR_MS}),
        NewTopic(changelog, 6, 1, config={"cleanup.policy": "compact", "segment.ms": WEEK_MS}),
    )

    reported = apply(admin, topology)  # creates what is missing, leaves the drift
    assert {t.spec.name for t in reported.drifted} == {changelog, results}
    assert not reported.configs_set
    assert len(reported.to_create) == len(topology.all_topics()) - 2
    assert topic_config(admin, results)["retention.ms"] == HOUR_MS, "apply without --apply-config changes no config"

    if is_tansu(bootstrap):
        with pytest.raises(ConfigurationError, match=r"--apply-config is not supported by this broker \(Tansu\)"):
            apply(admin, topology, apply_config=True)
        assert topic_config(admin, results)["retention.ms"] == HOUR_MS
        assert entry(plan(admin, topology), results).fix == TANSU_CONFIG_FIX
        return

    assert entry(reported, results).fix == APPLY_CONFIG_FIX
    fixed = apply(admin, topology, apply_config=True)
    assert fixed.configs_set and {t.spec.name for t in fixed.drifted} == {changelog, results}
    assert topic_config(admin, results)["retention.ms"] == WEEK_MS
    assert topic_config(admin, changelog)["segment.ms"] == topology.changelog_config["segment.ms"]

    again = plan(admin, topology)
    assert [t.action for t in again.topics] == [Action.OK] * len(topology.all_topics()), "no drift left"


def test_a_partition_conflict_is_refused_and_no_config_changes(admin: AdminClient, topology: Topology) -> None:
    tasks, results = topology.topic("tasks"), topology.topic("results")
    create(
        admin,
        NewTopic(tasks, 3, 1, config={"cleanup.policy": "delete", "retention.ms": WEEK_MS}),
        NewTopic(results, 6, 1, config={"cleanup.policy": "delete", "retention.ms": HOUR_MS}),
    )

    with pytest.raises(TopologyConflictError) as caught:
        apply(admin, topology, apply_config=True)

    assert [t.spec.name for t in caught.value.plan.conflicts] == [tasks]
    assert "nothing was created or changed" in str(caught.value)
    assert partition_counts(admin, topology.prefix) == {tasks: 3, results: 6}
    assert topic_config(admin, results)["retention.ms"] == HOUR_MS


def test_changelogs_get_the_compaction_settings_of_the_topology(admin: AdminClient, unique: str) -> None:
    """How a test that watches compaction asks for small segments and a dirty ratio near 0."""
    overrides = {"segment.ms": 100, "min.cleanable.dirty.ratio": 0.001, "delete.retention.ms": 100}
    topology = load_topology(prefix=f"t{unique}", changelogs=overrides)
    changelog = topology.changelog_topic("router", "dedupe")

    apply(admin, topology)

    config = topic_config(admin, changelog)
    assert {key: config[key] for key in ("cleanup.policy", *overrides)} == {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "100",
    }


def test_the_cli_plan_shows_drift(bootstrap: str, admin: AdminClient, unique: str, tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["changelogs"]["segment.ms"] = 60000
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    topology = load_topology(path, prefix=f"t{unique}")
    changelog = topology.changelog_topic("router", "dedupe")
    create(admin, NewTopic(changelog, 6, 1, config={**topology.changelog_config, "segment.ms": HOUR_MS}))

    env = {**os.environ, BOOTSTRAP_ENV: bootstrap, PREFIX_ENV: topology.prefix, TOPOLOGY_ENV: str(path)}
    run = subprocess.run(
        [sys.executable, "-m", "agentstream", "topology", "plan"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    row = next(line for line in lines if f" {changelog} " in line)
    assert row.split()[0] == "DRIFT"
    assert f"segment.ms is {HOUR_MS}, not the 60000 declared" in row
    total = len(topology.all_topics())
    assert f"{total} topics: {total - 1} to create, 0 ok, 1 with config drift, 0 in conflict" in lines
    fix = TANSU_CONFIG_FIX if is_tansu(bootstrap) else APPLY_CONFIG_FIX
    assert lines[-1] == f"fix config drift: {fix}"
    assert partition_counts(admin, topology.prefix) == {changelog: 6}, "plan creates nothing"
