"""Retry-tier partitions paused at their end lose no retry (runtime/idle_tiers.py), on a real broker.

A processor with an input and one tier: every tier partition is paused once its (empty)
end is reported; a retry the processor sends resumes its partition and is handled when
due; a record another process writes to a paused partition is found by the check of the
paused partitions' ends and handled too."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client import REGISTRY

from agentstream.runtime import MessageContext, Processor

from .harness import create_topics, wait_for

DUE = "x-due-ms"


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

    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    producer = Producer({"bootstrap.servers": bootstrap})
    try:
        wait_for(lambda: app.stats.tier_pauses >= 2, 60, "both tier partitions paused at their end")
        producer.produce(source, b"retried-here", b"k", partition=0)
        producer.flush(30)
        wait_for(lambda: (0, b"retried-here") in handled, 60, "the retry sent here to be handled")
        assert app.stats.tier_resumes >= 1
        wait_for(lambda: app.stats.tier_pauses >= 3, 60, "its partition paused again at its new end")
        pauses = app.stats.tier_pauses
        producer.produce(tier, b"written-elsewhere", b"k", partition=1, headers=_due_in(0))
        producer.flush(30)
        wait_for(lambda: (1, b"written-elsewhere") in handled, 60, "the record written elsewhere to be handled")
        wait_for(lambda: app.stats.tier_pauses > pauses, 60, "that partition paused again")
    finally:
        app.stop()
        runner.join(60)
    assert not runner.is_alive()
    assert handled == [(0, b"retried-here"), (1, b"written-elsewhere")]  # each once

    def changes(change: str) -> float:
        return REGISTRY.get_sample_value("agentstream_idle_tiers_total", {"worker": name, "change": change}) or 0.0

    # Partition 1 had no retry sent to it: only the check of the paused ends could resume it.
    assert changes("resumed_for_retry") >= 1 and changes("resumed_by_check") >= 1
    assert changes("paused") == app.stats.tier_pauses
