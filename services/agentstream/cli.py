"""The ``agentstream`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agentstream.broker import BOOTSTRAP_ENV, BROKER_KINDS, TANSU
from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.settings import LOG_LEVEL_ENV, WorkerSettings

log = logging.getLogger("agentstream")


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get(LOG_LEVEL_ENV, "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _bootstrap() -> str:
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not value:
        raise ConfigurationError(
            f"{BOOTSTRAP_ENV} is not set. Point it at your Kafka (host:port), or run "
            "`agentstream dev`, which starts an embedded broker and prints the address."
        )
    return value


def _settings() -> WorkerSettings:
    return WorkerSettings.from_env(bootstrap=_bootstrap())


def _topology(settings: WorkerSettings):  # type: ignore[no-untyped-def]
    from agentstream.topology import load_topology

    return load_topology(settings.topology_path, prefix=settings.prefix)


def cmd_worker(args: argparse.Namespace) -> int:
    from agentstream.serde import SchemaSet

    settings = _settings()
    topology = _topology(settings)
    schemas = SchemaSet.load()
    if args.kind == "router":
        from agentstream.router.app import build_router

        service = build_router(settings, topology, schemas)
    elif args.kind == "supervisor":
        from agentstream.supervisor.app import build_supervisor

        service = build_supervisor(settings, topology, schemas)
    else:
        if not args.type:
            raise ConfigurationError(f"`worker specialist` needs --type, one of {topology.specialist_types}.")
        if args.type not in topology.specialist_types:
            raise ConfigurationError(f"Unknown specialist type {args.type!r}; the topology has {topology.specialist_types}.")
        from agentstream.specialist.app import build_specialist

        service = build_specialist(args.type, settings, topology, schemas)
    stats = asyncio.run(service.processor.run(handle_signals=True))
    log.info("worker %s exiting: %d processed, %d failed", service.agent, stats.processed, stats.failed)
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from agentstream.clients import admin_config
    from agentstream.topology_admin import TopologyConflictError, apply, format_plan, plan

    if args.apply_config and args.action != "apply":
        raise ConfigurationError("--apply-config goes with `topology apply`; `plan` never changes the cluster.")
    settings = _settings()
    topology = _topology(settings)
    admin = AdminClient(admin_config(settings.bootstrap))
    if args.action == "plan":
        print(format_plan(plan(admin, topology)))
        return 0
    try:
        print(format_plan(apply(admin, topology, apply_config=args.apply_config), applied=True))
    except TopologyConflictError as exc:
        print(format_plan(exc.plan))
        print(f"\n{exc}", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from agentstream.client import Submitter, new_task
    from agentstream.serde import SchemaSet

    settings = _settings()
    task = new_task(args.text, args.session, args.tenant, task_id=args.task_id, requested_agent=args.agent)
    submitter = Submitter(settings.bootstrap, _topology(settings), SchemaSet.load())
    submitter.submit(task)
    submitter.flush()
    print(task["task_id"])
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from agentstream.client import Follower
    from agentstream.serde import SchemaSet

    settings = _settings()
    topology = _topology(settings)
    topics = [topology.topic("results")] + ([topology.topic("task_events")] if args.events else [])
    follower = Follower(settings.bootstrap, topics, SchemaSet.load(), from_beginning=args.from_beginning or not args.follow)
    try:
        for _, name, record in follower.records(timeout=None if args.follow else 2.0):
            print(_format_record(name, record), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()
    return 0


def _format_record(name: str, record: dict) -> str:  # type: ignore[type-arg]
    when = time.strftime("%H:%M:%S", time.localtime((record.get("completed_at") or record.get("at") or 0) / 1000))
    if name == "TaskResult":
        error = f" error={record['error']['code']}" if record.get("error") else ""
        output = (record.get("output") or "").replace("\n", " ")
        return (
            f"{when} RESULT {record['task_id']} [{record['session_id']}] {record['status']} "
            f"via {'+'.join(record['agents']) or '-'}{error} calls={record['usage']['llm_calls']}\n    {output[:200]}"
        )
    return f"{when} event  {record['task_id']} {record['stage']}: {record['kind']} {record['state']} {record['detail']}"


def cmd_lag(args: argparse.Namespace) -> int:
    from agentstream.runtime.lag import consumer_lag

    settings = _settings()
    topology = _topology(settings)
    agents = [args.agent] if args.agent else ["router", *topology.specialist_types, "supervisor"]
    print(f"{'group':32} {'topic':36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
    for agent in agents:
        group = topology.group(agent)
        topic = topology.topic(topology.agent(agent).input)
        for row in consumer_lag(settings.bootstrap, group, [topic]):
            committed = "-" if row.committed is None else str(row.committed)
            print(f"{group:32} {topic:36} {row.partition:>4} {committed:>10} {row.end:>10} {row.lag:>8}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from agentstream.retry.dlq_ops import run_command

    settings = _settings()
    return run_command(args, settings.bootstrap, _topology(settings))


def _add_dlq_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a table of dead letters")
    show = actions.add_parser("show", help="everything about one dead letter")
    show.add_argument("id")
    replay = actions.add_parser("replay", help="re-inject into the original topic (attempt 0, replay marker)")
    replay.add_argument("id", nargs="?")
    replay.add_argument("--all-matching", action="store_true", help="every dead letter the filters match")
    purge = actions.add_parser("purge", help="hide dead letters (asks first)")
    purge.add_argument("ids", nargs="*", help="these ids only (default: all matching)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for action in (listing, replay, purge):
        action.add_argument("--since", help="dead-lettered since: 30m, 1h, 2d or an ISO time")
        action.add_argument("--stage", help="only this stage (router, a specialist type, supervisor)")
        action.add_argument("--error", help="only this error class (PERMANENT, TRANSIENT) or exception type")
    dlq.set_defaults(func=cmd_dlq)


def cmd_dev(args: argparse.Namespace) -> int:
    from agentstream.stack import Stack

    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stack = Stack(Path(args.state_dir), broker=args.broker).start()
    try:
        print(f"broker: {stack.bootstrap}  (export {BOOTSTRAP_ENV}={stack.bootstrap} to use submit/results/lag)")
        print(f"workers: {', '.join(f'{n} (pid {p.pid})' for n, p in stack.workers.items())}; Ctrl-C stops all")
        while not stopping:
            dead = stack.dead_workers()
            if dead:
                print(f"workers exited: {dead}; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        codes = stack.stop()
        print(f"stopped: {codes}")
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    """Start, inspect or stop an Apache Kafka cluster under ``--dir`` (detached JVMs)."""
    from agentstream.apache_kafka import KafkaCluster, kafka_version
    from agentstream.apache_kafka.cluster import LAYOUT_FILE

    directory = Path(args.dir)
    if args.action == "start":
        if (directory / LAYOUT_FILE).exists():  # stopped earlier: same ports, same data
            cluster = KafkaCluster.load(directory).resume()
        else:
            cluster = KafkaCluster(directory, args.nodes, heap_mb=args.heap_mb).start()
        print(f"Apache Kafka {kafka_version()}: {len(cluster.nodes)} node(s), logs under {cluster.directory}")
        print(f"export {BOOTSTRAP_ENV}={cluster.bootstrap}")
        return 0
    cluster = KafkaCluster.load(directory)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped {len(cluster.nodes)} node(s) under {cluster.directory}")
        return 0
    alive = [node for node in cluster.nodes if node.alive()]
    for node in cluster.nodes:
        print(f"node {node.node_id}: {node.address}  pid {node.pid}  {'running' if node.alive() else 'stopped'}")
    if alive:
        print(f"export {BOOTSTRAP_ENV}={cluster.bootstrap}")
    return 0 if len(alive) == len(cluster.nodes) else 1


def _add_kafka_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = sub.add_parser("kafka", help="start, inspect or stop a local Apache Kafka 4 cluster (needs java and mvn)")
    kafka.add_argument("action", choices=["start", "status", "stop"],
                       help="start: fetch the jars once (Maven), format and start (or start a stopped cluster again, "
                            "data kept); status: exit 0 if every node runs; stop: SIGTERM every node")
    kafka.add_argument("--dir", default=".kafka", help="where the nodes keep their data and logs (default .kafka)")
    kafka.add_argument("--nodes", type=int, choices=[1, 3], default=1, help="1 node, or 3 for replication (start only)")
    kafka.add_argument("--heap-mb", type=int, default=512, help="JVM heap per node in MB (start only)")
    kafka.set_defaults(func=cmd_kafka)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks live in the repository's bench/ package (not installed with the wheel)."""
    import runpy

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "bench" / f"{args.name}.py").exists():
        available = sorted(p.stem for p in (repo / "bench").glob("[a-z]*.py")) if (repo / "bench").is_dir() else []
        raise ConfigurationError(f"No benchmark {args.name!r}; available: {available or 'none (run from a checkout)'}.")
    sys.path.insert(0, str(repo))
    sys.argv = [f"bench.{args.name}", *args.args]
    runpy.run_module(f"bench.{args.name}", run_name="__main__")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agentstream.demo import run_demo

    return run_demo(Path(args.state_dir), timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentstream", description="Kafka-native runtime for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run one agent service (a stream processor)")
    worker.add_argument("kind", choices=["router", "specialist", "supervisor"])
    worker.add_argument("--type", help="specialist type (see the topology)")
    worker.set_defaults(func=cmd_worker)

    topology = sub.add_parser("topology", help="show or create the topics of the topology, show config drift")
    topology.add_argument("action", choices=["plan", "apply"])
    topology.add_argument("--apply-config", action="store_true",
                          help="apply: also set declared configs that differ on existing topics "
                               "(IncrementalAlterConfigs; Apache Kafka only, not Tansu)")
    topology.set_defaults(func=cmd_topology)

    submit = sub.add_parser("submit", help="submit a task")
    submit.add_argument("text")
    submit.add_argument("--session", required=True)
    submit.add_argument("--tenant", default="default")
    submit.add_argument("--task-id")
    submit.add_argument("--agent", help="skip classification and send to this specialist type")
    submit.set_defaults(func=cmd_submit)

    results = sub.add_parser("results", help="print task results")
    results.add_argument("--follow", action="store_true", help="keep printing new results")
    results.add_argument("--from-beginning", action="store_true")
    results.add_argument("--events", action="store_true", help="also print progress events")
    results.set_defaults(func=cmd_results)

    lag = sub.add_parser("lag", help="consumer lag per agent group and partition")
    lag.add_argument("--agent")
    lag.set_defaults(func=cmd_lag)

    _add_dlq_parser(sub)

    dev = sub.add_parser("dev", help="broker + topology + every worker, until Ctrl-C")
    dev.add_argument("--state-dir", default=".state/dev")
    dev.add_argument("--broker", choices=BROKER_KINDS, default=TANSU,
                     help="the broker to start when KAFKA_BOOTSTRAP_SERVERS is unset: tansu (embedded, "
                          "default) or kafka (Apache Kafka 4 from Maven; needs java and mvn)")
    dev.set_defaults(func=cmd_dev)

    _add_kafka_parser(sub)

    bench = sub.add_parser("bench", help="run a benchmark from bench/ (pipeline, relay, concurrency, ...)")
    bench.add_argument("name")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the pipeline on sample support tickets and show the results")
    demo.add_argument("--state-dir", default=".state/demo")
    demo.add_argument("--timeout", type=float, default=120.0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return int(args.func(args))
    except AgentStreamError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 2
