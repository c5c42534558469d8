"""``agentstream cancel TASK_ID [--reason TEXT] [--by WHO]``, and the producer helper
every client that cancels uses (the CLI, the HTTP gateway).

The task's session — the cancel's key — comes from the ``tasks`` topic: every task
enters there, so a task the router has not taken in yet is found too (the task events
and the results name a task only once a stage has seen it). Whether it already ended
comes from the ``results`` topic, where every task ends. Both are read whole, group-less,
as ``agentstream approvals`` reads its topics.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from confluent_kafka import Producer

from agentstream.approvals.ops import read_records
from agentstream.blocking_send import ACK_TIMEOUT_S, Delivery, acknowledged, producer_settings
from agentstream.cancellation.records import cancel_record
from agentstream.clients import producer_config
from agentstream.errors import AgentStreamError
from agentstream.events import TASK_CANCEL, TASK_RESULT, TASK_SUBMITTED
from agentstream.serde import SchemaSet
from agentstream.telemetry import tracing
from agentstream.topology import Topology



class CancelRefused(AgentStreamError):
    """The task cannot be canceled: no such task, or it has ended."""


def send_cancel(bootstrap: str, topology: Topology, schemas: SchemaSet, record: dict[str, Any]) -> None:
    """Produce the TaskCancel ``record`` (cancellation.records.cancel_record) to the control
    topic, keyed by its session; returns once the broker has acknowledged it."""
    producer = Producer(producer_config(bootstrap, producer_settings()))
    topic = topology.topic("control")
    delivery = Delivery()
    with tracing.producing(topic, None, None) as traced:
        producer.produce(topic, schemas.encode(TASK_CANCEL, record), record["session_id"], headers=traced.headers,
                         on_delivery=delivery.report)
    acknowledged(producer, [delivery], ACK_TIMEOUT_S, f"The cancel of task {record['task_id']!r} sent to {bootstrap}")


def find_task(bootstrap: str, topology: Topology, schemas: SchemaSet, task_id: str) -> dict[str, Any]:
    """The TaskSubmitted of ``task_id``, if it has no result yet; else CancelRefused."""
    tasks_topic = topology.topic("tasks")
    task = next((t for t in read_records(bootstrap, tasks_topic, TASK_SUBMITTED, schemas) if t["task_id"] == task_id), None)
    if task is None:
        raise CancelRefused(f"No task {task_id!r} on {tasks_topic}: check the id (the client's task_id); "
                            "a task older than the topic's retention cannot be canceled either.")
    results_topic = topology.topic("results")
    ended = [r for r in read_records(bootstrap, results_topic, TASK_RESULT, schemas) if r["task_id"] == task_id]
    if ended:
        raise CancelRefused(f"Task {task_id!r} has ended already ({ended[0]['status']} on {results_topic}); "
                            "there is nothing to cancel.")
    return task


def cancel_task(bootstrap: str, topology: Topology, schemas: SchemaSet, task_id: str, reason: str,
                requested_by: str) -> dict[str, Any]:
    """Find ``task_id``'s session and send its cancel; the TaskCancel record sent."""
    task = find_task(bootstrap, topology, schemas, task_id)
    record = cancel_record(task_id, task["session_id"], task["tenant_id"], requested_by, reason)
    send_cancel(bootstrap, topology, schemas, record)
    return record


def run_command(args: argparse.Namespace, bootstrap: str, topology: Topology, schemas: SchemaSet | None = None,
                *, stdout: TextIO | None = None) -> int:
    """Run ``agentstream cancel``; the exit code."""
    out = stdout or sys.stdout
    who = args.by or getpass.getuser()
    try:
        record = cancel_task(bootstrap, topology, schemas or SchemaSet.load(), args.task_id, args.reason or "", who)
    except CancelRefused as exc:
        print(exc, file=sys.stderr)
        return 1
    out.write(f"cancel of task {record['task_id']} sent (session {record['session_id']}, by {who}); "
              "its CANCELED result follows on the results topic\n")
    return 0
