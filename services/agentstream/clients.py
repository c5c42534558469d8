"""confluent-kafka client settings that suit both Apache Kafka and the embedded Tansu broker.

Why these values (measured on Tansu, harmless on Kafka):
- Tansu completes a group join in about half of ``session.timeout.ms``; 6 s keeps
  joins near 3 s while still tolerating a stalled process.
- Tansu holds a fetch for about half of ``fetch.wait.max.ms`` even when data is
  there, so on Tansu the group members' wait is short (20 ms) to bound per-hop latency;
  Apache Kafka answers a waiting fetch as soon as a record arrives, so there it is 500 ms
  and an idle member asks 2 times a second instead of 50 (``broker.fetch_wait_for``,
  bench/idle.py).
- Producers are idempotent with ``acks=all`` so a retried send never duplicates.
- A producer waits 2 ms (``linger.ms``) to batch records: under a burst, sending at once
  cost the workers ~12 % more CPU per task; at a low rate the wait adds up to 2 ms per
  acknowledged write, and a task makes ~7 in a row (``AGENTSTREAM_LINGER_MS=0`` for the
  lowest latency; bench/RESULTS.md "Session 13").
Every value can be overridden by the caller's configuration.

Security settings (SASL, SSL) come from the environment and are passed to librdkafka
unchanged: ``KAFKA_SECURITY_PROTOCOL=SASL_SSL``, ``KAFKA_SASL_MECHANISM=SCRAM-SHA-512``,
``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_CA_LOCATION`` … (see
``security_config``), so one set of variables configures every command and worker.

librdkafka's own log lines go to the Python logger ``librdkafka`` (served when a client
polls), at the level that logger allows: the CLI turns them off unless asked for
(``AGENTSTREAM_LOG_LEVEL=DEBUG`` or ``--verbose``); a worker shows warnings and errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from agentstream.settings import KAFKA_CLIENT_ENV_PREFIX, KAFKA_CLIENT_PASSTHROUGH

COMMON: dict[str, Any] = {
    "client.id": "agentstream",
    # Short metadata refresh so a freshly created topic is seen quickly.
    "topic.metadata.refresh.interval.ms": 10_000,
}

CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Range assignment keeps partition p of every co-partitioned input on one member.
    "partition.assignment.strategy": "range",
    "session.timeout.ms": 6_000,
    "heartbeat.interval.ms": 1_500,
    "max.poll.interval.ms": 300_000,
}

# fetch.wait.max.ms of a group member, by broker (see the module's docstring).
KAFKA_FETCH_WAIT_MS = 500  # librdkafka's default
TANSU_FETCH_WAIT_MS = 20

LINGER = "linger.ms"
DEFAULT_LINGER_MS = 2  # settings.LINGER_ENV overrides it per worker
# librdkafka's statistics: every this many ms, a JSON document to this callback (served where
# the client is polled); telemetry/kafka_requests.py counts the requests in it.
STATISTICS_INTERVAL = "statistics.interval.ms"
STATISTICS_CALLBACK = "stats_cb"

PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    LINGER: DEFAULT_LINGER_MS,
    "compression.type": "none",
    # murmur2, as the Java client and aiokafka (faust) use: a session keyed by any of them
    # lands on the same partition, which per-session order and dedupe rely on.
    "partitioner": "murmur2_random",
    # Producing to a missing topic fails instead of asking the broker to create it with its
    # default partition count (Tansu always would; Kafka where auto.create.topics.enable).
    "allow.auto.create.topics": False,
}


def security_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security properties from ``KAFKA_*`` variables (``KAFKA_SASL_USERNAME`` →
    ``sasl.username``); only names under security./sasl./ssl. are taken, values unchanged."""
    env = os.environ if environ is None else environ
    config: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(KAFKA_CLIENT_ENV_PREFIX):
            continue
        key = name[len(KAFKA_CLIENT_ENV_PREFIX):].lower().replace("_", ".")
        if key.startswith(KAFKA_CLIENT_PASSTHROUGH):
            config[key] = value
    return config


KAFKA_LOG = logging.getLogger("librdkafka")


def log_config() -> dict[str, Any]:
    """Route librdkafka's log to ``KAFKA_LOG``; at its syslog level, so lines the logger would
    drop are never even formatted."""
    level = KAFKA_LOG.getEffectiveLevel()
    if level > logging.CRITICAL:
        syslog = 0
    else:
        thresholds = ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3))
        syslog = next((value for limit, value in thresholds if level <= limit), 2)
    return {"logger": KAFKA_LOG, "log_level": syslog}


def _common(bootstrap: str) -> dict[str, Any]:
    return {**COMMON, **log_config(), **security_config(), "bootstrap.servers": bootstrap}


CLASSIC = "classic"
CONSUMER_PROTOCOL = "consumer"
GROUP_PROTOCOLS = (CLASSIC, CONSUMER_PROTOCOL)

# KIP-848 (group.protocol=consumer) moves these to the broker: the client rejects them.
_CLASSIC_ONLY = ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms")


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    protocol: str = CLASSIC,
    fetch_wait_ms: int = TANSU_FETCH_WAIT_MS,
    partition_eof: bool = False,
) -> dict[str, Any]:
    """Settings for a group member; ``fetch_wait_ms`` from ``broker.fetch_wait_for``.

    ``partition_eof``: librdkafka reports each time the member has taken a partition's
    every record (runtime/idle_partitions.py pauses idle partitions there).

    ``protocol="consumer"`` joins with KIP-848 (Apache Kafka 4 only): the broker assigns
    partitions with its range assignor, which keeps co-partitioned topics together, and
    owns the session timeout (``group.consumer.session.timeout.ms``).
    """
    config = {**_common(bootstrap), **CONSUMER, "group.id": group_id, "fetch.wait.max.ms": fetch_wait_ms,
              "enable.partition.eof": partition_eof}
    if protocol == CONSUMER_PROTOCOL:
        for key in _CLASSIC_ONLY:
            config.pop(key)
        config.update({"group.protocol": CONSUMER_PROTOCOL, "group.remote.assignor": "range"})
    elif protocol != CLASSIC:
        raise ValueError(f"Unknown group protocol {protocol!r}; use one of {', '.join(GROUP_PROTOCOLS)}.")
    return config


def producer_config(bootstrap: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings for an idempotent producer; ``overrides`` win over the defaults."""
    return {**_common(bootstrap), **PRODUCER, **(overrides or {})}


def reader_config(bootstrap: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings for a group-less reader (changelog restore, lag probes): assign() only.

    ``enable.partition.eof`` makes librdkafka report the end of a partition from the
    high watermark of a fetch response, which is right on Tansu where ListOffsets is not.
    """
    return {
        **_common(bootstrap),
        "group.id": "agentstream-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 20,
        **(overrides or {}),
    }


def admin_config(bootstrap: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings for the AdminClient."""
    return {**_common(bootstrap), **(overrides or {})}
