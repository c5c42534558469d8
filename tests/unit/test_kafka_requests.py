"""The requests a worker's Kafka clients sent, from librdkafka's statistics documents
(telemetry/kafka_requests.py): no client here, only the documents librdkafka would emit."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agentstream.clients import STATISTICS_CALLBACK, STATISTICS_INTERVAL
from agentstream.errors import ConfigurationError
from agentstream.settings import KAFKA_STATS_ENV, WorkerSettings
from agentstream.telemetry.kafka_requests import RequestCounter, counting, with_statistics


def statistics(**brokers: dict[str, Any]) -> str:
    """A statistics document as librdkafka writes it, cut to what the counter reads."""
    return json.dumps({"name": "agentstream#producer-1", "type": "producer",
                       "brokers": {name: {"name": name, "req": req} for name, req in brokers.items()}})


def counter() -> tuple[RequestCounter, list[tuple[str, int]]]:
    counted: list[tuple[str, int]] = []
    return RequestCounter(lambda request, sent: counted.append((request, sent))), counted


def test_each_document_counts_what_was_sent_since_the_last() -> None:
    count, counted = counter()
    count(statistics(broker1={"Produce": 5, "Fetch": 3, "Metadata": 0}))
    count(statistics(broker1={"Produce": 12, "Fetch": 3, "Metadata": 1}))
    assert counted == [("Produce", 5), ("Fetch", 3), ("Produce", 7), ("Metadata", 1)]


def test_broker_handles_are_counted_apart() -> None:
    count, counted = counter()
    count(statistics(broker1={"Fetch": 4}, GroupCoordinator={"Heartbeat": 2}))
    count(statistics(broker1={"Fetch": 6}, GroupCoordinator={"Heartbeat": 2, "OffsetCommit": 1}))
    assert counted == [("Fetch", 4), ("Heartbeat", 2), ("Fetch", 2), ("OffsetCommit", 1)]


def test_a_lower_total_is_a_handle_made_again_counted_from_zero() -> None:
    count, counted = counter()
    count(statistics(broker1={"Produce": 12}))
    count(statistics(broker1={"Produce": 4}))
    count(statistics(broker1={"Produce": 9}))
    assert counted == [("Produce", 12), ("Produce", 4), ("Produce", 5)]


def test_a_handle_missing_from_a_document_is_forgotten_and_counts_from_zero_when_made_again() -> None:
    # librdkafka removes a broker the metadata no longer lists and makes it again with
    # fresh totals, which may already be above the old ones by the next document.
    count, counted = counter()
    count(statistics(broker1={"Produce": 12}, broker2={"Fetch": 1}))
    count(statistics(broker2={"Fetch": 2}))
    count(statistics(broker1={"Produce": 15}, broker2={"Fetch": 2}))
    assert counted == [("Produce", 12), ("Fetch", 1), ("Fetch", 1), ("Produce", 15)]


def test_a_failure_while_counting_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: str, sent: int) -> None:
        raise RuntimeError(f"no counter for {request}")

    with caplog.at_level(logging.ERROR, logger="agentstream.telemetry.kafka_requests"):
        RequestCounter(broken)(statistics(broker1={"Produce": 1}))
    assert "librdkafka statistics could not be counted" in caplog.text and "no counter for Produce" in caplog.text


@pytest.mark.parametrize("document", ["not json", "[1, 2]", json.dumps({"brokers": ["b1"]}),
                                      json.dumps({"brokers": {"b1": {"req": {"Produce": "7", "Fetch": None}}}}),
                                      json.dumps({"brokers": {"b1": "down"}})])
def test_a_document_not_as_librdkafka_writes_it_counts_nothing_and_raises_nothing(document: str) -> None:
    count, counted = counter()
    count(document)
    assert counted == []


def test_a_document_that_is_no_json_object_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    count, _ = counter()
    with caplog.at_level(logging.WARNING, logger="agentstream.telemetry.kafka_requests"):
        count("not json")
    assert "librdkafka statistics that are not a JSON object were ignored" in caplog.text


def test_counting_adds_to_the_workers_request_counter() -> None:
    labels = {"worker": "unit-kafka-requests", "client": "consumer", "request": "Fetch"}
    before = REGISTRY.get_sample_value("agentstream_kafka_requests_total", labels) or 0.0
    count = RequestCounter(counting("unit-kafka-requests", "consumer"))
    count(statistics(broker1={"Fetch": 3}))
    count(statistics(broker1={"Fetch": 10}))
    assert REGISTRY.get_sample_value("agentstream_kafka_requests_total", labels) == before + 10


def test_statistics_are_asked_for_only_with_an_interval() -> None:
    config = {"bootstrap.servers": "b:9092"}
    assert with_statistics(config, 0, "router", "producer") is config
    counted = with_statistics(config, 5, "router", "producer")
    assert counted[STATISTICS_INTERVAL] == 5000 and isinstance(counted[STATISTICS_CALLBACK], RequestCounter)
    assert config == {"bootstrap.servers": "b:9092"}  # the caller's dict is left as it was


def test_the_interval_comes_from_its_variable_in_whole_seconds() -> None:
    assert WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"}).kafka_stats_s == 0
    assert WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", KAFKA_STATS_ENV: "5"}).kafka_stats_s == 5
    for bad in ("0.5", "-1", "often"):
        with pytest.raises(ConfigurationError, match=f"{KAFKA_STATS_ENV}='{bad}' is not valid"):
            WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", KAFKA_STATS_ENV: bad})
