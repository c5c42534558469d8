"""A processor's producer against a real broker: its records keep their arguments, and each
is counted until its report is served, also when the local queue refuses one
(runtime/delivery_pump.py PumpedProducer, runtime/unreported.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from agentstream.clients import producer_config
from agentstream.errors import ConfigurationError
from agentstream.runtime.delivery_pump import PumpedProducer

from .harness import create_topics


def test_every_record_is_counted_until_its_report_is_served(bootstrap: str) -> None:
    topic = f"pumped-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic], partitions=2)
    # Room for two records only: the third produce is refused (BufferError), as under load.
    producer = PumpedProducer(producer_config(bootstrap, {"queue.buffering.max.messages": 2}))
    reports: list[tuple[KafkaError | None, Any]] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        reports.append((err, (msg.partition(), msg.key(), msg.value(), msg.timestamp()[1])))

    producer.produce(topic, b"first", b"a", 1, delivered)  # the callback positional, as outputs.py passes it
    producer.produce(topic, b"second", b"b", partition=0, on_delivery=delivered, timestamp=1_700_000_000_000,
                     headers=[("h", b"v")])
    with pytest.raises(BufferError):
        producer.produce(topic, b"refused", b"c", 0, delivered)
    assert producer.unreported.mark() == 2  # the refused record is not waited for
    deadline = time.monotonic() + 30
    while producer.unreported.before and time.monotonic() < deadline:
        producer.poll(0.1)
    assert producer.unreported.before == 0
    assert sorted(reports, key=lambda report: report[1][2]) == [
        (None, (1, b"a", b"first", pytest.approx(time.time() * 1000, abs=60_000))),
        (None, (0, b"b", b"second", 1_700_000_000_000)),
    ]


@pytest.mark.parametrize("setting", [{"delivery.report.only.error": True}, {"on_delivery": print}])
def test_a_setting_that_takes_reports_from_their_records_is_refused(bootstrap: str, setting: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="every record's own delivery report"):
        PumpedProducer(producer_config(bootstrap, setting))
