"""The requests a worker's Kafka clients send, counted from librdkafka's statistics.

Why: the requests a broker answers are not the records it stores. librdkafka sends one
ProduceRequest per partition (its issue #1700), so a worker writing to many partitions at a
low rate sends a request for most of its records: paced at 250 tasks/s the pipeline's three
workers sent about 8 Produce and 3 Fetch requests per task, a burst about 1.4 and 0.3, for
the same 23 records (bench/RESULTS.md "Session 46"). A deployment sizing its brokers, and
the pipeline benchmark, read the counts here. (They are not what a paced task costs the
broker: a longer linger halved them there and the broker's CPU did not fall.)

How: with ``AGENTSTREAM_KAFKA_STATS_S`` set, each client of a worker's processor emits
librdkafka's statistics every that many seconds (``statistics.interval.ms``), served where
the client is polled; ``RequestCounter`` adds what each broker connection sent since the
last ones to ``agentstream_kafka_requests_total``. librdkafka's counts are totals per
connection: a count lower than the last (a connection made anew) starts over from it.
Off by default: the statistics are a JSON document of every partition a client knows, made
and read once per interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentstream import metrics

log = logging.getLogger(__name__)

STATISTICS_INTERVAL = "statistics.interval.ms"
STATISTICS_CALLBACK = "stats_cb"

Count = Callable[[str, int], None]  # request type, requests sent since the last statistics


class RequestCounter:
    """librdkafka's statistics callback of one client: counts the requests each of its
    broker connections sent since the last statistics, by request type."""

    def __init__(self, count: Count) -> None:
        self._count = count
        self._seen: dict[tuple[str, str], int] = {}  # (connection, request type) -> its last total

    def __call__(self, document: str) -> None:
        try:
            brokers = json.loads(document).get("brokers")
        except (ValueError, AttributeError) as exc:
            log.warning("librdkafka statistics that are not a JSON object were ignored: %s", exc)
            return
        if not isinstance(brokers, Mapping):
            return
        for connection, broker in brokers.items():
            self._add(connection, broker.get("req") if isinstance(broker, Mapping) else None)

    def _add(self, connection: str, requests: Any) -> None:
        if not isinstance(requests, Mapping):
            return
        for request, total in requests.items():
            if not isinstance(total, int):
                continue
            last = self._seen.get((connection, request), 0)
            self._seen[(connection, request)] = total
            sent = total - last if total >= last else total  # lower: a connection made anew counts from 0
            if sent > 0:
                self._count(request, sent)


def counting(worker: str, client: str) -> Count:
    """What a client's RequestCounter counts into: ``agentstream_kafka_requests_total``."""
    family = metrics.kafka_requests()
    return lambda request, sent: family.labels(worker, client, request).inc(sent)


def with_statistics(config: dict[str, Any], interval_s: int, worker: str, client: str) -> dict[str, Any]:
    """``config`` with librdkafka's statistics every ``interval_s`` seconds counted into the
    worker's request counts; unchanged when ``interval_s`` is 0."""
    if interval_s <= 0:
        return config
    return {**config, STATISTICS_INTERVAL: interval_s * 1000, STATISTICS_CALLBACK: RequestCounter(counting(worker, client))}
