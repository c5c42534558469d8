"""The gateway's materialized view, kept inside a Kafka client's process (kafka_client.py).

The same reader and store a gateway replica runs (gateway/view_reader.py, view_store.py):
every partition of the tasks, task-events, results, approvals and approval-decisions
topics read from the beginning, group-less, into a RocksDB of its own in a temporary
directory, so the client answers a task's state and events exactly as the gateway does,
with the same event ids. The price is the gateway's: the first read covers what the topics
retain, and the store holds it (a service that keeps one Client pays it once).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from agentstream.gateway.view_reader import ViewReader
from agentstream.gateway.view_store import ViewStore
from agentstream.serde import SchemaSet
from agentstream.task_client import TaskClientError
from agentstream.topology import Topology

RECENT_TASKS = 10_000  # tasks this client sent, kept until the view has read them back


class ClientView:
    """A view of one topology's topics, read by a thread; ``wait`` wakes on every change."""

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet, state_dir: Path | None) -> None:
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
        self.home = Path(tempfile.mkdtemp(prefix="client-view-", dir=state_dir))
        self.store = ViewStore.fresh(self.home / "tasks")
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._changed = threading.Condition()
        self.generation = 0
        self.reader = ViewReader(bootstrap, topology, schemas, self.store, self._notify).start()

    def _notify(self, _task_ids: frozenset[str] | None) -> None:
        # One condition for all: a client process follows a handful of tasks, not hundreds.
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Return once the view changed after generation ``seen`` or ``timeout`` s passed."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen, timeout)
            return self.generation

    def ready(self, timeout: float) -> None:
        """Return once the view has read the topics up to their ends at start (the gateway's
        /readyz); TaskClientError 503 if the reader stopped or ``timeout`` s passed."""
        deadline = time.monotonic() + timeout
        seen = self.generation
        while not self.reader.ready:
            if self.reader.failure is not None or not self.reader.alive:
                raise TaskClientError(503, "view_failed", f"The client's view reader stopped: {self.reader.failure}.")
            if time.monotonic() >= deadline:
                raise TaskClientError(503, "not_ready", f"The client's view has not read the topics to their ends "
                                                        f"within {timeout:.0f} s; is the broker up?", 5.0)
            seen = self.wait(seen, 0.5)

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task's view: from the store, else as this client sent it moments ago."""
        return self.store.task(task_id) or self.recent.get(task_id)

    def remember(self, view: dict[str, Any]) -> None:
        self.recent[view["task_id"]] = view
        while len(self.recent) > RECENT_TASKS:
            self.recent.popitem(last=False)

    def close(self) -> None:
        self.reader.stop()
        self.store.close()
        shutil.rmtree(self.home, ignore_errors=True)
