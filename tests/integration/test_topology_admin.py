"""topology plan/apply against a real broker, each test with its own topic prefix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.clients import admin_config
from agentstream.topology import TopicSpec, Topology, load_topology
from agentstream.topology_admin import Action, TopologyConflictError, TopologyPlan, apply, ensure_topics, plan


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
    before = partition_counts(admin, topology.prefix)

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
    create(admin, NewTopic(topology.topic("dlq"), 8, 1, config={"cleanup.policy": "delete"}))
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
