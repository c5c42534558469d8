"""An Apache Kafka 4 cluster (KRaft) of 1 or 3 nodes on loopback ports, one JVM per node.

Every node is a combined broker and controller with a static quorum, so a cluster needs
no ZooKeeper and no separate controller processes. The settings are those of a small
development cluster, each chosen on purpose (see ``node_properties``); ``broker_config``
overrides any of them. The cluster's layout (ports, pids) is written to
``<directory>/cluster.json`` so that ``agentstream kafka status|stop`` can find a cluster
started by another process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from agentstream.apache_kafka.jars import ensure_jars, kafka_version
from agentstream.errors import BrokerUnavailableError

log = logging.getLogger(__name__)

LAYOUT_FILE = "cluster.json"
HOST = "127.0.0.1"


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pid: int | None = None
    sasl_port: int | None = None  # a SASL_PLAINTEXT (PLAIN) listener, when the cluster has users

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and _pid_alive(self.pid)


def node_properties(
    node: KafkaNode, nodes: list[KafkaNode], overrides: Mapping[str, str], sasl_users: Mapping[str, str] | None = None
) -> dict[str, str]:
    """server.properties of one node; ``overrides`` win."""
    count = len(nodes)
    min_isr = str(min(2, count))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes),
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.data_dir),
        # Topics come from `agentstream topology apply` only, as on a production cluster: a
        # client that produces to a missing topic gets an error instead of a 1-partition topic.
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(count),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(count),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": str(count),
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": str(count),
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        # KIP-848 groups: the broker owns the session timeout (45 s by default, and its minimum).
        # A development cluster detects a dead member as fast as the classic protocol does.
        "group.consumer.min.session.timeout.ms": "6000",
        "group.consumer.session.timeout.ms": "6000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        "group.consumer.heartbeat.interval.ms": "1500",
        # The cleaner's 128 MB dedupe buffer is allocated at start and does not fit a small heap;
        # a 1 s backoff lets tests watch compaction happen.
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.backoff.ms": "1000",
        # A deleted topic's files stay open (one per partition, two memory maps) until this
        # delay passes (60 s by default): a development cluster whose topics come and go (the
        # integration tests delete each test's) would reach the open-files limit in between.
        "log.segment.delete.delay.ms": "1000",
        # Two cores: fewer threads than the defaults (3 network, 8 I/O) per node.
        "num.network.threads": "2",
        "num.io.threads": "2",
    }
    if sasl_users and node.sasl_port:
        props.update(_sasl_listener(node, sasl_users))
    props.update(overrides)
    return props


def _sasl_listener(node: KafkaNode, users: Mapping[str, str]) -> dict[str, str]:
    """A second client listener that takes SASL/PLAIN logins of ``users`` (for testing the
    security settings clients pass through); brokers still talk PLAINTEXT to each other."""
    accounts = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return {
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port},"
                     f"SASL_PLAINTEXT://{HOST}:{node.sasl_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port},SASL_PLAINTEXT://{HOST}:{node.sasl_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {accounts};",
    }


class KafkaCluster:
    """``nodes`` Apache Kafka nodes under ``directory``; ``start()`` formats and launches them."""

    def __init__(
        self,
        directory: Path,
        nodes: int = 1,
        *,
        heap_mb: int = 512,
        broker_config: Mapping[str, str] | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise BrokerUnavailableError(f"A Kafka cluster needs at least 1 node, not {nodes}.")
        self.directory = directory.resolve()
        self.heap_mb = heap_mb
        self.broker_config = dict(broker_config or {})
        self.sasl_users = dict(sasl_users or {})
        self.cluster_id = ""
        per_node = 3 if self.sasl_users else 2
        ports = _free_ports(per_node * nodes)
        self.nodes = [
            KafkaNode(i + 1, ports[per_node * i], ports[per_node * i + 1], self.directory / f"node-{i + 1}",
                      sasl_port=ports[per_node * i + 2] if self.sasl_users else None)
            for i in range(nodes)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listeners (a cluster started with ``sasl_users``)."""
        if not self.sasl_users:
            raise BrokerUnavailableError("This cluster was started without sasl_users: it has no SASL listener.")
        return ",".join(f"{HOST}:{node.sasl_port}" for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"No node {node_id}; the nodes are {[n.node_id for n in self.nodes]}.")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        libs = ensure_jars()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cluster_id = _java_output(libs, self.directory, "kafka.tools.StorageTool", "random-uuid").strip()
        for node in self.nodes:
            self._write_properties(node)
            _java_output(libs, node.directory, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                         "-c", str(node.directory / "server.properties"), "--ignore-formatted")
        for node in self.nodes:
            self._launch(node, libs)
        self.save()
        try:
            self.wait_ready(timeout)
        except BrokerUnavailableError:
            self.stop()
            raise
        log.info("Apache Kafka %s: %d node(s) on %s", kafka_version(), len(self.nodes), self.bootstrap)
        return self

    def resume(self, timeout: float = 120.0) -> KafkaCluster:
        """Start every node of a stopped cluster again on its data, ports and cluster id."""
        running = [n.node_id for n in self.nodes if n.alive()]
        if running:
            raise BrokerUnavailableError(f"Nodes {running} of {self.directory} are running already; "
                                         "`agentstream kafka stop` first, or use them as they are.")
        libs = ensure_jars()
        for node in self.nodes:
            self._launch(node, libs)
        self.save()
        self.wait_ready(timeout)
        return self

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again on its own data (no format)."""
        node = self.node(node_id)
        if node.alive():
            raise BrokerUnavailableError(f"Node {node_id} is still running (pid {node.pid}).")
        self._launch(node, ensure_jars())
        self.save()
        self.wait_ready(timeout)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no shutdown, no flush, as a crashed machine."""
        node = self.node(node_id)
        if node.pid is not None and node.alive():
            os.kill(node.pid, signal.SIGKILL)
            _wait_gone(node, 10.0)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (a controlled shutdown), SIGKILL what is left after ``timeout``."""
        for node in self.nodes:
            if node.pid is not None and node.alive():
                os.kill(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not _wait_gone(node, max(0.1, deadline - time.monotonic())) and node.pid is not None:
                os.kill(node.pid, signal.SIGKILL)
                _wait_gone(node, 10.0)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- readiness and roles -------------------------------------------------------------

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every live node is in the cluster's metadata, or raise with the log's tail."""
        from confluent_kafka.admin import AdminClient

        expected = {n.node_id for n in self.nodes if n.alive()}
        addresses = ",".join(n.address for n in self.nodes if n.alive())
        # The PLAINTEXT listeners, whatever KAFKA_SECURITY_* the environment sets for other clusters.
        admin = AdminClient({"bootstrap.servers": addresses, "log_level": 0})
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if n.node_id in expected and not n.alive()]
            if dead:
                raise BrokerUnavailableError(f"Kafka node {dead[0].node_id} exited during start-up:\n{_tail(dead[0].log_file)}")
            try:
                seen = {n.id for n in admin.describe_cluster(request_timeout=2).result().nodes}
            except Exception:  # KafkaException while the listeners are not up yet
                seen = set()
            if expected <= seen:
                return
            time.sleep(0.2)
        node = self.nodes[0]
        raise BrokerUnavailableError(
            f"Kafka nodes {sorted(expected - seen)} did not join within {timeout:.0f} s "
            f"(logs under {self.directory}):\n{_tail(node.log_file)}"
        )

    def active_controller(self) -> int:
        """The node id of the KRaft quorum's current leader, from a live node's quorum-state file."""
        for node in self.nodes:
            state = node.data_dir / "__cluster_metadata-0" / "quorum-state"
            if node.alive() and state.exists():
                leader = json.loads(state.read_text()).get("leaderId", -1)
                if leader > 0:
                    return int(leader)
        raise BrokerUnavailableError(f"No live node of {self.directory} knows the quorum leader yet.")

    # -- layout file ---------------------------------------------------------------------

    def save(self) -> None:
        layout = {
            "kafka_version": kafka_version(),
            "cluster_id": self.cluster_id,
            "bootstrap": self.bootstrap,
            "nodes": [{"node_id": n.node_id, "port": n.port, "controller_port": n.controller_port, "pid": n.pid}
                      for n in self.nodes],
        }
        (self.directory / LAYOUT_FILE).write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> KafkaCluster:
        """The cluster described by ``<directory>/cluster.json`` (started by another process)."""
        path = directory.resolve() / LAYOUT_FILE
        if not path.exists():
            raise BrokerUnavailableError(f"No Kafka cluster under {directory} ({LAYOUT_FILE} is missing); "
                                         "start one with `agentstream kafka start`.")
        layout = json.loads(path.read_text(encoding="utf-8"))
        cluster = cls.__new__(cls)
        cluster.directory = directory.resolve()
        cluster.heap_mb = 512
        cluster.broker_config = {}
        cluster.sasl_users = {}
        cluster.cluster_id = layout["cluster_id"]
        cluster.nodes = [KafkaNode(n["node_id"], n["port"], n["controller_port"],
                                   cluster.directory / f"node-{n['node_id']}", pid=n["pid"]) for n in layout["nodes"]]
        return cluster

    # -- internals -----------------------------------------------------------------------

    def _write_properties(self, node: KafkaNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        props = node_properties(node, self.nodes, self.broker_config, self.sasl_users)
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        (node.directory / "server.properties").write_text(text, encoding="utf-8")

    def _launch(self, node: KafkaNode, libs: Path) -> None:
        command = [*_java(libs, node.directory, self.heap_mb), "kafka.Kafka", str(node.directory / "server.properties")]
        with open(node.directory / "stdout.log", "ab") as out:
            # Its own session: a Ctrl-C in the terminal reaches our process, which stops the nodes in order.
            node.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node.pid = node.process.pid


def _java(libs: Path, log_dir: Path, heap_mb: int) -> list[str]:
    log_config = resources.files("agentstream.apache_kafka").joinpath("log4j2.properties")
    return [
        "java", f"-Xms{min(heap_mb, 256)}m", f"-Xmx{heap_mb}m",
        # The collector settings of Kafka's own start scripts.
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}", f"-Dkafka.logs.dir={log_dir}",
        "-cp", f"{libs}/*",
    ]


def _java_output(libs: Path, log_dir: Path, main: str, *args: str) -> str:
    command = [*_java(libs, log_dir, 256), main, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BrokerUnavailableError(f"`{main} {' '.join(args)}` failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = []
    try:
        for _ in range(count):  # held open together so no two are the same
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(node: KafkaNode, timeout: float) -> bool:
    if node.process is not None:
        try:
            node.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while node.pid is not None and _pid_alive(node.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} does not exist)"
