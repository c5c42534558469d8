"""What every agent service shares: its processor built from the topology, and its emitters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentstream import metrics
from agentstream.clients import LINGER
from agentstream.events import TASK_EVENT, TASK_RESULT, task_event
from agentstream.runtime import Processor, Table
from agentstream.serde import SchemaSet
from agentstream.settings import WorkerSettings
from agentstream.topology import Topology

log = logging.getLogger(__name__)

BEHAVIOR_VERSION_HEADER = "agentstream-behavior-version"



@dataclass
class Service:
    """A processor for one agent type plus the topic names and codecs its handlers use."""

    agent: str
    processor: Processor
    topology: Topology
    schemas: SchemaSet
    settings: WorkerSettings
    behavior_version: str = ""  # stamped as a header on every event this agent emits
    quiet: bool = False  # a shadow (rollout/shadow.py): its runs emit no task events
    # Per-record costs paid once (issue #18): a topology is immutable once loaded, yet each
    # lookup through it costs ~2 us (pydantic's __getattr__ for its private topic map).
    _topic_names: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _input_topic: str = field(default="", init=False, repr=False)
    _headers: list[tuple[str, bytes]] | None = field(default=None, init=False, repr=False)
    _headers_of: str = field(default="", init=False, repr=False)  # the version _headers carry

    @classmethod
    def build(cls, agent: str, settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
        processor = Processor(
            agent,
            settings.bootstrap,
            topology.group(agent),
            settings.state_dir / agent,
            commit_interval=settings.commit_interval_s,
            max_inflight=settings.max_inflight,
            shutdown_grace=settings.shutdown_grace_s,
            group_protocol=settings.group_protocol,
            fetch_wait_ms=settings.fetch_wait_ms,
            quiet_pause_s=settings.quiet_pause_s,
            kafka_stats_s=settings.kafka_stats_s,
            producer_overrides=None if settings.linger_ms is None else {LINGER: settings.linger_ms},
            changelog_config=topology.changelog_config,
            health_stall=settings.health_stall_s,
            flush_timeout=settings.flush_timeout_s,
        )
        return cls(agent, processor, topology, schemas, settings)

    @property
    def input_topic(self) -> str:
        if not self._input_topic:
            self._input_topic = self.topology.topic(self.topology.agent(self.agent).input)
        return self._input_topic

    def table(self, name: str) -> Table:
        """A table declared for this agent in the topology, with its changelog topic."""
        return self.processor.table(name, changelog_topic=self.topology.changelog_topic(self.agent, name))

    def topic(self, logical_topic: str) -> str:
        """``topology.topic(logical_topic)``, remembered (unknown names raise there, uncached)."""
        name = self._topic_names.get(logical_topic)
        if name is None:
            name = self._topic_names[logical_topic] = self.topology.topic(logical_topic)
        return name

    def emit(self, logical_topic: str, schema: str, record: Mapping[str, Any], *, partition: int | None = None) -> None:
        """Send ``record`` keyed by its session (co-partitioned with every per-session topic),
        to the session's partition unless ``partition`` names another."""
        self.emit_to(self.topic(logical_topic), schema, record, partition=partition)

    def emit_to(self, topic: str, schema: str, record: Mapping[str, Any], *, partition: int | None = None) -> None:
        self.processor.send(topic, self.schemas.encode(schema, record), record["session_id"], partition=partition,
                            headers=self._shared_headers())

    def headers(self) -> list[tuple[str, bytes]] | None:
        """The headers of every record this agent emits (a list of the caller's own)."""
        shared = self._shared_headers()
        return None if shared is None else list(shared)

    def _shared_headers(self) -> list[tuple[str, bytes]] | None:
        """headers() as one list for every emitted record (built again only when
        behavior_version changes): only emit_to hands it on, to a send that does not keep it."""
        if not self.behavior_version:
            return None
        if self._headers is None or self._headers_of != self.behavior_version:
            self._headers = [(BEHAVIOR_VERSION_HEADER, self.behavior_version.encode())]
            self._headers_of = self.behavior_version
        return self._headers

    def progress(self, task: Mapping[str, Any], kind: str, state: str, detail: str = "") -> None:
        if self.quiet:
            return
        self.emit("task_events", TASK_EVENT, task_event(task, self.agent, kind, state, detail))

    def result(self, record: Mapping[str, Any], *, partition: int | None = None) -> None:
        self.emit("results", TASK_RESULT, record, partition=partition)
        metrics.task_result(self.agent, record)
