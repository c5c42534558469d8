"""A counting stream processor run as a real process by the runtime's fault tests.

For every input record (key = a key name, value = a unique event id) it adds one to
``counts[key]`` and emits one output record (same key, same event id). The outputs
therefore count how many times each event was processed, and the ``counts`` table
(read back from its changelog) must agree with them. A record whose value is ``delete``
deletes the key instead (a tombstone in the changelog).

With ``--metrics-port`` it serves the probes and metrics (telemetry/server.py); with
``--stall-on VALUE`` a record of that value blocks the event loop, as a handler that
calls blocking code would, until the file ``--release-file`` exists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from agentstream.runtime import MessageContext, Processor, new_serving_loop
from agentstream.telemetry import HealthServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--message-timeout-ms", type=int, default=None)
    parser.add_argument("--changelog-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a config of the changelog topic created at start (repeatable)")
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--health-stall", type=float, default=30.0)
    parser.add_argument("--stall-on", type=lambda v: v.encode(), default=None)
    parser.add_argument("--release-file", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    producer_overrides = {}
    if args.message_timeout_ms:
        producer_overrides["message.timeout.ms"] = args.message_timeout_ms
    app = Processor(
        "counter",
        args.bootstrap,
        args.group,
        args.state_dir,
        commit_interval=args.commit_interval,
        producer_overrides=producer_overrides,
        changelog_config=dict(item.split("=", 1) for item in args.changelog_config),
        health_stall=args.health_stall,
    )
    counts = app.table("counts")

    @app.handler(args.input)
    async def count(value: bytes, ctx: MessageContext) -> None:
        key = ctx.key_str
        if args.stall_on is not None and value == args.stall_on:
            print("STALLING the event loop", flush=True)
            while not args.release_file.exists():
                time.sleep(0.05)  # blocking on purpose: the stuck loop /healthz must report
        if value == b"delete":
            del counts[key]
        else:
            counts[key] = counts.get(key, 0) + 1
        app.send(args.output, value, ctx.key)

    server = HealthServer(app, args.metrics_port).start() if args.metrics_port else None

    async def run() -> None:
        stats = await app.run(idle_timeout=args.idle_timeout, handle_signals=True)
        if server is not None:
            server.stop()
        print(f"STOPPED processed={stats.processed} restored={stats.restored_records}", flush=True)

    with asyncio.Runner(loop_factory=new_serving_loop) as runner:  # as `agentstream worker` runs
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
