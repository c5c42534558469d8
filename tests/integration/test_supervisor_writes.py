"""What the supervisor writes per task, counted on a real broker: one TaskResult, and two
markers in its dedupe changelog (emitting, then sent: supervisor/emitter.py); the markers
of emissions running at once share broker round trips (supervisor/marker_writes.py)
instead of costing one each.

The supervisor runs in-process (tests/integration/test_supervisor_emit.py); its
processor's write-through writes are counted by wrapping them on the instance.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from agentstream.topology import Topology
from tests.integration.harness import read_all, wait_for
from tests.integration.test_supervisor_emit import (  # noqa: F401 (fixtures)
    WAIT_S, Supervisor, _of, _read_until, _send_results, _specialist_result, start_supervisor, topology,
)

TASKS = 30


def _count_marker_writes(supervisor: Supervisor) -> list[int]:
    """The sizes of the supervisor's write-through batches, one entry per broker round trip."""
    app = supervisor.service.processor
    batches: list[int] = []
    persist, persist_all = app.persist, app.persist_all

    async def counted_persist(table: Any, key: Any, value: Any, *, partition: int | None = None) -> None:
        batches.append(1)
        await persist(table, key, value, partition=partition)

    async def counted_persist_all(table: Any, items: list[tuple[Any, Any]], *, partition: int) -> None:
        batches.append(len(items))
        await persist_all(table, items, partition=partition)

    app.persist, app.persist_all = counted_persist, counted_persist_all  # type: ignore[method-assign]
    return batches


def _marker_states(bootstrap: str, changelog: str) -> dict[str, list[str]]:
    """The states each task's marker went through, from the whole ``changelog``."""
    states: dict[str, list[str]] = defaultdict(list)
    for key, value, _ in read_all(bootstrap, changelog):
        if key is not None and value is not None:
            states[key.decode()].append(json.loads(value)["state"])
    return states


def test_each_task_writes_one_result_and_two_markers_and_concurrent_markers_share_round_trips(
    kafka_bootstrap: str, topology: Topology, start_supervisor: Callable[[], Supervisor]
) -> None:
    batches = _count_marker_writes(start_supervisor())
    results = [_specialist_result(f"s-{uuid.uuid4().hex[:6]}", f"answer {i}") for i in range(TASKS)]
    _send_results(kafka_bootstrap, topology, results)  # one flush: they arrive together
    tasks = {r["task_id"] for r in results}
    records = _read_until(kafka_bootstrap, topology,
                          lambda rs: all(_of(rs, "TaskResult", t) for t in tasks), "every task's result")
    assert sorted(r["task_id"] for n, r in records if n == "TaskResult") == sorted(tasks)  # one result per task

    changelog = topology.changelog_topic("supervisor", "dedupe")
    markers: dict[str, list[str]] = {}

    def all_sent() -> bool:
        markers.update(_marker_states(kafka_bootstrap, changelog))  # read to the changelog's true end
        return all("sent" in markers.get(t, []) for t in tasks)

    wait_for(all_sent, WAIT_S, "every task's sent marker")
    assert {t: markers[t] for t in tasks} == {t: ["emitting", "sent"] for t in tasks}
    assert sum(batches) == 2 * TASKS
    # Before group commit every marker was a round trip of its own: 2 per task.
    assert len(batches) < 2 * TASKS, f"{len(batches)} round trips for {2 * TASKS} markers: {batches}"
    print(f"\n{TASKS} tasks: {sum(batches)} markers in {len(batches)} round trips, batches {batches}")
