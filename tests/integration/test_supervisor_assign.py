"""The supervisor's assignment hook asks the broker for the end of the results topic; while
the broker is slow to answer, the event loop keeps running the work of the partitions the
worker already owns.

The slow broker is a TCP proxy in front of the real one that holds every new connection
until it is released; the hook's end-offset lookup bootstraps through it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config
from agentstream.serde import SchemaSet
from agentstream.settings import WorkerSettings
from agentstream.supervisor.app import build_supervisor
from agentstream.topology import load_topology
from agentstream.topology_admin import apply

from .held_proxy import HoldingProxy

HOLD_S = 2.0  # how long the proxy holds the hook's connection
TICK_S = 0.05


def test_the_assignment_hook_does_not_block_the_event_loop(bootstrap: str, tmp_path: Path) -> None:
    prefix = f"a{uuid.uuid4().hex[:8]}"
    topology = load_topology(None, prefix=prefix)
    apply(AdminClient(admin_config(bootstrap)), topology)
    proxy = HoldingProxy(bootstrap)
    settings = WorkerSettings(bootstrap=proxy.address, state_dir=tmp_path, prefix=prefix)
    service = build_supervisor(settings, topology, SchemaSet.load())
    (recover,) = service.processor._assign_hooks  # the hook the processor runs after an assignment

    async def scenario() -> tuple[list[float], float]:
        ticks: list[float] = []

        async def other_partitions_work() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(TICK_S)

        worker = asyncio.create_task(other_partitions_work())
        started = time.monotonic()
        threading.Timer(HOLD_S, proxy.release).start()
        try:
            await recover([])  # no partition to recover: only the end offsets are read
        finally:
            worker.cancel()
        return [tick - started for tick in ticks], time.monotonic() - started

    try:
        ticks, took = asyncio.run(scenario())
    finally:
        proxy.close()
    assert proxy.connections > 0 and took >= HOLD_S, "the hook did not wait for the held broker connection"
    during_hold = [tick for tick in ticks if tick < HOLD_S - 0.2]
    # Blocking the loop would leave no tick before the release; ~35 are expected.
    assert len(during_hold) >= 10, f"the event loop ran {len(during_hold)} times while the hook waited"
