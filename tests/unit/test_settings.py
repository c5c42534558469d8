"""Worker settings from the environment: typed, and a typo is an error."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import agentstream.settings
from agentstream.errors import ConfigurationError
from agentstream.settings import DEFAULT_STATE_DIR, WorkerSettings, state_dir_from_env


def test_settings_read_the_environment() -> None:
    settings = WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "AGENTSTREAM_MAX_INFLIGHT": "1024",
                                        "AGENTSTREAM_PREFIX": "staging"})
    assert (settings.bootstrap, settings.max_inflight, settings.prefix) == ("k:9092", 1024, "staging")


def test_a_bad_value_or_unknown_key_is_refused() -> None:
    # From the environment: one sentence naming the variable, not pydantic's report.
    with pytest.raises(ConfigurationError, match=r"^AGENTSTREAM_MAX_INFLIGHT='many' is not valid: .*integer"):
        WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "AGENTSTREAM_MAX_INFLIGHT": "many"})
    with pytest.raises(ConfigurationError, match="^AGENTSTREAM_GROUP_PROTOCOL='eager' is not valid"):
        WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "AGENTSTREAM_GROUP_PROTOCOL": "eager"})
    # From code: a typo is the developer's, and pydantic's report names it.
    with pytest.raises(ValidationError, match="max_inflght"):
        WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, max_inflght=3)


def test_one_state_directory_rule_for_every_command() -> None:
    assert state_dir_from_env(environ={}) == DEFAULT_STATE_DIR
    assert state_dir_from_env(environ={"AGENTSTREAM_STATE_DIR": "/srv/agents"}) == Path("/srv/agents")
    assert state_dir_from_env(Path("here"), environ={"AGENTSTREAM_STATE_DIR": "/srv/agents"}) == Path("here")


def test_an_explicit_group_protocol_is_used_as_given() -> None:
    from agentstream.broker import group_protocol_for

    assert group_protocol_for("classic", "unreachable:1") == "classic"
    assert group_protocol_for("consumer", "unreachable:1") == "consumer"


def test_the_fetch_wait_is_by_broker_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentstream import broker
    from agentstream.clients import consumer_config

    assert WorkerSettings.from_env({}, bootstrap="b:9092").fetch_wait_ms is None
    assert WorkerSettings.from_env({"AGENTSTREAM_FETCH_WAIT_MS": "100"}, bootstrap="b:9092").fetch_wait_ms == 100
    with pytest.raises(ConfigurationError, match="^AGENTSTREAM_FETCH_WAIT_MS='0' is not valid"):
        WorkerSettings.from_env({"AGENTSTREAM_FETCH_WAIT_MS": "0"}, bootstrap="b:9092")
    assert broker.fetch_wait_for(100, "unreachable:1") == 100  # set: no broker is asked
    for tansu, expected in ((False, 500), (True, 20)):
        monkeypatch.setattr(broker, "is_tansu", lambda bootstrap, tansu=tansu: tansu)
        assert broker.fetch_wait_for(None, "b:9092") == expected
    assert consumer_config("b:9092", "g", fetch_wait_ms=500)["fetch.wait.max.ms"] == 500


def test_the_quiet_pause_is_by_fetch_wait_unless_set() -> None:
    assert WorkerSettings.from_env({}, bootstrap="b:9092").quiet_pause_s is None
    assert WorkerSettings.from_env({"AGENTSTREAM_QUIET_PAUSE_S": "0"}, bootstrap="b:9092").quiet_pause_s == 0
    assert WorkerSettings.from_env({"AGENTSTREAM_QUIET_PAUSE_S": " 2.5 "}, bootstrap="b:9092").quiet_pause_s == 2.5
    for bad in ("-1", "soon"):
        with pytest.raises(ConfigurationError, match=f"^AGENTSTREAM_QUIET_PAUSE_S='{bad}' is not valid"):
            WorkerSettings.from_env({"AGENTSTREAM_QUIET_PAUSE_S": bad}, bootstrap="b:9092")


def test_group_protocol_defaults_to_auto_and_rejects_unknown_values() -> None:
    import pydantic

    assert WorkerSettings.from_env({}, bootstrap="b:9092").group_protocol == "auto"
    with pytest.raises((pydantic.ValidationError, ConfigurationError)):
        WorkerSettings.from_env({"AGENTSTREAM_GROUP_PROTOCOL": "eager"}, bootstrap="b:9092")


def _env_names_outside_settings() -> list[str]:
    """Environment variable names written as literals in the package, outside settings.py:
    an ``AGENTSTREAM_*`` string, or a literal key read from ``os.environ``/``env``."""
    package = Path(agentstream.settings.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "settings.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            literal = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"AGENTSTREAM_[A-Z_]+", node.value):
                literal = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
                receiver = ast.unparse(node.func.value)
                if receiver in ("os.environ", "environ", "env") and isinstance(node.args[0], ast.Constant):
                    literal = str(node.args[0].value)
            if literal is not None:
                found.append(f"{path.relative_to(package)}:{node.lineno}: {literal}")
    return found


def test_every_environment_variable_is_named_in_settings() -> None:
    assert _env_names_outside_settings() == [], "name these in agentstream/settings.py and import them"


def test_the_producers_linger_is_the_default_unless_set() -> None:
    from agentstream.clients import DEFAULT_LINGER_MS, LINGER, producer_config

    assert WorkerSettings.from_env({}, bootstrap="b:9092").linger_ms is None
    assert WorkerSettings.from_env({"AGENTSTREAM_LINGER_MS": "0"}, bootstrap="b:9092").linger_ms == 0
    assert WorkerSettings.from_env({"AGENTSTREAM_LINGER_MS": " 0.5 "}, bootstrap="b:9092").linger_ms == 0.5
    for bad in ("-1", "soon"):
        with pytest.raises(ConfigurationError, match=f"^AGENTSTREAM_LINGER_MS='{bad}' is not valid"):
            WorkerSettings.from_env({"AGENTSTREAM_LINGER_MS": bad}, bootstrap="b:9092")
    assert producer_config("b:9092")[LINGER] == DEFAULT_LINGER_MS
    assert producer_config("b:9092", {LINGER: 0})[LINGER] == 0


def test_the_flush_timeout_is_read_and_the_liveness_limit_may_not_be_shorter() -> None:
    assert WorkerSettings.from_env({}, bootstrap="b:9092").flush_timeout_s == 30.0
    patient = WorkerSettings.from_env({"AGENTSTREAM_FLUSH_TIMEOUT_S": "90", "AGENTSTREAM_HEALTH_STALL_S": "90"},
                                      bootstrap="b:9092")
    assert (patient.flush_timeout_s, patient.health_stall_s) == (90.0, 90.0)
    # A worker waiting that long for the broker would fail /healthz first and be restarted as stuck.
    refused = r"^AGENTSTREAM_HEALTH_STALL_S=30 is shorter than AGENTSTREAM_FLUSH_TIMEOUT_S=90: .*at least 90\.$"
    with pytest.raises(ConfigurationError, match=refused):
        WorkerSettings.from_env({"AGENTSTREAM_FLUSH_TIMEOUT_S": "90"}, bootstrap="b:9092")
    for bad in ("0", "301", "inf"):
        with pytest.raises(ConfigurationError, match=f"^AGENTSTREAM_FLUSH_TIMEOUT_S='{bad}' is not valid"):
            WorkerSettings.from_env({"AGENTSTREAM_FLUSH_TIMEOUT_S": bad}, bootstrap="b:9092")
    # A short stall limit alone was accepted before the flush timeout could be set, and still is.
    assert WorkerSettings.from_env({"AGENTSTREAM_HEALTH_STALL_S": "10"}, bootstrap="b:9092").health_stall_s == 10
