"""Worker settings from the environment: typed, and a typo is an error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentstream.settings import WorkerSettings


def test_settings_read_the_environment() -> None:
    settings = WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "AGENTSTREAM_MAX_INFLIGHT": "1024",
                                        "AGENTSTREAM_PREFIX": "staging"})
    assert (settings.bootstrap, settings.max_inflight, settings.prefix) == ("k:9092", 1024, "staging")


def test_a_bad_value_or_unknown_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_inflight"):
        WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "AGENTSTREAM_MAX_INFLIGHT": "many"})
    with pytest.raises(ValidationError, match="max_inflght"):
        WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, max_inflght=3)
