"""Changelog compaction on Apache Kafka: the broker's cleaner really runs on our changelogs,
tombstoned keys disappear, and a fresh worker restored from the compacted changelog has
the same state as the worker that wrote it.

Tansu neither compacts nor deletes, so this runs on Apache Kafka only (``kafka_bootstrap``
starts one when the session's broker is Tansu).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agentstream.runtime.lag import end_offsets

from .harness import WorkerProcess, create_topics, read_all, read_table_dir, wait_for

pytestmark = pytest.mark.kafka_only

WORKER = "tests/integration/apps/counter_worker.py"
# Segments roll after 1 s, any dirty record makes a segment cleanable, and tombstones are kept
# 1 s after a cleaning: the cleaner's effect shows within seconds (the broker's
# log.cleaner.backoff.ms is 1 s on the clusters agentstream starts).
FAST_CLEANING = {
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1000",
}
KEYS = 20
UPDATES_PER_KEY = 40


def _worker(bootstrap: str, topic_in: str, group: str, state_dir: Path, label: str) -> WorkerProcess:
    config = [arg for key, value in FAST_CLEANING.items() for arg in ("--changelog-config", f"{key}={value}")]
    return WorkerProcess([WORKER, "--bootstrap", bootstrap, "--input", topic_in, "--output", f"{topic_in}.out",
                          "--group", group, "--state-dir", str(state_dir), "--commit-interval", "0.2", *config], label)


def _keys_in(changelog: list[tuple[bytes | None, bytes | None, int]]) -> Counter[str]:
    return Counter(key.decode() for key, _, _ in changelog if key is not None)


def test_changelog_is_compacted_and_a_fresh_worker_restores_the_same_state(kafka_bootstrap: str, unique: str,
                                                                          tmp_path: Path) -> None:
    bootstrap = kafka_bootstrap
    topic_in, group = f"cp-in-{unique}", f"cp-{unique}"
    changelog = f"{group}.counts.changelog"
    create_topics(bootstrap, [topic_in, f"{topic_in}.out"], partitions=1)
    writer = _worker(bootstrap, topic_in, group, tmp_path / "w1", "w1")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    deleted = {f"k{i}" for i in range(0, KEYS, 2)}  # every other key ends as a tombstone
    try:
        writer.wait_for_line(r"counter: assigned ", 60)
        # One update per key per round, flushed and given time to be checkpointed, so the
        # changelog gets one record per key per round: many versions of every key.
        for _ in range(UPDATES_PER_KEY):
            for i in range(KEYS):
                producer.produce(topic_in, b"1", f"k{i}".encode())
            producer.flush(30)
            time.sleep(0.25)  # pacing: spread the updates over several checkpoints and segments
        for key in sorted(deleted):
            producer.produce(topic_in, b"delete", key.encode())
        producer.flush(30)
        processed = KEYS * UPDATES_PER_KEY + len(deleted)  # one output per input
        wait_for(lambda: sum(end_offsets(bootstrap, [f"{topic_in}.out"]).values()) >= processed, 60,
                 "every input processed")
        written = end_offsets(bootstrap, [changelog])[(changelog, 0)]

        def compacted() -> bool:
            # Records only roll a segment when they arrive after segment.ms: a filler key keeps
            # closing segments so the last updates and the tombstones become cleanable.
            producer.produce(topic_in, b"1", b"filler")
            producer.flush(30)
            keys = _keys_in(read_all(bootstrap, changelog))
            repeated = {k: n for k, n in keys.items() if k != "filler" and n > 1}
            return not repeated and not (deleted & set(keys))

        seconds = wait_for(compacted, 120, "the cleaner to remove old versions and tombstones", interval=1.5)
        # The filler key keeps being written while we watch, so its versions are not counted.
        remaining = [r for r in read_all(bootstrap, changelog) if r[0] != b"filler"]
        print(f"\ncompaction: {written} changelog records written, {len(remaining)} left after "
              f"{seconds:.1f} s of cleaning; {len(deleted)} tombstoned keys gone")
        assert written >= KEYS * UPDATES_PER_KEY / 2, f"only {written} changelog records: too few versions to compact"
        assert len(remaining) == KEYS - len(deleted), "one record per live key, no tombstone"
    finally:
        writer.stop()
        producer.flush(10)
    expected = {f"k{i}": UPDATES_PER_KEY for i in range(KEYS) if f"k{i}" not in deleted}
    written_state = {k: v for k, v in read_table_dir(tmp_path / "w1", group, "counts").items() if k != "filler"}
    assert written_state == expected

    # A worker with an empty state directory restores from the compacted changelog alone.
    fresh = _worker(bootstrap, topic_in, group, tmp_path / "w2", "w2")
    try:
        fresh.wait_for_line(r"counter: assigned ", 60)
    finally:
        fresh.stop()
    restored = {k: v for k, v in read_table_dir(tmp_path / "w2", group, "counts").items() if k != "filler"}
    assert restored == expected

