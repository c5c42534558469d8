"""Idle partitions paused lose no record (runtime/idle_partitions.py), on a real broker.

A processor with an input and one tier: every tier partition is paused once its (empty)
end is reported; a retry the processor sends resumes its partition and is handled when
due; a record another process writes to a paused partition is found by the check of the
paused partitions' ends and handled too. A processor whose input goes quiet has it paused
after the spell, and a record written then is handled once the check finds it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client import REGISTRY

from agentstream.runtime import MessageContext, Processor

from .harness import create_topics, wait_for

DUE = "x-due-ms"


@contextmanager
def _running(app: Processor, bootstrap: str) -> Iterator[Producer]:
    """``app`` running on its own thread, and a producer for the test's records; stopped after."""
    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        yield Producer({"bootstrap.servers": bootstrap})
    finally:
        app.stop()
        runner.join(60)
    assert not runner.is_alive()


def _due_in(seconds: float) -> list[tuple[str, bytes]]:
    return [(DUE, str(int((time.time() + seconds) * 1000)).encode())]


def test_paused_tier_partitions_take_a_retry_sent_here_and_a_record_written_elsewhere(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    source, tier = f"idle-in-{unique}", f"idle-in-{unique}.retry-1"
    create_topics(bootstrap, [source, tier], partitions=2)
    name = f"idle-{unique}"
    app = Processor(name, bootstrap, name, tmp_path / "state")
    handled: list[tuple[int, bytes]] = []

    @app.handler(source)
    async def first_try(value: bytes, ctx: MessageContext) -> None:
        app.send(tier, value, ctx.key, partition=ctx.partition, headers=_due_in(0.5))

    @app.handler(tier, due_header=DUE)
    async def retried(value: bytes, ctx: MessageContext) -> None:
        handled.append((ctx.partition, value))

    with _running(app, bootstrap) as producer:
        wait_for(lambda: app.stats.tier_pauses >= 2, 60, "both tier partitions paused at their end")
        producer.produce(source, b"retried-here", b"k", partition=0)
        producer.flush(30)
        wait_for(lambda: (0, b"retried-here") in handled, 60, "the retry sent here to be handled")
        assert app.stats.partition_resumes >= 1
        wait_for(lambda: app.stats.tier_pauses >= 3, 60, "its partition paused again at its new end")
        pauses = app.stats.tier_pauses
        producer.produce(tier, b"written-elsewhere", b"k", partition=1, headers=_due_in(0))
        producer.flush(30)
        wait_for(lambda: (1, b"written-elsewhere") in handled, 60, "the record written elsewhere to be handled")
        wait_for(lambda: app.stats.tier_pauses > pauses, 60, "that partition paused again")
    assert handled == [(0, b"retried-here"), (1, b"written-elsewhere")]  # each once

    # Partition 1 had no retry sent to it: only the check of the paused ends could resume it.
    assert _changes(name, "resumed_for_send") >= 1 and _changes(name, "resumed_by_check") >= 1
    assert _changes(name, "paused") == app.stats.tier_pauses


def _changes(name: str, change: str) -> float:
    return REGISTRY.get_sample_value("agentstream_idle_partitions_total", {"worker": name, "change": change}) or 0.0


def test_a_quiet_input_is_paused_and_a_record_written_after_its_spell_is_handled_once(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    source = f"quiet-in-{unique}"
    create_topics(bootstrap, [source], partitions=2)
    name = f"quiet-{unique}"
    # A fetch wait as on Tansu, and a spell of 1 s so the test need not wait the default 30 s.
    app = Processor(name, bootstrap, name, tmp_path / "state", fetch_wait_ms=20, quiet_pause_s=1.0)
    handled: list[tuple[int, bytes]] = []

    @app.handler(source)
    async def take(value: bytes, ctx: MessageContext) -> None:
        handled.append((ctx.partition, value))

    with _running(app, bootstrap) as producer:
        producer.produce(source, b"before", b"k", partition=0)
        producer.flush(30)
        wait_for(lambda: (0, b"before") in handled, 60, "the first record to be handled")
        wait_for(lambda: app.stats.quiet_pauses >= 2, 60, "both input partitions paused after their quiet spell")
        producer.produce(source, b"after-the-spell", b"k", partition=1)
        producer.flush(30)
        wait_for(lambda: (1, b"after-the-spell") in handled, 60, "the record written to a paused input to be handled")
        wait_for(lambda: app.stats.quiet_pauses >= 3, 60, "that partition paused again after another spell")
    assert handled == [(0, b"before"), (1, b"after-the-spell")]  # each once
    assert app.stats.tier_pauses == 0 and app.stats.partition_resumes >= 1
    assert _changes(name, "paused_quiet") == app.stats.quiet_pauses and _changes(name, "resumed_by_check") >= 1
