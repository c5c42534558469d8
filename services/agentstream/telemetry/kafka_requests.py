"""The requests a worker's Kafka clients send, counted from librdkafka's statistics.

Why: the requests a broker answers are not the records it stores. librdkafka sends one
ProduceRequest per partition (its issue #1700), so a worker writing to many partitions at a
low rate sends about one request per two or three records: paced at 250 tasks/s the
pipeline's three workers sent 7.7-11.5 Produce and 2.6-3.7 Fetch requests per task for the
~23 records a task writes, a burst 0.9-1.4 and 0.2-0.3 (bench/RESULTS.md "Session 46").
What an operator reads here: the request rate behind a broker's request quotas, its
handler threads and the clients' round trips. (Not what a paced task costs the broker:
a 10 ms linger took its requests down by a half and the broker's CPU did not fall.)

How: with ``AGENTSTREAM_KAFKA_STATS_S`` set, a worker processor's producer and consumer
emit librdkafka's statistics every that many seconds (``statistics.interval.ms``), served
where the client is polled; ``RequestCounter`` adds what each broker handle sent since the
last document to ``agentstream_kafka_requests_total``. librdkafka keeps a total per broker
handle, never reset on a reconnect; a handle it removed (a bootstrap address once the
brokers are known, a broker missing from the metadata) and makes again starts from 0, so a
handle missing from a document is forgotten. Its statistics leave out two request types
(ConsumerGroupHeartbeat, the KIP-848 heartbeat, and OffsetForLeaderEpoch). The processor's
group-less reader is not counted: it is polled only during a restore, and librdkafka
queues a document per interval until then. Off by default: each document is JSON of every
partition the client knows, made and read once per interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentstream import metrics
from agentstream.clients import STATISTICS_CALLBACK, STATISTICS_INTERVAL

log = logging.getLogger(__name__)

Count = Callable[[str, int], None]  # request type, requests sent since the last statistics


class RequestCounter:
    """librdkafka's statistics callback of one client: counts the requests each of its
    broker handles sent since the last document, by request type. It never raises (it runs
    inside the client's poll, where an error would stop the worker's intake)."""

    def __init__(self, count: Count) -> None:
        self._count = count
        self._seen: dict[str, dict[str, int]] = {}  # broker handle -> request type -> its last total

    def __call__(self, document: str) -> None:
        try:
            self._add_all(json.loads(document).get("brokers"))
        except (ValueError, AttributeError) as exc:
            log.warning("librdkafka statistics that are not a JSON object were ignored: %s", exc)
        except Exception:  # telemetry must not stop the worker
            log.exception("librdkafka statistics could not be counted")

    def _add_all(self, brokers: Any) -> None:
        if not isinstance(brokers, Mapping):
            return
        for gone in self._seen.keys() - brokers.keys():  # removed: made again, it counts from 0
            del self._seen[gone]
        for handle, broker in brokers.items():
            requests = broker.get("req") if isinstance(broker, Mapping) else None
            if isinstance(requests, Mapping):
                self._add(self._seen.setdefault(handle, {}), requests)

    def _add(self, seen: dict[str, int], requests: Mapping[str, Any]) -> None:
        for request, total in requests.items():
            if not isinstance(total, int):
                continue
            last = seen.get(request, 0)
            seen[request] = total
            sent = total - last if total >= last else total  # lower: a handle made again under its name
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
