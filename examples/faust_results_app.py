"""A faust app that reads agentstream's results and submits tasks, in our Avro wire format.

Needs the extra: ``pip install 'agentstream[faust]'``. Run from the repository root:

    faust -A examples.faust_results_app worker -l info      # print every TaskResult
    python examples/faust_results_app.py worker -l info     # the same
    python examples/faust_results_app.py submit "Where is my refund?" --session s-1

Environment:
    KAFKA_BOOTSTRAP_SERVERS   the broker (default localhost:9092)
    AGENTSTREAM_PREFIX        the topology prefix (default: the one in examples/support_desk/topology.yaml)

Topic names come from the topology, never typed here: ``<prefix>.results.v1`` is read,
``<prefix>.tasks.v1`` written. The topics must exist (``agentstream.topology_admin``
creates them); this app declares none of its own. faust's ``worker`` command sends
``print()`` output to its log, so each result appears there as a log line.
"""

from __future__ import annotations

import os
import time
import uuid

import faust
from faust.cli import argument, option

from agentstream.broker import BOOTSTRAP_ENV
from agentstream.integrations.faust import AvroEventCodec, TaskResultRecord, TaskSubmittedRecord
from agentstream.serde import SchemaSet
from agentstream.topology import load_topology

topology = load_topology(prefix=os.environ.get("AGENTSTREAM_PREFIX") or None)
schemas = SchemaSet.load()
bootstrap = os.environ.get(BOOTSTRAP_ENV) or "localhost:9092"

app = faust.App(
    f"{topology.prefix}-faust-results-example",  # also the consumer group id
    broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
    store="memory://",
    key_serializer="raw",
    topic_partitions=topology.default_partitions,  # for any table you add: co-partitioned
    # A group join on the embedded broker takes about half the session timeout; with
    # faust's 60 s default every start would wait 30 s before the first record.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.5,
    topic_disable_leader=True,  # no extra "<app id>-__assignor-__leader" topic
    web_enabled=False,
)

results_topic = app.topic(
    topology.topic("results"),
    key_type=str,  # keys are the UTF-8 session_id
    value_type=TaskResultRecord,
    value_serializer=AvroEventCodec("TaskResult", schemas),
)
tasks_topic = app.topic(
    topology.topic("tasks"),
    key_type=str,
    value_type=TaskSubmittedRecord,
    value_serializer=AvroEventCodec("TaskSubmitted", schemas),
)


@app.agent(results_topic)
async def print_results(results: faust.StreamT[TaskResultRecord]) -> None:
    """Print one line per final result."""
    async for result in results:
        print(f"result task_id={result.task_id} status={result.status} agents={','.join(result.agents)}", flush=True)


@app.command(
    argument("text"),
    option("--session", default=None, help="session_id, also the key (default: a new one)"),
    option("--tenant", default="demo", help="tenant_id"),
    option("--agent", default=None, help="requested_agent: skip classification"),
)
async def submit(self: faust.cli.AppCommand, text: str, session: str | None, tenant: str, agent: str | None) -> None:
    """Submit one task to the tasks topic."""
    task = TaskSubmittedRecord(
        task_id=f"task-{uuid.uuid4().hex[:12]}",
        session_id=session or f"session-{uuid.uuid4().hex[:12]}",
        tenant_id=tenant,
        input=text,
        submitted_at=int(time.time() * 1000),
        requested_agent=agent,
    )
    sent = await (await tasks_topic.send(key=task.session_id, value=task))
    print(
        f"submitted task_id={task.task_id} session_id={task.session_id} "
        f"to {sent.topic_partition.topic}[{sent.topic_partition.partition}]@{sent.offset}",
        flush=True,
    )


if __name__ == "__main__":
    app.main()
