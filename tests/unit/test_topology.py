"""The topology loader and its accessors, on the support-desk app's topology.yaml (no broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from agentstream.errors import BrokerUnavailableError, ConfigurationError
from agentstream.settings import TOPOLOGY_ENV
from agentstream.topology import DEFAULT_PATH, TopicSpec, load_topology
from agentstream.topology_admin import (
    APPLY_CONFIG_FIX,
    TANSU_CONFIG_FIX,
    Action,
    ConfigCheck,
    ConfigDrift,
    TopicPlan,
    TopologyPlan,
    _metadata_listing_a_broker,
    compare_topic,
    config_drift,
    format_plan,
)

SPECIALISTS = ["billing", "technical", "account"]
# What topology.yaml sets on every table changelog (its comments say why).
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "604800000",
    "segment.ms": "3600000",
    "delete.retention.ms": "604800000",
    "min.cleanable.dirty.ratio": "0.25",
}


def write_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """The real topology with ``change`` applied, written to a temporary file."""
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    change(raw)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_real_file_names_every_topic() -> None:
    topology = load_topology()
    assert topology.prefix == "agents"
    assert {
        name: topology.topic(name)
        for name in [
            "tasks",
            "supervisor",
            "results",
            "task_events",
            "approvals",
            "approval_decisions",
            "transcripts",
            "control",
            "dlq",
            "audit",
        ]
    } == {
        "tasks": "agents.tasks.v1",
        "supervisor": "agents.supervisor.v1",
        "results": "agents.results.v1",
        "task_events": "agents.task-events.v1",
        "approvals": "agents.approvals.v1",
        "approval_decisions": "agents.approval-decisions.v1",
        "transcripts": "agents.transcripts.v1",
        "control": "agents.control.v1",
        "dlq": "agents.dlq.v1",
        "audit": "agents.audit.v1",
    }
    assert topology.specialist_types == SPECIALISTS
    for kind in SPECIALISTS:
        assert topology.specialist_topic(kind) == topology.topic(f"specialist.{kind}") == f"agents.specialist.{kind}.v1"
        assert topology.group(kind) == f"agents.specialist.{kind}"
        assert topology.agent(kind).tools and topology.agent(kind).max_steps
    assert topology.group("router") == "agents.router"
    assert topology.group("supervisor") == "agents.supervisor"
    assert topology.agent("router").input == "tasks"


def test_tables_retry_tiers_and_specs() -> None:
    topology = load_topology()
    assert topology.changelog_topic("router", "dedupe") == "agents.router.dedupe.changelog"
    assert topology.changelog_topic("supervisor", "pending") == "agents.supervisor.pending.changelog"
    assert topology.changelog_topic("billing", "checkpoints") == "agents.specialist.billing.checkpoints.changelog"
    assert topology.retry.delays_s == (5, 30, 300)
    assert topology.retry_topics("tasks") == [
        "agents.tasks.v1.retry-1",
        "agents.tasks.v1.retry-2",
        "agents.tasks.v1.retry-3",
    ]

    specs = {spec.name: spec for spec in topology.all_topics()}
    assert len(specs) == len(topology.all_topics()), "no topic is listed twice"
    # 15 declared (audit, transcripts, control, rollout and shadow_results included) + 3 tiers for each of the 5 stage inputs + 17 changelogs
    assert len(specs) == 15 + 3 * 5 + 17
    assert {spec.partitions for spec in specs.values() if spec.per_session} == {6}
    assert all(spec.replication == 1 for spec in specs.values())
    assert specs["agents.specialist.billing.checkpoints.changelog"].cleanup_policy == "compact"
    assert specs["agents.supervisor.dedupe.changelog"].config == CHANGELOG_CONFIG
    assert specs["agents.tasks.v1"].config == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert specs["agents.specialist.account.v1.retry-2"].cleanup_policy == "delete"
    assert not specs["agents.dlq.v1"].per_session
    assert specs["agents.audit.v1"].config == {"cleanup.policy": "delete", "retention.ms": "7776000000"}
    assert not specs["agents.audit.v1"].per_session


def test_prefix_override_renames_every_topic_and_group() -> None:
    topology = load_topology(prefix="t123")
    names = [spec.name for spec in topology.all_topics()] + [topology.group(a) for a in topology.agents]
    assert all(name.startswith("t123.") for name in names)
    assert not any("agents" in name for name in names)
    assert topology.topic("task_events") == "t123.task-events.v1"
    assert topology.changelog_topic("supervisor", "pending") == "t123.supervisor.pending.changelog"


def test_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_variant(tmp_path, lambda raw: raw.update(prefix="fromenv"))
    monkeypatch.setenv(TOPOLOGY_ENV, str(path))
    assert load_topology().topic("tasks") == "fromenv.tasks.v1"
    assert load_topology(DEFAULT_PATH).topic("tasks") == "agents.tasks.v1", "an explicit path wins"


@pytest.mark.parametrize(
    ("section", "key", "where"),
    [
        ((), "partitons", "the top level"),
        (("topics", "results"), "retention", "topics.results"),
        (("agents", "billing"), "max_step", "agents.billing"),
        (("retry",), "delays", "retry"),
        (("changelogs",), "segment_ms", "changelogs"),
    ],
)
def test_a_misspelt_key_is_named_with_its_place_and_file(
    tmp_path: Path, section: tuple[str, ...], key: str, where: str
) -> None:
    def misspell(raw: dict[str, Any]) -> None:
        for name in section:
            raw = raw[name]
        raw[key] = 1

    path = write_variant(tmp_path, misspell)
    with pytest.raises(ConfigurationError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"unknown key '{key}' in {where}; valid keys are [" in message


def test_unequal_partition_counts_are_refused(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda raw: raw["topics"]["results"].update(partitions=3))
    with pytest.raises(ConfigurationError, match=r"same partition count.*3 partitions: \['results'\]"):
        load_topology(path)


def test_a_topic_that_is_not_per_session_may_differ(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda raw: raw["topics"]["dlq"].update(partitions=2))
    topology = load_topology(path)
    assert {s.name: s.partitions for s in topology.all_topics()}["agents.dlq.v1"] == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda raw: raw["agents"]["router"].update(input="taks"), "reads topic 'taks', which is not declared"),
        (lambda raw: raw["retry"].update(max_attempts=5), "needs 4 retry tiers"),
        (lambda raw: raw["agents"]["router"].update(tools=["x"]), "specialists only"),
        (lambda raw: raw["agents"]["billing"].pop("max_steps"), "needs max_steps"),
        (lambda raw: raw.update(prefix="my agents"), "illegal topic or group names"),
        (lambda raw: raw["topics"]["dlq"].update(suffix="results.v1"), "names used twice"),
        (lambda raw: raw["topics"]["dlq"].update({"cleanup.policy": "compacted"}), "cleanup.policy"),
    ],
)
def test_inconsistent_wiring_is_refused(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match="Invalid topology") as caught:
        load_topology(write_variant(tmp_path, change))
    assert expected in str(caught.value)


def test_unknown_names_list_the_valid_ones() -> None:
    topology = load_topology()
    with pytest.raises(ConfigurationError, match=r"Unknown topic 'task'; valid topics are \[.*'tasks'.*\]"):
        topology.topic("task")
    with pytest.raises(ConfigurationError, match=r"Unknown agent type 'billings'.*'billing'"):
        topology.group("billings")
    with pytest.raises(
        ConfigurationError,
        match=r"Unknown specialist type 'router'; valid types are \['billing', 'technical', 'account'\]",
    ):
        topology.specialist_topic("router")
    with pytest.raises(ConfigurationError, match=r"no table 'history'; its tables are \['dedupe', 'sessions', 'retrying', 'parked'\]"):
        topology.changelog_topic("router", "history")
    with pytest.raises(ConfigurationError, match="is no agent's input"):
        topology.retry_topics("results")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.yaml"):
        load_topology(tmp_path / "nope.yaml")


def test_format_plan_shows_action_topic_partitions_policy_and_fix() -> None:
    spec = TopicSpec("t.results.v1", 6, 1, {"cleanup.policy": "compact"})
    plan = TopologyPlan(
        (
            TopicPlan(spec, Action.CONFLICT, "has 3 partitions", partitions=3, policy="delete", fix="recreate it"),
            TopicPlan(TopicSpec("t.tasks.v1", 6, 1), Action.CREATE, "missing"),
        )
    )
    lines = format_plan(plan).splitlines()
    assert lines[0].split() == ["ACTION", "TOPIC", "PARTITIONS", "POLICY", "REASON"]
    assert lines[1].split()[:2] == ["CONFLICT", "t.results.v1"]
    assert "6 (cluster 3)" in lines[1] and "compact (cluster delete)" in lines[1]
    assert lines[-2] == "2 topics: 1 to create, 0 ok, 0 with config drift, 1 in conflict"
    assert lines[-1] == "fix t.results.v1: recreate it"
    assert "1 created, 0 ok" in format_plan(plan, applied=True)


# -- changelog settings ------------------------------------------------------------------


def test_every_changelog_gets_the_changelogs_section() -> None:
    topology = load_topology()
    assert topology.changelog_config == CHANGELOG_CONFIG
    changelogs = [s for s in topology.all_topics() if s.name.endswith(".changelog")]
    assert len(changelogs) == 17 and all(s.config == CHANGELOG_CONFIG for s in changelogs)


def test_a_test_can_override_the_changelog_settings() -> None:
    topology = load_topology(prefix="t1", changelogs={"segment.ms": 100, "min.cleanable.dirty.ratio": 0.001})
    spec = next(s for s in topology.all_topics() if s.name == "t1.router.dedupe.changelog")
    assert spec.config == {**CHANGELOG_CONFIG, "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001"}
    assert load_topology().changelog_config == CHANGELOG_CONFIG, "the override does not stick"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"segment.ms": 0}, r"changelogs\['segment.ms'\]: Input should be greater than or equal to 1"),
        ({"min.cleanable.dirty.ratio": 1.5}, r"changelogs\['min.cleanable.dirty.ratio'\]: Input should be less"),
        ({"min.compaction.lag.ms": 10, "max.compaction.lag.ms": 5}, "max.compaction.lag.ms 5 is below"),
        ({"segmnt.ms": 1}, r"unknown key 'segmnt.ms' in changelogs; valid keys are \['delete.retention.ms'"),
    ],
)
def test_bad_changelog_settings_are_named(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected) as caught:
        load_topology(changelogs=overrides)
    assert "with changelogs overrides" in str(caught.value)


def test_the_changelogs_section_is_required(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda raw: raw.pop("changelogs"))
    with pytest.raises(ConfigurationError, match="changelogs: Field required"):
        load_topology(path)


# -- config drift (no broker) ---------------------------------------------------------

DECLARED = {"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.25"}


def test_no_drift_when_the_values_in_force_match() -> None:
    # Kafka reports every config, defaults included, and numbers as it parsed them.
    reported = {"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.250",
                "retention.ms": "604800000"}
    assert config_drift(DECLARED, reported) == ConfigCheck()


def test_each_differing_key_is_drift_and_unreported_keys_are_not_checked() -> None:
    check = config_drift(DECLARED, {"cleanup.policy": "compact", "segment.ms": "604800000"})
    assert check.drift == (ConfigDrift("segment.ms", "3600000", "604800000"),)
    assert check.unchecked == ("min.cleanable.dirty.ratio",)
    assert str(check.drift[0]) == "segment.ms is 604800000, not the 3600000 declared"


def test_cleanup_policy_is_compared_as_a_set() -> None:
    assert not config_drift({"cleanup.policy": "compact,delete"}, {"cleanup.policy": "delete, compact"}).drift
    assert config_drift({"cleanup.policy": "compact,delete"}, {"cleanup.policy": "compact"}).drift


def test_a_non_numeric_value_is_compared_as_text() -> None:
    assert config_drift({"compression.type": "zstd"}, {"compression.type": "producer"}).drift


SPEC = TopicSpec("t.router.dedupe.changelog", 6, 1, DECLARED)


def test_drift_of_a_settable_key_is_drift_not_conflict() -> None:
    found = compare_topic(SPEC, 6, {**DECLARED, "segment.ms": "604800000"})
    assert found.action is Action.DRIFT
    assert found.reason == "segment.ms is 604800000, not the 3600000 declared"
    assert found.fix == APPLY_CONFIG_FIX and found.policy == "compact"


def test_a_broker_that_cannot_alter_configs_gets_another_fix() -> None:
    found = compare_topic(SPEC, 6, {**DECLARED, "segment.ms": "1"}, alterable=False)
    assert found.action is Action.DRIFT and found.fix == TANSU_CONFIG_FIX


def test_another_cleanup_policy_is_a_conflict_listing_the_other_drift_too() -> None:
    found = compare_topic(SPEC, 6, {**DECLARED, "cleanup.policy": "delete", "segment.ms": "1"})
    assert found.action is Action.CONFLICT
    assert found.reason == (
        "cleanup.policy is delete, not the compact declared; segment.ms is 1, not the 3600000 declared"
    )
    assert "cleanup.policy=[compact]" in found.fix
    assert [d.key for d in found.drift] == ["cleanup.policy", "segment.ms"]


def test_fewer_partitions_stay_a_conflict_whatever_the_configs() -> None:
    found = compare_topic(SPEC, 3, DECLARED)
    assert found.action is Action.CONFLICT
    assert found.reason == "has 3 partitions, fewer than the 6 declared"


def test_keys_the_broker_does_not_report_are_not_checked() -> None:
    found = compare_topic(SPEC, 6, {"cleanup.policy": "compact"})  # as Tansu reports a topic
    assert found.action is Action.OK
    assert found.unchecked == ("segment.ms", "min.cleanable.dirty.ratio")
    assert found.reason == "segment.ms, min.cleanable.dirty.ratio not reported by the broker, not checked"
    assert compare_topic(SPEC, 6, {}).policy == "unknown"


def test_a_missing_topic_is_to_create() -> None:
    assert compare_topic(SPEC, None, {}).action is Action.CREATE


def test_format_plan_shows_drift_and_how_to_set_it() -> None:
    drifted = compare_topic(SPEC, 6, {**DECLARED, "segment.ms": "604800000"})
    ok = compare_topic(TopicSpec("t.tasks.v1", 6, 1, {"cleanup.policy": "delete"}), 6, {"cleanup.policy": "delete"})
    plan = TopologyPlan((drifted, ok))

    lines = format_plan(plan).splitlines()
    assert lines[1].split()[:2] == ["DRIFT", SPEC.name]
    assert lines[1].endswith("segment.ms is 604800000, not the 3600000 declared")
    assert lines[-2] == "2 topics: 0 to create, 1 ok, 1 with config drift, 0 in conflict"
    assert lines[-1] == f"fix config drift: {APPLY_CONFIG_FIX}"

    applied = format_plan(TopologyPlan((drifted, ok), configs_set=True), applied=True).splitlines()
    assert applied[1].endswith("set segment.ms=3600000 (was 604800000)")
    assert applied[-1] == "2 topics: 0 created, 1 ok, 1 config set, 0 in conflict"


def test_dedupe_retention_defaults_to_seven_days_the_input_retention() -> None:
    topology = load_topology()
    assert topology.dedupe.retention_s == 7 * 24 * 3600
    assert topology.topic_retention_ms("tasks") == topology.dedupe.retention_s * 1000


def test_a_dedupe_retention_shorter_than_an_input_topic_is_refused(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda raw: raw["dedupe"].update(retention_s=3600))
    with pytest.raises(ConfigurationError, match="dedupe.retention_s 3600 is shorter than the retention of the input"):
        load_topology(path)


def test_a_short_dedupe_retention_fits_short_input_topics(tmp_path: Path) -> None:
    def short(raw: dict[str, Any]) -> None:
        raw["dedupe"]["retention_s"] = 10
        for logical in ("tasks", "specialist.{type}", "supervisor"):
            raw["topics"][logical]["retention.ms"] = 10_000

    assert load_topology(write_variant(tmp_path, short)).dedupe.retention_s == 10


@pytest.mark.parametrize("bad", [0, -5, "week"])
def test_a_nonsense_dedupe_retention_is_named(tmp_path: Path, bad: object) -> None:
    path = write_variant(tmp_path, lambda raw: raw["dedupe"].update(retention_s=bad))
    with pytest.raises(ConfigurationError, match="dedupe.retention_s"):
        load_topology(path)


def test_planning_asks_again_while_the_metadata_lists_no_broker() -> None:
    """A KRaft broker still starting, or fenced by its controller for a moment, answers with
    no broker listed: asked again until one is, not refused at the first answer."""
    answers = [SimpleNamespace(brokers={}), SimpleNamespace(brokers={}), SimpleNamespace(brokers={1: "broker 1"})]
    admin = SimpleNamespace(list_topics=lambda timeout: answers.pop(0))
    assert _metadata_listing_a_broker(admin, 30).brokers == {1: "broker 1"}  # type: ignore[arg-type]
    assert not answers


def test_no_broker_listed_for_the_whole_timeout_is_refused_naming_what_to_check() -> None:
    admin = SimpleNamespace(list_topics=lambda timeout: SimpleNamespace(brokers={}))
    with pytest.raises(BrokerUnavailableError, match=r"listed no broker for 0 s: .*check the broker's log"):
        _metadata_listing_a_broker(admin, 0)  # type: ignore[arg-type]
