"""A real faust worker run as a process by ``test_faust_codec``.

It consumes TaskResult records from ``--results`` with ``AvroEventCodec`` and prints
each as one ``RESULT <json>`` line on stdout. With ``--tasks`` and ``--submit`` it also
sends that TaskSubmitted (JSON) to ``--tasks`` through the codec once the worker has
started, and prints ``SENT <partition> <offset>``. The settings suit the embedded broker:
short session timeout (its group join takes half of it), no topic creation (the test
creates every topic), no leader topic, no web server (tests run side by side).
"""

from __future__ import annotations

import argparse
import json
import sys

import faust
from faust.worker import Worker

from agentstream.integrations.faust import AvroEventCodec, TaskResultRecord, TaskSubmittedRecord


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=args.datadir,
        topic_partitions=6,
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        # The embedded broker completes a group join in about half the session
        # timeout: faust's 60 s default would hold every start for 30 s.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.5,
        consumer_auto_offset_reset="earliest",
    )
    results = app.topic(
        args.results,
        key_type=str,
        value_type=TaskResultRecord,
        value_serializer=AvroEventCodec("TaskResult"),
    )

    @app.agent(results)
    async def print_results(stream: faust.StreamT[TaskResultRecord]) -> None:
        async for key, result in stream.items():
            line = {"key": key, "type": type(result).__name__, "value": _plain(result)}
            print("RESULT", json.dumps(line, sort_keys=True), flush=True)

    if args.tasks and args.submit:
        tasks = app.topic(args.tasks, key_type=str, value_serializer=AvroEventCodec("TaskSubmitted"))
        task = TaskSubmittedRecord(**json.loads(args.submit))

        @app.task
        async def submit() -> None:
            metadata = await tasks.send(key=task.session_id, value=task)
            sent = await metadata
            print("SENT", sent.topic_partition.partition, sent.offset, flush=True)

    return app


def _plain(value: object) -> object:
    """A Record as JSON-ready dicts, nested Records included (they are built lazily)."""
    if isinstance(value, faust.Record):
        return {name: _plain(getattr(value, name)) for name in value.asdict()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--tasks")
    parser.add_argument("--submit", help="a TaskSubmitted as JSON, sent once to --tasks")
    args = parser.parse_args()
    app = build_app(args)
    # Worker handles SIGTERM/SIGINT itself: it stops the agents and the consumer, then exits.
    # redirect_stdouts=False: the RESULT/SENT lines stay plain stdout, not log records.
    Worker(app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
