"""Retention of the dedupe tables on a real broker, with the router running in-process.

A short ``dedupe.retention_s`` (with input topics of the same retention, as the loader
demands) makes routed task ids expire: they leave the store, the changelog gets their
tombstones, and a task id submitted again after that is routed again, while a duplicate
submitted before it is still ignored. A longer run prints the keys and RocksDB bytes of
the dedupe table over time: they stay flat instead of growing with the tasks.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from agentstream.client import Submitter, new_task
from agentstream.events import ROUTED_TASK, TASK_RESULT, task_result
from agentstream.router.app import build_router
from agentstream.runtime import MessageContext, Processor
from agentstream.runtime.expiry import stamp_now, timestamp_value
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.topology import DEFAULT_PATH, Topology, load_topology
from agentstream.topology_admin import apply
from tests import support_desk

from .harness import TopicTail, create_topics, read_all, read_table_dir, wait_for

SPECIALIST = "billing"


def _short_topology(tmp_path: Path, prefix: str, retention_s: int) -> Topology:
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["dedupe"] = {"retention_s": retention_s}
    for logical in ("tasks", "specialist.{type}", "supervisor"):
        raw["topics"][logical]["retention.ms"] = retention_s * 1000
    path = support_desk.copy_app(tmp_path)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    topology = load_topology(path, prefix=prefix)
    assert topology.dedupe.retention_s == retention_s
    return topology


class RouterThread:
    """The router's processor on its own event loop; ``sample`` runs on that loop too."""

    def __init__(self, bootstrap: str, topology: Topology, state_dir: Path) -> None:
        settings = WorkerSettings(bootstrap=bootstrap, state_dir=state_dir, commit_interval_s=0.5)
        self.service: Service = build_router(settings, topology, SchemaSet.load())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.samples: list[tuple[float, int, int, int]] = []  # (seconds, keys, RocksDB bytes, of which WAL)
        self._sample_every = 0.0

    def start(self, sample_every: float = 0.0) -> RouterThread:
        self._sample_every = sample_every
        self.thread.start()
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        sampler = asyncio.create_task(self._sample()) if self._sample_every else None
        try:
            await self.service.processor.run()
        finally:
            if sampler is not None:
                sampler.cancel()

    async def _sample(self) -> None:
        began = time.monotonic()
        table = self.service.processor.tables["dedupe"]
        while True:
            await asyncio.sleep(self._sample_every)
            keys = sum(1 for store in list(table.stores.values()) for _ in store.items())
            size = sum(_dir_bytes(store.path) for store in list(table.stores.values()))
            wal = sum(_dir_bytes(store.path, ".log") for store in list(table.stores.values()))
            self.samples.append((time.monotonic() - began, keys, size, wal))

    def stop(self) -> None:
        self.service.processor.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the router did not stop"


def _dir_bytes(path: Path, suffix: str = "") -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name.endswith(suffix))


def _routed(tail: TopicTail, schemas: SchemaSet) -> Counter[str]:
    """How often each task id was routed, from a tail of the specialist's topic (its records
    have the short retention too: a read from the log start could miss deleted ones)."""
    return Counter(schemas.decode_as(ROUTED_TASK, value)["task_id"] for _, value, _ in tail.read() if value)


def _submit(submitter: Submitter, *task_ids: str) -> None:
    for task_id in task_ids:
        submitter.submit(new_task("where is my invoice", f"s-{task_id}", task_id=task_id, requested_agent=SPECIALIST))
    submitter.flush()


def _publish_result(bootstrap: str, topology: Topology, schemas: SchemaSet, task_id: str) -> None:
    task = new_task("where is my invoice", f"s-{task_id}", task_id=task_id)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    result = task_result(task, "COMPLETED", output="answered", agents=[SPECIALIST])
    producer.produce(topology.topic("results"), schemas.encode(TASK_RESULT, result), task["session_id"])
    assert producer.flush(30) == 0


def _session_idle(router: RouterThread, session: str) -> bool:
    """Whether the router's record of ``session`` has no open task (read beside it)."""
    table = router.service.processor.tables["sessions"]
    for store in list(table.stores.values()):
        raw = store.get(session.encode())
        if raw is not None:
            return table.decode_value(raw)["open"] is None
    return False


def _setup(bootstrap: str, tmp_path: Path, unique: str, retention_s: int) -> tuple[Topology, SchemaSet, Submitter]:
    topology = _short_topology(tmp_path, f"ttl{unique}", retention_s)
    apply(AdminClient({"bootstrap.servers": bootstrap}), topology)
    schemas = SchemaSet.load()
    return topology, schemas, Submitter(bootstrap, topology, schemas)


def _until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    return wait_for(condition, timeout, what, interval=0.5)


def test_expired_task_ids_are_tombstoned_and_routed_again(bootstrap: str, tmp_path: Path, unique: str) -> None:
    topology, schemas, submitter = _setup(bootstrap, tmp_path, unique, retention_s=3)
    changelog = topology.changelog_topic("router", "dedupe")
    router = RouterThread(bootstrap, topology, tmp_path / "state").start()
    routed = TopicTail(bootstrap, topology.specialist_topic(SPECIALIST))
    try:
        _submit(submitter, "old", "dup", "dup")  # the second "dup" is within the retention
        _until(lambda: _routed(routed, schemas) == Counter({"old": 1, "dup": 1}), 60, "both tasks routed once")

        def tombstoned() -> bool:
            return {key.decode() for key, value, _ in read_all(bootstrap, changelog) if key and value is None} >= {"old", "dup"}

        took = _until(tombstoned, 60, "tombstones of both task ids in the changelog")
        print(f"\ndedupe entries tombstoned {took:.1f} s after routing (retention 3 s)")
        # Its result, as the supervisor would publish it: "old" is no longer its session's
        # open task, so the session gate lets a new task in (one of a session at a time).
        _publish_result(bootstrap, topology, schemas, "old")
        _until(lambda: _session_idle(router, "s-old"), 60, "the session of 'old' to close")
        _submit(submitter, "old")  # after its expiry: a new task as far as the router knows
        _until(lambda: _routed(routed, schemas)["old"] == 2, 60, "the expired task id routed again")
        assert router.service.processor.stats.expired >= 2
    finally:
        router.stop()
    try:
        assert _routed(routed, schemas) == Counter({"old": 2, "dup": 1})
    finally:
        routed.close()
    stored = read_table_dir(tmp_path / "state" / "router", topology.group("router"), "dedupe")
    assert "dup" not in stored  # expired and deleted from RocksDB
    assert set(stored) <= {"old"}  # only the re-routed id may still be young enough


def test_dedupe_table_stays_flat_over_a_long_run(bootstrap: str, tmp_path: Path, unique: str) -> None:
    """Tasks at a steady rate for several retentions: keys and bytes level off.

    AGENTSTREAM_TTL_TASKS / AGENTSTREAM_TTL_SECONDS size the run (default 600 tasks over
    30 s with a 5 s retention; the README figure: 2000 over 120 s with 10 s)."""
    tasks = int(os.environ.get("AGENTSTREAM_TTL_TASKS", "600"))
    seconds = float(os.environ.get("AGENTSTREAM_TTL_SECONDS", "30"))
    retention_s = int(os.environ.get("AGENTSTREAM_TTL_RETENTION_S", "5"))
    topology, schemas, submitter = _setup(bootstrap, tmp_path, unique, retention_s)
    router = RouterThread(bootstrap, topology, tmp_path / "state").start(sample_every=max(1.0, seconds / 12))
    routed = TopicTail(bootstrap, topology.specialist_topic(SPECIALIST))
    try:
        began = time.monotonic()
        for i in range(tasks):
            _submit(submitter, f"t{i:06d}")
            ahead = (i + 1) * seconds / tasks - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)  # pacing the offered load
        _until(lambda: sum(_routed(routed, schemas).values()) >= tasks, 120, "every task routed")
        # Without input the table empties out: expiry passes delete what is older than a retention.
        _until(lambda: bool(router.samples) and router.samples[-1][1] < tasks / 4, 2 * retention_s + 60,
               "the dedupe table to empty out once the input stopped")
    finally:
        router.stop()
        routed.close()
    rate = tasks / seconds
    print(f"\n{tasks} tasks over {seconds:.0f} s ({rate:.1f}/s), dedupe retention {retention_s} s; "
          f"expired {router.service.processor.stats.expired}")
    # RocksDB keeps puts and deletes in the memtable until it is flushed (no write-ahead log:
    # runtime/store.py; the WAL column shows any there would be); the bytes are SST files and metadata.
    print("   t(s)   keys   RocksDB bytes   of which WAL")
    for at, keys, size, wal in router.samples:
        print(f"{at:7.1f} {keys:6d} {size:15,d} {wal:14,d}")
    # Judged from two retentions after the router routed its first task: ids are stamped when
    # the router handles them, so the backlog of a slow first group join (7 s once, on a busy
    # CI machine: 201 keys at 10 s) is stamped at once and expires a retention after that.
    began_routing = next((at for at, keys, _, _ in router.samples if keys > 0), seconds)
    steady = [keys for at, keys, _, _ in router.samples if began_routing + retention_s * 2 < at <= seconds]
    # Live keys are about rate x (retention + the pass interval and a checkpoint), never the total.
    bound = rate * (retention_s + 3)
    assert steady and max(steady) <= bound, f"keys {steady} above {bound:.0f}"
    assert router.samples[-1][1] < tasks / 4


def test_write_through_entries_expire_through_the_changelog(bootstrap: str, tmp_path: Path, unique: str) -> None:
    """The path the supervisor markers and specialist done markers take: entries written
    with persist() are deleted with persist(), and an untimed old entry is stamped first."""
    topic, group = f"wt-in-{unique}", f"wt-{unique}"
    create_topics(bootstrap, [topic], partitions=2)
    create_topics(bootstrap, [f"{group}.marks.changelog"], partitions=2, config={"cleanup.policy": "compact"})
    app = Processor("wt", bootstrap, group, tmp_path / "state", commit_interval=0.5)
    marks = app.table("marks")
    app.expire(marks, 2, timestamp_value, stamp=stamp_now, prefix=b"d/", write_through=True)

    @app.handler(topic)
    async def mark(value: bytes, ctx: MessageContext) -> None:
        # "legacy" has no time (a value from before retention); "keep/" is outside the prefix.
        await app.persist(marks, f"d/{ctx.key_str}", True if ctx.key_str == "legacy" else int(time.time() * 1000))
        await app.persist(marks, f"keep/{ctx.key_str}", 1)

    producer = Producer({"bootstrap.servers": bootstrap})
    for key in ("a", "legacy"):
        producer.produce(topic, b"x", key)
    producer.flush(30)
    changelog = marks.changelog_topic
    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        def tombstoned() -> bool:
            return {key.decode() for key, value, _ in read_all(bootstrap, changelog) if key and value is None} >= {"d/a", "d/legacy"}

        _until(tombstoned, 60, "tombstones of d/a and of d/legacy (stamped, then expired)")
    finally:
        app.stop()
        runner.join(60)
    values = [(key.decode(), value) for key, value, _ in read_all(bootstrap, changelog) if key]
    legacy = [value for key, value in values if key == "d/legacy"]
    assert legacy[0] == b"true" and legacy[1] is not None and legacy[1] != b"true" and legacy[-1] is None
    assert app.stats.expired == 2
    stored = read_table_dir(tmp_path / "state", group, "marks")
    assert stored == {"keep/a": 1, "keep/legacy": 1}
