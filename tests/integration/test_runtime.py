"""The stream-processor runtime against a real broker, with real worker processes.

The counting worker (apps/counter_worker.py) adds one to counts[key] per record and
emits one output per record, so outputs count how often each event was processed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from agentstream.apache_kafka import KafkaCluster
from agentstream.broker import EmbeddedBroker, is_tansu
from agentstream.runtime import MessageContext, Processor
from agentstream.runtime.lag import consumer_lag

from .harness import (
    EventFeeder,
    WorkerProcess,
    committed_total,
    create_topics,
    fill_compacted,
    latest_by_key,
    read_all,
    read_table_dir,
    wait_for,
)

WORKER = "tests/integration/apps/counter_worker.py"
RESTORE_RECORDS = 600_000  # a restore of some seconds on either broker


def _worker(bootstrap: str, names: dict[str, str], state_dir: Path, label: str, *extra: str) -> WorkerProcess:
    args = [
        WORKER, "--bootstrap", bootstrap, "--input", names["in"], "--output", names["out"],
        "--group", names["group"], "--state-dir", str(state_dir), *extra,
    ]
    return WorkerProcess(args, label)


def _names(unique: str) -> dict[str, str]:
    return {"in": f"rt-in-{unique}", "out": f"rt-out-{unique}", "group": f"rt-{unique}"}


def _outputs(bootstrap: str, topic: str) -> tuple[Counter[str], Counter[int]]:
    per_key: Counter[str] = Counter()
    per_event: Counter[int] = Counter()
    for key, value, _ in read_all(bootstrap, topic):
        assert key is not None and value is not None
        per_key[key.decode()] += 1
        per_event[int(value)] += 1
    return per_key, per_event


def _fill_one_partition(bootstrap: str, topic: str, count: int) -> None:
    """A topic of one partition holding ``count`` records (values 0 .. count-1, one key)."""
    create_topics(bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in range(count):
        producer.produce(topic, str(n).encode(), b"k")
    assert producer.flush(30) == 0


def _assigned_count(worker: WorkerProcess) -> int:
    lines = worker.matching(r"counter: assigned ")
    return lines[-1].count("[") if lines else 0


def test_scaling_1_2_3_2_1_loses_nothing_and_rebalances_cheaply(bootstrap: str, unique: str, tmp_path: Path) -> None:
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    commit_interval = 5.0
    rate = 400.0
    feeder = EventFeeder(bootstrap, names["in"], count=20_000, keys=60, rate=rate)
    workers: list[WorkerProcess] = []

    def start(label: str) -> WorkerProcess:
        worker = _worker(bootstrap, names, tmp_path / label, label, "--commit-interval", str(commit_interval))
        workers.append(worker)
        return worker

    def progress_beyond(events: int) -> None:
        wait_for(lambda: committed_total(bootstrap, names["group"], names["in"]) >= events, 120, f"{events} committed")

    try:
        w1 = start("w1")
        w1.wait_for_line(r"counter: assigned ", 60)
        feeder.thread.start()
        progress_beyond(2_000)
        w2 = start("w2")
        w2.wait_for_line(r"counter: assigned ", 60)
        progress_beyond(5_000)
        w3 = start("w3")
        w3.wait_for_line(r"counter: assigned ", 60)
        progress_beyond(8_000)
        w3.terminate()
        assert w3.wait(60) == 0, w3.tail()
        wait_for(lambda: _assigned_count(w1) + _assigned_count(w2) == 6, 60, "w1+w2 to own all 6 partitions")
        progress_beyond(11_000)
        w2.terminate()
        assert w2.wait(60) == 0, w2.tail()
        wait_for(lambda: _assigned_count(w1) == 6, 60, "w1 to own all 6 partitions")
        feeder.thread.join(120)
        progress_beyond(20_000)
        w1.terminate()
        assert w1.wait(60) == 0, w1.tail()
    finally:
        for worker in workers:
            worker.stop()

    assert sum(row.lag for row in consumer_lag(bootstrap, names["group"], [names["in"]])) == 0
    per_key, per_event = _outputs(bootstrap, names["out"])
    missing = set(range(20_000)) - set(per_event)
    assert not missing, f"{len(missing)} events never processed, e.g. {sorted(missing)[:5]}"
    table = latest_by_key(read_all(bootstrap, f"{names['group']}.counts.changelog"))
    # Graceful rebalances: every processing of an event updated the table exactly once.
    assert table == dict(per_key)
    duplicates = sum(per_event.values()) - len(per_event)
    one_interval = rate * commit_interval
    print(f"\nscaling 1-2-3-2-1: 20000 events, {duplicates} reprocessed over 4 rebalances "
          f"(one commit interval = {one_interval:.0f} events)")
    assert duplicates < 0.1 * one_interval * 4, "commit on revocation should leave almost nothing to reprocess"


def test_kill9_of_one_of_two_workers_loses_nothing(bootstrap: str, unique: str, tmp_path: Path) -> None:
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    feeder = EventFeeder(bootstrap, names["in"], count=8_000, keys=40, rate=800.0)
    survivor = _worker(bootstrap, names, tmp_path / "survivor", "survivor")
    victim = _worker(bootstrap, names, tmp_path / "victim", "victim")
    try:
        wait_for(lambda: _assigned_count(survivor) + _assigned_count(victim) == 6 and _assigned_count(victim) > 0,
                 60, "both workers to share the 6 partitions")
        feeder.thread.start()
        wait_for(lambda: committed_total(bootstrap, names["group"], names["in"]) >= 2_500, 60, "2500 committed")
        mark = survivor.line_count()
        victim.kill()
        killed_at = time.monotonic()
        victim.wait(10)
        survivor.wait_for_line(r"counter: assigned (\S+\[\d\], ){5}\S+\[\d\]$", 60, after=mark)
        failover = time.monotonic() - killed_at
        feeder.thread.join(60)
        wait_for(lambda: committed_total(bootstrap, names["group"], names["in"]) >= 8_000, 90, "all committed")
        survivor.terminate()
        assert survivor.wait(60) == 0, survivor.tail()
    finally:
        survivor.stop()
        victim.stop()

    per_key, per_event = _outputs(bootstrap, names["out"])
    missing = set(range(8_000)) - set(per_event)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    changelog = latest_by_key(read_all(bootstrap, f"{names['group']}.counts.changelog"))
    restored = read_table_dir(tmp_path / "survivor", names["group"], "counts")
    assert restored == changelog, "the survivor's stores must equal the changelog"
    expected = feeder.expected_counts()
    for key, distinct in expected.items():
        # No update of a committed event is lost; reprocessed ones may count twice.
        assert distinct <= changelog[key] <= per_key[key], (key, distinct, changelog[key], per_key[key])
    duplicates = sum(per_event.values()) - len(per_event)
    print(f"\nkill -9 failover: {failover:.1f} s to reassignment, 0 lost, {duplicates} reprocessed")


def test_a_worker_killed_with_9_starts_again_on_its_own_state_and_equals_its_changelog(
    bootstrap: str, unique: str, tmp_path: Path,
) -> None:
    """A kill -9 leaves the stores as their last memtable flushes wrote them (no write-ahead
    log: runtime/store.py; a store a few seconds old may hold nothing, and restores in full).
    What is left must be the table as of the changelog offset recorded with it, so that the
    next start replays the changelog from there: the table ends equal to the changelog, and
    no event is lost. (A recorded offset ahead of its writes loses counts here: seen with the
    offset written apart from its batch and the writes' log off.)"""
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    feeder = EventFeeder(bootstrap, names["in"], count=6_000, keys=30, rate=1_500.0)
    state = tmp_path / "state"
    changelog_topic = f"{names['group']}.counts.changelog"
    victim = _worker(bootstrap, names, state, "victim", "--commit-interval", "0.5")
    again: WorkerProcess | None = None
    try:
        victim.wait_for_line(r"counter: assigned ", 60)
        feeder.thread.start()
        wait_for(lambda: committed_total(bootstrap, names["group"], names["in"]) >= 2_000, 60, "2000 committed")
        victim.kill()
        victim.wait(10)
        left = read_table_dir(state, names["group"], "counts")
        feeder.thread.join(60)
        again = _worker(bootstrap, names, state, "again")
        # Until everything is committed: the group may wait out the dead member's session
        # first (on Tansu an idle timeout of 4 s ended the new worker before its assignment).
        wait_for(lambda: committed_total(bootstrap, names["group"], names["in"]) >= 6_000, 120, "all committed")
        again.terminate()
        assert again.wait(60) == 0, again.tail()
        restored = int(again.wait_for_line("STOPPED").split("restored=")[1])
    finally:
        victim.stop()
        if again is not None:
            again.stop()

    changelog = latest_by_key(read_all(bootstrap, changelog_topic))
    assert read_table_dir(state, names["group"], "counts") == changelog, "the stores must equal the changelog"
    per_key, per_event = _outputs(bootstrap, names["out"])
    missing = set(range(6_000)) - set(per_event)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    for key, distinct in feeder.expected_counts().items():
        # Each processing of an event counts once; events after the last commit are processed again.
        assert distinct <= changelog[key] <= per_key[key], (key, distinct, changelog[key], per_key[key])
    print(f"\nkill -9 and a start on the same state: {len(left)} keys left on disk, {restored} changelog records "
          f"replayed, {sum(per_event.values()) - len(per_event)} events reprocessed")


def test_restart_with_state_kept_and_wiped_gives_same_table(bootstrap: str, unique: str, tmp_path: Path) -> None:
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    feeder = EventFeeder(bootstrap, names["in"], count=3_000, keys=25, rate=1e9)
    feeder.thread.start()
    feeder.thread.join(60)
    state = tmp_path / "state"

    def run_once() -> WorkerProcess:
        worker = _worker(bootstrap, names, state, "restart", "--idle-timeout", "4")
        assert worker.wait(120) == 0, worker.tail()
        return worker

    first = run_once()
    assert read_table_dir(state, names["group"], "counts") == dict(feeder.expected_counts())
    assert "restored=0" in first.wait_for_line("STOPPED")

    kept = run_once()
    assert read_table_dir(state, names["group"], "counts") == dict(feeder.expected_counts())
    assert "restored=0" in kept.wait_for_line("STOPPED"), "a kept state directory needs no replay"

    shutil.rmtree(state)
    wiped = run_once()
    assert read_table_dir(state, names["group"], "counts") == dict(feeder.expected_counts())
    restored = int(wiped.wait_for_line("STOPPED").split("restored=")[1])
    assert restored >= 25, "a wiped state directory is rebuilt from the changelog"


def test_a_store_ahead_of_its_changelog_is_wiped_and_restored(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A state directory from another cluster (or a recreated changelog) must not be merged
    with the changelog it finds: its recorded offsets are beyond that changelog's end."""
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    old = EventFeeder(bootstrap, names["in"], count=2_000, keys=20, rate=1e9)
    old.thread.start()
    old.thread.join(60)
    state = tmp_path / "state"
    first = _worker(bootstrap, names, state, "old", "--idle-timeout", "4")
    assert first.wait(120) == 0, first.tail()

    # The same stores, now facing a new group whose changelog and input are fresh and short,
    # as after `agentstream dev` on a new embedded broker or a rebuilt cluster.
    fresh = _names(f"{unique}b")
    create_topics(bootstrap, [fresh["in"], fresh["out"]])
    shutil.copytree(state / names["group"], state / fresh["group"])
    new = EventFeeder(bootstrap, fresh["in"], count=60, keys=20, rate=1e9)
    new.thread.start()
    new.thread.join(60)
    second = _worker(bootstrap, fresh, state, "new", "--idle-timeout", "4")
    assert second.wait(120) == 0, second.tail()
    assert second.matching("wiping the store and restoring it from the changelog"), second.tail()
    assert read_table_dir(state, fresh["group"], "counts") == dict(new.expected_counts()), \
        "the stale counts must be gone, not added to"


def test_a_stop_request_interrupts_a_restore(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """SIGTERM while a worker restores a long changelog: it stops within seconds and exits 0
    (it used to read to the end first, and an orchestrator's grace period ran out)."""
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    fill_compacted(bootstrap, f"{names['group']}.counts.changelog", RESTORE_RECORDS)

    worker = _worker(bootstrap, names, tmp_path / "state", "restore")
    worker.wait_for_line(r"restoring 6 changelog partition\(s\)", timeout=90)
    began = time.monotonic()
    worker.terminate()
    assert worker.wait(60) == 0, worker.tail()
    stopped_in = time.monotonic() - began
    assert worker.matching(r"counter: stopping: restore of \d+ changelog partition\(s\) stopped after \d+ records"), \
        worker.tail()
    assert stopped_in < 10, f"took {stopped_in:.1f} s to stop"
    print(f"\nstop during a restore of {RESTORE_RECORDS} records: exited 0 after {stopped_in:.1f} s")


def test_unacknowledged_changelog_write_is_never_committed(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Freeze a private broker of the session's kind (SIGSTOP) so the shutdown checkpoint's
    changelog writes time out."""
    if is_tansu(bootstrap):
        with EmbeddedBroker() as broker:
            assert broker.process is not None
            _check_unacknowledged_write(broker.bootstrap, broker.process.pid, unique, tmp_path)
        return
    with KafkaCluster(tmp_path / "kafka") as cluster:
        assert cluster.nodes[0].pid is not None
        _check_unacknowledged_write(cluster.bootstrap, cluster.nodes[0].pid, unique, tmp_path)


def _check_unacknowledged_write(bootstrap: str, broker_pid: int, unique: str, tmp_path: Path) -> None:
    names = _names(unique)
    create_topics(bootstrap, [names["in"], names["out"]])
    first = EventFeeder(bootstrap, names["in"], count=600, keys=10, rate=1e9)
    first.thread.start()
    first.thread.join(30)
    worker = _worker(bootstrap, names, tmp_path / "state", "fault",
                     "--commit-interval", "3600", "--message-timeout-ms", "1500")
    try:
        worker.wait_for_line(r"counter: assigned ", 60)
        wait_for(lambda: len(read_all(bootstrap, names["out"])) >= 600, 60, "600 outputs")
        committed_before = committed_total(bootstrap, names["group"], names["in"])
        assert committed_before == 0, "with an hour-long commit interval nothing is committed yet"
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            worker.terminate()  # the shutdown checkpoint now cannot be acknowledged
            code = worker.wait(60)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
    finally:
        worker.stop()
    assert code != 0, worker.tail()
    assert worker.matching("not committing source offsets"), worker.tail()
    assert committed_total(bootstrap, names["group"], names["in"]) == 0, "no offset may cover an unacknowledged write"

    # A restarted worker processes the uncommitted records again: nothing is lost. Until
    # all is committed, not an idle timeout: the frozen broker may not have seen the first
    # worker leave, and the group waits out its session before it assigns anything.
    again = _worker(bootstrap, names, tmp_path / "state", "again")
    try:
        wait_for(lambda: again.proc.poll() is not None or committed_total(bootstrap, names["group"], names["in"]) >= 600,
                 120, "all 600 committed or the worker gone")
        assert again.proc.poll() is None, again.tail()
        again.terminate()
        assert again.wait(60) == 0, again.tail()
    finally:
        again.stop()
    table = latest_by_key(read_all(bootstrap, f"{names['group']}.counts.changelog"))
    for key, distinct in first.expected_counts().items():
        assert table[key] >= distinct, (key, table[key], distinct)


def test_a_write_through_record_whose_writer_was_cancelled_is_stored_as_it_lands(
    bootstrap: str, unique: str, tmp_path: Path,
) -> None:
    """A run stopped at its wall-clock limit while its step record was on its way: the
    loop's timeout cancels the write, but the record lands in the changelog all the same, so
    the store must hold it. It used to be left out while the partition's later writes were
    stored, so the store's offset passed a record it lacked and no restart restored it: after
    a kill -9 before the run's end write, a resume would not find the step (a side-effecting
    tool's result among them: the tool would run again)."""
    topic, group = f"cut-in-{unique}", f"cut-{unique}"
    _fill_one_partition(bootstrap, topic, 20)
    app = Processor("cut", bootstrap, group, tmp_path / "state")
    steps = app.table("steps")
    cancelled: list[bool] = []

    @app.handler(topic)
    async def step(value: bytes, ctx: MessageContext) -> None:
        n = int(value)
        write = asyncio.ensure_future(app.persist(steps, f"cut/{n}", n))
        await asyncio.sleep(0)  # the write runs up to its produce() and awaits the acknowledgement
        write.cancel()  # as the run's asyncio.timeout does
        await asyncio.gather(write, return_exceptions=True)
        cancelled.append(write.cancelled())
        await app.persist(steps, f"kept/{n}", n)  # a later write of the partition, stored after it

    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        wait_for(lambda: len(cancelled) == 20, 60, "20 records handled")
    finally:
        app.stop()
        runner.join(60)
    assert not runner.is_alive()
    assert cancelled == [True] * 20, "every cut write must have been cancelled before its acknowledgement"
    changelog = latest_by_key(read_all(bootstrap, f"{group}.steps.changelog"))
    assert sorted(k for k in changelog if k.startswith("cut/")) == sorted(f"cut/{n}" for n in range(20)), \
        "the cancelled writes were produced and landed"
    assert read_table_dir(tmp_path / "state", group, "steps") == changelog, "the store must equal its changelog"


def test_max_inflight_caps_spawned_work_within_a_fetched_batch(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """40 records on one partition come back in a fetch or a few; with max_inflight 3 no more than
    3 of their spawned loops may run at once, and all 40 still run."""
    topic = f"cap-in-{unique}"
    _fill_one_partition(bootstrap, topic, 40)
    app = Processor("cap", bootstrap, f"cap-{unique}", tmp_path / "state", max_inflight=3)
    running, peak, done = [0], [0], [0]
    gates: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # opened by the test once the cap is reached

    async def loop(gate: asyncio.Event) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await gate.wait()
        running[0] -= 1
        done[0] += 1

    @app.handler(topic)
    async def start(value: bytes, ctx: MessageContext) -> None:
        if not gates:
            gates.append((asyncio.get_running_loop(), asyncio.Event()))
        app.spawn(loop(gates[0][1]))

    def open_gate() -> None:
        if gates:
            gates[0][0].call_soon_threadsafe(gates[0][1].set)

    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        wait_for(lambda: running[0] >= 3, 60, "three loops running")
        open_gate()
        wait_for(lambda: done[0] == 40, 60, "all 40 loops to finish")
    finally:
        open_gate()
        app.stop()
        runner.join(60)
    assert peak[0] == 3, f"{peak[0]} loops ran at once"
    assert not runner.is_alive() and not app._loop_lag.running  # run() ended and stopped its loop-lag timer


def test_commits_go_on_while_every_slot_is_taken_through_a_fetched_batch(
    bootstrap: str, unique: str, tmp_path: Path,
) -> None:
    """30 records fetched in a batch, one loop at a time (max_inflight 1), each loop held until
    the test lets it end: the offsets of the finished loops are committed while the rest of the
    batch still waits for the slot, not once the whole batch is through (with long model calls
    and a backlog, that was one commit per batch: tens of seconds instead of commit_interval)."""
    topic, group = f"slots-in-{unique}", f"slots-{unique}"
    _fill_one_partition(bootstrap, topic, 30)
    app = Processor("slots", bootstrap, group, tmp_path / "state", max_inflight=1, commit_interval=0.2)
    started: list[int] = []
    gates: dict[int, asyncio.Event] = {}
    loop_of: list[asyncio.AbstractEventLoop] = []

    async def held(n: int) -> None:
        await gates[n].wait()

    @app.handler(topic)
    async def start(value: bytes, ctx: MessageContext) -> None:
        loop_of[:] = [asyncio.get_running_loop()]
        gates[ctx.offset] = asyncio.Event()
        started.append(ctx.offset)
        app.spawn(held(ctx.offset))

    def let_end(offset: int) -> None:
        if not loop_of[0].is_closed():  # else run() has ended: its own failure is the one to see
            loop_of[0].call_soon_threadsafe(gates[offset].set)

    batches: list[list[int]] = []  # the offsets of each fetched batch
    poll_batch = app._poll_batch

    def recording_poll_batch() -> list[Any]:
        batch = poll_batch()
        if batch:
            batches.append([msg.offset() for msg in batch if msg.error() is None])
        return batch

    app._poll_batch = recording_poll_batch  # type: ignore[method-assign]
    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        for offset in range(3):  # three loops end, one after the other
            wait_for(lambda: offset in started, 60, f"the loop of offset {offset} to start")
            let_end(offset)
        wait_for(lambda: 3 in started, 60, "the loop of offset 3 to start")
        wait_for(lambda: committed_total(bootstrap, group, topic) == 3, 30,
                 "offsets 0-2 committed while offset 3 holds the slot")
        assert started == [0, 1, 2, 3]  # the rest of the batch is still waiting for the slot
        # What makes it a commit in the middle of a batch: offset 4 came in offset 3's batch.
        assert any(3 in batch and 4 in batch for batch in batches), f"fetched as {batches}"
        for offset in range(3, 30):
            wait_for(lambda: offset in started, 60, f"the loop of offset {offset} to start")
            let_end(offset)
        wait_for(lambda: committed_total(bootstrap, group, topic) == 30, 30, "every offset committed")
    finally:
        for offset in list(gates):
            let_end(offset)
        app.stop()
        runner.join(60)
    assert not runner.is_alive()
