"""Helpers for integration tests that run real worker processes against a real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.clients import reader_config
from agentstream.errors import BrokerUnavailableError
from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.lag import consumer_lag, end_offsets, read_topic

REPO = Path(__file__).resolve().parents[2]


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 6, config: dict[str, str] | None = None) -> None:
    names = list(names)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1, config=config or {}) for n in names])
    for future in futures.values():
        future.result(30)
    # The controller has the topics now; a broker's metadata follows a moment later (longer on
    # a loaded machine: a worker started at once once found no such topic and exited).
    wait_for(lambda: _listed(admin, names, partitions), 30, f"topics {names} in the broker's metadata")


def _listed(admin: AdminClient, names: list[str], partitions: int) -> bool:
    topics = admin.list_topics(timeout=10).topics
    return all(name in topics and len(topics[name].partitions) == partitions for name in names)


def fill_compacted(bootstrap: str, topic: str, records: int) -> None:
    """Create the compacted ``topic`` and write ``records`` distinct keys across its 6 partitions
    (a changelog whose restore takes a while)."""
    from agentstream.clients import producer_config

    create_topics(bootstrap, [topic], config={"cleanup.policy": "compact"})
    producer = Producer(producer_config(bootstrap, {"linger.ms": 50, "batch.size": 1_000_000}))
    for i in range(records):
        while True:
            try:
                producer.produce(topic, b"1", f"k{i}".encode(), partition=i % 6)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


# What a condition that asks the broker may meet for a moment (a broker restarted or
# resumed, a request timed out on a busy machine): "not yet", asked again.
BROKER_ERRORS = (KafkaException, ProcessorError, BrokerUnavailableError)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll ``condition`` until true; return the seconds it took, or fail naming ``what``
    (and the last broker error the condition met, if it met one)."""
    started = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except BROKER_ERRORS as exc:
            last_error = exc
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"; the last broker error: {last_error}" if last_error else ""))
        time.sleep(interval)


class WorkerProcess:
    """A worker subprocess whose stderr lines are collected for waiting on log events."""

    def __init__(self, args: Sequence[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self._lock = threading.Lock()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=REPO
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._lock:
            return [line for line in self.lines if regex.search(line)]

    def wait_for_line(self, pattern: str, timeout: float = 60.0, after: int = 0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)  # the pump reads the last lines (to EOF) before we fail
                with self._lock:
                    if any(regex.search(line) for line in self.lines[after:]):
                        continue
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before logging {pattern!r}:\n{self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not log {pattern!r} within {timeout:.0f} s:\n{self.tail()}")

    def line_count(self) -> int:
        with self._lock:
            return len(self.lines)

    def tail(self, n: int = 40) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])

    def save_log(self, path: Path) -> None:
        """Every line so far to ``path``; from an exited process, its last lines too."""
        if self.proc.poll() is not None:
            self._reader.join(5)  # the pump ends at the output's end
        with self._lock:
            path.write_text("\n".join(self.lines) + "\n")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every record of ``topic`` up to its true end: (key, value, partition)."""
    return [(r.key, r.value, r.partition) for r in read_topic(bootstrap, topic, timeout)]


class TopicTail:
    """Every record of ``topic`` since the tail began, kept as it is read.

    ``read_all`` reads a topic from its log start each time: on a topic with a retention.ms of a
    few seconds the broker's retention check (every 5 min) may delete records between two reads,
    and a count made again at the end of a test came out short (test_dedupe_retention on CI).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[bytes | None, bytes | None, int]] = []
        self._at: dict[tuple[str, int], int] = {}  # next offset to read, from records and ends seen
        partitions = sorted({p for _, p in end_offsets(bootstrap, [topic])})
        self._consumer = Consumer(reader_config(bootstrap, {"group.id": f"tail-{uuid.uuid4().hex}"}))
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def read(self, timeout: float = 60.0) -> list[tuple[bytes | None, bytes | None, int]]:
        """The records so far, once every partition is read up to its end as of this call."""
        ends = {tp: end for tp, end in end_offsets(self.bootstrap, [self.topic]).items() if end > 0}
        deadline = time.monotonic() + timeout
        while any(self._at.get(tp, -1) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic} not read to its ends {ends} within {timeout:.0f} s (at {self._at})")
            for msg in self._consumer.consume(500, 0.2):
                self._take(msg)
        return self.records

    def _take(self, msg: Message) -> None:
        tp = (msg.topic(), msg.partition())
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"reading {self.topic}[{msg.partition()}] failed: {err}")
            self._at[tp] = msg.offset()  # the end a fetch reported, past any transaction marker
            return
        self.records.append((msg.key(), msg.value(), msg.partition()))
        self._at[tp] = msg.offset() + 1

    def close(self) -> None:
        self._consumer.close()


def latest_by_key(records: Iterable[tuple[bytes | None, bytes | None, int]]) -> dict[str, object]:
    """A compacted view of a changelog: the last value per key (tombstones drop the key)."""
    state: dict[str, object] = {}
    for key, value, _ in records:
        if key is None:
            continue
        if value is None:
            state.pop(key.decode(), None)
        else:
            state[key.decode()] = json.loads(value)
    return state


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(row.committed or 0 for row in consumer_lag(bootstrap, group, [topic]))


class EventFeeder:
    """Produces ``count`` events (key k<i % keys>, value = event id) at ``rate`` per second."""

    def __init__(self, bootstrap: str, topic: str, count: int, keys: int, rate: float, start: int = 0) -> None:
        self.bootstrap, self.topic, self.count, self.keys, self.rate, self.start = bootstrap, topic, count, keys, rate, start
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def key_of(self, event_id: int) -> str:
        return f"k{event_id % self.keys}"

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "enable.idempotence": True})
        began = time.monotonic()
        for i in range(self.start, self.start + self.count):
            producer.produce(self.topic, str(i).encode(), self.key_of(i))
            self.sent += 1
            if self.sent % 100 == 0:
                producer.poll(0)
                ahead = self.sent / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the offered load, not waiting for a condition
        producer.flush(60)

    def expected_counts(self) -> Counter[str]:
        return Counter(self.key_of(i) for i in range(self.start, self.start + self.count))


def read_table_dir(state_dir: Path, group: str, table: str) -> dict[str, object]:
    """Every key and value of a table's RocksDB stores left on disk by a stopped worker."""
    from agentstream.runtime.store import PartitionStore

    state: dict[str, object] = {}
    base = state_dir / group / table
    if not base.exists():
        return state
    for partition_dir in sorted(base.iterdir()):
        store = PartitionStore(partition_dir)
        try:
            for key, value in store.items():
                state[key.decode()] = json.loads(value)
        finally:
            store.close()
    return state


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a worker's metrics port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
