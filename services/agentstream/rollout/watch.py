"""``agentstream rollout watch``: checks every canary's rollback rules as results come,
rolls a breaching canary back (weight 0, with the rules and their figures) and, where
the candidate has ``promote:``, raises a healthy one's weight a step (rollout/promote.py),
each a record on the control topic and a log line.

One small process of its own rather than a part of the router: the router judges no
results (its path stays short and deterministic), and one watcher sees every result,
where router replicas would each see a share and all roll back at once. It keeps the
window of results in memory, fed by a group-less reader that follows the topics; a
restart reads the window again, so it needs no state of its own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agentstream.events import now_ms
from agentstream.rollout.config import CANARY, VARIANT_SUFFIX, CandidateSettings
from agentstream.rollout.control import (
    canary_types, control_record, latest_controls, read_controls, rollback_record, send_control,
)
from agentstream.rollout.promote import Step, promotion
from agentstream.rollout.report import current_weight, decode_results, judged, result_topics
from agentstream.rollout.rules import RuleCheck, breached, by_variant, checks
from agentstream.rollout.window import TopicFollower
from agentstream.serde import SchemaSet
from agentstream.topology import Topology

log = logging.getLogger(__name__)

WATCHER = "rollout-watch"  # set_by of the control records the watcher writes


class Watcher:
    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet, window_s: float) -> None:
        self.bootstrap = bootstrap
        self.topology = topology
        self.schemas = schemas
        self.window_ms = int(window_s * 1000)
        self.types = canary_types(topology)
        self.records: deque[dict[str, Any]] = deque()
        self.controls = read_controls(bootstrap, topology, schemas)
        self.started = now_ms()

    def run(self, interval_s: float, stopping: Callable[[], bool]) -> None:
        results = TopicFollower(self.bootstrap, result_topics(self.topology), since_ms=now_ms() - self.window_ms)
        controls = TopicFollower(self.bootstrap, [self.topology.topic("rollout")])
        log.info("rollout watch: judging the canaries of %s every %g s over %g s", self.types, interval_s,
                 self.window_ms / 1000)
        next_check = time.monotonic()
        try:
            while not stopping():
                # Only the canaries' types are judged: the window in memory holds only theirs.
                self.records.extend(r for r in decode_results(results.poll(0.2), self.schemas) if r["agent_type"] in self.types)
                latest_controls(controls.poll(0), self.schemas, self.controls)
                if time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + interval_s
        finally:
            results.close()
            controls.close()

    def check(self) -> None:
        """Judge every canary with a weight above 0: roll back those that breach, step up
        those with ``promote`` whose rules held long enough."""
        horizon = now_ms() - self.window_ms
        while self.records and self.records[0]["finished_at"] < horizon:
            self.records.popleft()  # near enough in order: results are appended as they finish
        for agent_type in self.types:
            candidate = self.topology.candidate_of(agent_type)
            if candidate is not None and current_weight(candidate, self.controls.get(agent_type)) > 0:
                self.judge(agent_type, candidate)

    def judge(self, agent_type: str, candidate: CandidateSettings) -> None:
        control = self.controls.get(agent_type)
        grouped = by_variant(self.records, agent_type)
        live, recent = judged(grouped, control)
        canary = grouped.get(VARIANT_SUFFIX[CANARY], [])
        version = canary[-1]["behavior_version"] if canary else None
        broken = breached(checks(candidate.rollback, live, recent))
        if broken:
            self.roll_back(agent_type, version, broken, recent.tasks)
        elif candidate.promote is not None:
            # Without a record the topology's weight has held since before this watcher started at least.
            held_since = int(control["at"]) if control is not None else self.started
            weight = current_weight(candidate, control)
            step = promotion(candidate.promote, candidate.rollback, weight, live, recent, now_ms() - held_since)
            if step is not None:
                self.step_up(agent_type, version, step)

    def roll_back(self, agent_type: str, version: str | None, broken: list[RuleCheck], tasks: int) -> None:
        self.write(rollback_record(agent_type, WATCHER, version, broken, tasks))
        log.warning("rollout: %s candidate %s set to weight 0, %s", agent_type, version, self.controls[agent_type]["reason"])

    def step_up(self, agent_type: str, version: str | None, step: Step) -> None:
        self.write(control_record(agent_type, step.weight, step.reason, WATCHER, version, self.controls.get(agent_type)))
        log.warning("rollout: %s candidate %s set to weight %g, %s", agent_type, version, step.weight, step.reason)

    def write(self, record: dict[str, Any]) -> None:
        send_control(self.bootstrap, self.topology, self.schemas, record)
        self.controls[record["agent_type"]] = record
