"""The ``agentstream`` command line.

Every command that talks to Kafka finds the broker the same way (``KAFKA_BOOTSTRAP_SERVERS``,
else the address ``agentstream dev`` wrote under the state directory), asks it for its
metadata for 5 s (up to a minute, with a warning, when the address takes connections but
the broker is slow to answer), and otherwise ends with one line naming the address and the
fix. Errors agentstream expects end in one line and exit 2; librdkafka's own log
lines are off unless asked for (``--verbose`` or ``AGENTSTREAM_LOG_LEVEL=DEBUG``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from agentstream.broker import (
    BOOTSTRAP_ENV,
    PROBE_TIMEOUT_S,
    SLOW_BROKER_WAIT_S,
    TANSU,
    broker_to_start,
    clear_bootstrap_file,
    find_bootstrap,
    wait_until_answers,
    write_bootstrap_file,
)
from agentstream import early_stop
from agentstream.cli_parser import build_parser
from agentstream.clients import KAFKA_LOG
from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.telemetry import logs, tracing
from agentstream.settings import LOG_FORMAT_ENV, LOG_LEVEL_ENV, STATE_DIR_ENV, TOPOLOGY_ENV, WorkerSettings, state_dir_from_env

if TYPE_CHECKING:
    from agentstream.topology import Topology

log = logging.getLogger("agentstream")

# Commands that run for long and whose logs someone reads: librdkafka's warnings stay on.
_LONG_RUNNING = ("worker", "gateway")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The HTTP clients of the model SDKs (openai, anthropic) log every request at INFO: a line
# per model call, the routine kind telemetry.logs.task_line_level keeps at DEBUG.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2")


def _setup_logging(args: argparse.Namespace) -> None:
    level = "DEBUG" if getattr(args, "verbose", False) else os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    if level not in _LEVELS:
        raise ConfigurationError(f"{LOG_LEVEL_ENV}={level!r} is not a log level; use one of {', '.join(_LEVELS)}.")
    logs.configure(level, os.environ.get(LOG_FORMAT_ENV, "text"))  # text or JSON lines, secrets redacted
    if level != "DEBUG":
        KAFKA_LOG.setLevel(logging.WARNING if args.command in _LONG_RUNNING else logging.CRITICAL + 1)
        for name in HTTP_CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def _settings_and_topology(**overrides: object) -> tuple[WorkerSettings, Topology]:
    """Settings with the address of a broker that answered (broker.wait_until_answers: 5 s,
    or up to a minute for a busy broker), and the topology: what is wrong with the
    environment or the topology file is said before the broker is asked."""
    state = state_dir_from_env(None)
    address = find_bootstrap(state)
    settings = WorkerSettings.from_env(bootstrap=address.bootstrap, state_dir=state, **overrides)  # bad values first
    topology = _topology(settings)
    wait_until_answers(address.bootstrap, PROBE_TIMEOUT_S, source=address.source, hint=address.hint,
                       slow_timeout=SLOW_BROKER_WAIT_S)
    return settings, topology


def _topology(settings: WorkerSettings) -> Topology:
    from agentstream.topology import load_topology

    return load_topology(settings.topology_path, prefix=settings.prefix)


class _StopSignals:
    """SIGTERM, SIGINT and SIGHUP ask for a stop: once, through ``then`` when it is set.

    Installed before anything slow, so a stop asked for during start-up is not a kill.
    """

    def __init__(self) -> None:
        self.requested = early_stop.caught()  # a stop that came while the command started
        self.then: Callable[[], None] | None = None
        for sig in early_stop.STOP_SIGNALS:
            signal.signal(sig, self._handle)
        if self.requested:
            log.info("a stop was asked for while starting; stopping")

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.then is not None:
            self.then()

    @staticmethod
    def ignore() -> None:
        """Ignore further stop signals: the work is done, and Python restores the default
        handlers while it exits, so a late SIGTERM would turn a clean exit into -15."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


def cmd_worker(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from agentstream.clients import admin_config
    from agentstream.runtime.topics import require_topics
    from agentstream.runtime.collector import tune_for_serving
    from agentstream.runtime.delivery_pump import new_serving_loop
    from agentstream.serde import SchemaSet

    if args.check:
        return _check_worker(args)
    if args.kind is None:
        raise ConfigurationError("`worker` needs the service to run: router, specialist or supervisor.")
    stop = _StopSignals()
    settings, topology = _settings_and_topology(metrics_port=args.metrics_port, tenants_path=args.tenants)
    if args.tenants is not None and args.kind != "router":
        raise ConfigurationError(f"--tenants applies to the router only (it enforces the limits), not to a {args.kind}.")
    if args.kind == "specialist":
        specialists = [name for name, agent in topology.workers.items() if agent.kind == "specialist"]
        if args.type not in specialists:  # a candidate's worker (billing.candidate) is one too
            raise ConfigurationError(f"`worker specialist` needs --type, one of {', '.join(specialists)}; got {args.type!r}.")
    # Every topic a worker may write must exist: producing to a missing one would create it
    # with the broker's defaults on a broker that auto-creates topics.
    require_topics(AdminClient(admin_config(settings.bootstrap)), [t.name for t in topology.all_topics()],
                   settings.bootstrap, ask_again=True)
    service = _build_service(args, settings, topology, SchemaSet.load())
    tracing.setup(service.agent, os.environ)  # OTLP export only when an endpoint is set
    stop.then = service.processor.stop  # before the check: a signal in between is not lost
    if stop.requested:
        return 0
    server = _health_server(service.processor, settings.metrics_port)
    tune_for_serving()  # runtime/collector.py: fewer collections while loops are in flight
    try:
        # The loop serves the producer's delivery reports as it wakes (runtime/delivery_pump.py).
        with asyncio.Runner(loop_factory=new_serving_loop) as runner:
            stats = runner.run(service.processor.run())
    finally:
        if server is not None:
            server.stop()
    stop.ignore()
    log.info("worker %s exiting: %d processed, %d failed", service.agent, stats.processed, stats.failed)
    return 0


def _check_worker(args: argparse.Namespace) -> int:
    """``worker --check``: no broker is asked, only the worker's own port on this host."""
    from agentstream.telemetry import check

    port = WorkerSettings.from_env(bootstrap="(unused by --check)", metrics_port=args.metrics_port).metrics_port
    ok, said = check(port, args.check)
    print(said, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _health_server(processor: Any, port: int) -> Any:
    if port == 0:
        return None
    from agentstream.telemetry import HealthServer

    return HealthServer(processor, port).start()


def _build_service(args: argparse.Namespace, settings: WorkerSettings, topology: Any, schemas: Any) -> Any:
    if args.kind == "router":
        from agentstream.router.app import build_router

        return build_router(settings, topology, schemas)
    if args.kind == "supervisor":
        from agentstream.supervisor.app import build_supervisor

        return build_supervisor(settings, topology, schemas)
    from agentstream.specialist.app import build_specialist

    return build_specialist(args.type, settings, topology, schemas)


def cmd_topology(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from agentstream.clients import admin_config
    from agentstream.topology_admin import TopologyConflictError, apply, format_plan, plan

    if args.apply_config and args.action != "apply":
        raise ConfigurationError("--apply-config goes with `topology apply`; `plan` never changes the cluster.")
    settings, topology = _settings_and_topology()
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
    from agentstream.client import Follower, Submitter, new_task
    from agentstream.serde import SchemaSet

    settings, topology = _settings_and_topology()
    schemas = SchemaSet.load()
    task = new_task(args.text, args.session, args.tenant, task_id=args.task_id, requested_agent=args.agent)
    tracing.setup("submit", os.environ)  # with an OTLP endpoint, the task's trace starts here
    submitter = Submitter(settings.bootstrap, topology, schemas)
    # Reading starts at the current end, before the task is sent, so its result cannot be missed.
    # Its progress events too: if no result comes in time, the last one says where it is.
    follower = Follower(settings.bootstrap, [topology.topic("results"), topology.topic("task_events")], schemas) \
        if args.wait else None
    submitter.submit(task)
    submitter.flush()
    print(task["task_id"], flush=True)
    if follower is None:
        return 0
    try:
        return _wait_for_result(follower, task["task_id"], args.timeout, full=args.full)
    finally:
        follower.close()


def _wait_for_result(follower: Any, task_id: str, timeout: float, *, full: bool) -> int:
    from agentstream.display import format_result, no_result_line
    from agentstream.events import TASK_EVENT, TASK_RESULT
    from agentstream.specialist.waiting import WAITING_STATE

    deadline = time.monotonic() + timeout
    last_event = None
    while time.monotonic() < deadline:
        for _, name, record in follower.poll_once(0.5):
            if record.get("task_id") != task_id:
                continue
            if name == TASK_RESULT:
                print(format_result(record, full=full))
                return 0 if record["status"] == "COMPLETED" else 1
            if name == TASK_EVENT:
                last_event = record
    print(no_result_line(task_id, timeout, last_event, WAITING_STATE), file=sys.stderr)
    return 1


def cmd_results(args: argparse.Namespace) -> int:
    from agentstream.client import Follower
    from agentstream.display import format_record, record_time
    from agentstream.serde import SchemaSet

    settings, topology = _settings_and_topology()
    topics = [topology.topic("results")] + ([topology.topic("task_events")] if args.events else [])
    everything = args.from_beginning or (args.last is None and not args.follow)
    last = 0 if everything else (args.last if args.last is not None else 10)
    follower = Follower(settings.bootstrap, topics, SchemaSet.load(), from_beginning=everything, last=last)
    try:
        backlog = sorted(follower.backlog(), key=lambda item: record_time(item[2]))
        shown = backlog if everything else backlog[-last:] if last else []
        for _, name, record in shown:
            print(format_record(name, record, full=args.full), flush=True)
        if not args.follow:
            if not shown:
                print(f"No results on {topics[0]} yet.", file=sys.stderr)
            return 0
        before = f"the {len(shown)} latest shown; " if shown else "none yet; "
        print(f"-- {before}waiting for new ones (Ctrl-C stops)", file=sys.stderr, flush=True)
        for _, name, record in follower.records(timeout=None):
            print(format_record(name, record, full=args.full), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    from agentstream.runtime.lag import consumer_lag

    settings, topology = _settings_and_topology()
    variants = [name for name in topology.workers if name not in topology.agents]  # each version's own group
    agents = [args.agent] if args.agent else ["router", *topology.specialist_types, *variants, "supervisor"]
    for agent in agents:
        topology.agent(agent)  # an unknown name is refused before any output
    print(f"{'group':32} {'topic':36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
    for agent in agents:
        group = topology.group(agent)
        topic = topology.topic(topology.agent(agent).input)
        for row in consumer_lag(settings.bootstrap, group, [topic]):
            committed = "-" if row.committed is None else str(row.committed)
            print(f"{group:32} {topic:36} {row.partition:>4} {committed:>10} {row.end:>10} {row.lag:>8}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from agentstream.retry.dlq_ops import check_arguments, run_command

    check_arguments(args)
    settings, topology = _settings_and_topology()
    return run_command(args, settings.bootstrap, topology)


def cmd_approvals(args: argparse.Namespace) -> int:
    from agentstream.approvals.ops import check_arguments, run_command

    check_arguments(args)
    settings, topology = _settings_and_topology()
    return run_command(args, settings.bootstrap, topology)


def cmd_gateway(args: argparse.Namespace) -> int:
    from agentstream.gateway.cli import run_gateway

    settings, topology = _settings_and_topology()
    run_gateway(args, settings, topology)
    return 0


def cmd_tenants(args: argparse.Namespace) -> int:
    from agentstream.tenancy.commands import check_file, hash_key_from

    if args.action == "hash-key":
        print(hash_key_from(sys.stdin))
        return 0
    print(check_file(args.tenants))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from agentstream.serde import SchemaSet
    from agentstream.transcripts.read import find_transcript
    from agentstream.transcripts.replay import run_command

    settings, topology = _settings_and_topology()
    transcript = find_transcript(settings.bootstrap, topology, SchemaSet.load(), args.task_id, args.agent)
    return run_command(transcript, topology, args.version, sys.stdout)


def cmd_eval(args: argparse.Namespace) -> int:
    from agentstream.evals.run import run_command
    from agentstream.topology import app_folder, load_topology

    topology = load_topology(app_folder(args.app))  # no broker: the cases run in-process
    return run_command(args.cases, args.agent, topology, args.version, args.threshold, sys.stdout)


def cmd_cancel(args: argparse.Namespace) -> int:
    from agentstream.cancellation.ops import run_command

    settings, topology = _settings_and_topology()
    return run_command(args, settings.bootstrap, topology)


def cmd_rollout(args: argparse.Namespace) -> int:
    from agentstream.rollout.ops import run_command, run_watch

    stop = _StopSignals() if args.action == "watch" else None  # before anything slow, as for a worker
    settings, topology = _settings_and_topology()
    if stop is None:
        return run_command(args, settings.bootstrap, topology)
    code = run_watch(args, settings.bootstrap, topology, lambda: stop.requested)
    stop.ignore()
    return code


def cmd_dev(args: argparse.Namespace) -> int:
    from agentstream.stack import Stack

    stop = _StopSignals()
    state_dir = state_dir_from_env(args.state_dir)
    bootstrap = None
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        address = find_bootstrap(state_dir)
        wait_until_answers(address.bootstrap, PROBE_TIMEOUT_S, source=address.source, slow_timeout=SLOW_BROKER_WAIT_S,
                           hint=f"unset {BOOTSTRAP_ENV} and `agentstream dev` starts a broker of its own "
                                "(the broker of an earlier `agentstream dev` stopped with it)")
        bootstrap = address.bootstrap
    # The broker dev starts when no cluster is given: --broker, else AGENTSTREAM_BROKER, else the embedded Tansu.
    broker = args.broker or (broker_to_start(TANSU) if bootstrap is None else TANSU)
    stack = Stack(state_dir, broker=broker, bootstrap=bootstrap)
    try:
        stack.start()
        if bootstrap is None:
            _announce_own_broker(stack.bootstrap, broker, write_bootstrap_file(state_dir, stack.bootstrap))
        else:
            print(f"broker: {bootstrap} ({BOOTSTRAP_ENV})")
        print(f"workers: {', '.join(f'{n} (pid {p.pid})' for n, p in stack.workers.items())}; Ctrl-C stops all",
              flush=True)
        while not stop.requested:
            dead = stack.dead_workers()
            if dead:
                print(f"agentstream: workers exited: {dead}; stopping (their output is above)", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        if bootstrap is None and stack.bootstrap:
            clear_bootstrap_file(state_dir, stack.bootstrap)
        codes = stack.stop()
        unclean = {name: code for name, code in codes.items() if code != 0}
        if codes:
            print(f"stopped: workers that did not exit cleanly: {unclean}" if unclean
                  else f"stopped: {len(codes)} workers exited cleanly")
    return 1 if unclean else 0


def _announce_own_broker(bootstrap: str, kind: str, written: Path) -> None:
    name = "embedded Tansu" if kind == TANSU else "Apache Kafka in a temporary directory"
    print(f"broker: {bootstrap} ({name}; it keeps nothing once dev stops)")
    print(f"  the other commands find it through {written} while dev runs (run them with the same state "
          f"directory, or set {STATE_DIR_ENV}={written.parent.resolve()} or {BOOTSTRAP_ENV}={bootstrap})")


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


def cmd_new(args: argparse.Namespace) -> int:
    """Add a specialist to an app folder (scaffold.py); `agentstream dev` then runs it."""
    from agentstream.scaffold import add_agent
    from agentstream.topology import app_folder

    topology_file = os.environ.get(TOPOLOGY_ENV)
    added = add_agent(app_folder(args.app), args.name)
    print(f"added agent {args.name!r} to {added.topology_path}")
    print(f"  tools:  {added.tools_path} (example tool {added.tool_name}; the agent's `tools` is its allowlist)")
    print(f"  prompt: {added.prompt_path}")
    if added.also_routed:
        print(f"  note: a task naming {args.name} also matches the routing rules of {', '.join(added.also_routed)}, so it "
              f"goes to {'+'.join(sorted({*added.also_routed, args.name}))}; narrow those rules (routing.rules in "
              f"{added.topology_path.name}) if it should go to {args.name} alone")
    hint = "" if args.app is None and topology_file is None else f"{TOPOLOGY_ENV}={added.topology_path} "
    print(f"run it: {hint}agentstream dev   then   {hint}agentstream submit \"...\" --session s-1 --agent {args.name} --wait")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Render the deploy files; no broker is asked."""
    from agentstream.apache_kafka import kafka_version
    from agentstream.deploy import drift, read_input, render, write
    from agentstream.deploy.image import missing_from_context
    from agentstream.topology import APP_TOPOLOGY_FILE, DEFAULT_PATH

    topology_file = Path(os.environ.get(TOPOLOGY_ENV) or DEFAULT_PATH)
    if topology_file.is_dir():
        topology_file = topology_file / APP_TOPOLOGY_FILE
    source = read_input(topology_file, args.out, kafka_version())
    differing = []
    for target in dict.fromkeys(args.target):
        files = render(target, source)
        if args.check:
            differing += drift(target, files, args.out)
            continue
        write(target, files, args.out)
        print(f"{target}: wrote {len(files)} files under {args.out} from {source.app_path}")
    if "compose" in args.target and (missing := missing_from_context(args.out)):
        print(f"agentstream: note: the Dockerfile builds agentstream from its build context {args.out}, which lacks "
              f"{', '.join(missing)}: build the image from a checkout of agentstream that holds the app (render with "
              "--out at the checkout's root, the default)", file=sys.stderr)
    if differing:
        print(f"agentstream: these files differ from the topology's rendering: {', '.join(differing)}; "
              f"run `agentstream deploy render {' '.join(args.target)}`", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agentstream.demo import run_demo

    from agentstream.topology import app_folder

    return run_demo(app_folder(args.app), state_dir_from_env(args.state_dir) / "demo", timeout=args.timeout)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": cmd_worker, "topology": cmd_topology, "submit": cmd_submit, "results": cmd_results, "lag": cmd_lag,
    "dlq": cmd_dlq, "approvals": cmd_approvals, "cancel": cmd_cancel, "tenants": cmd_tenants, "gateway": cmd_gateway,
    "dev": cmd_dev, "kafka": cmd_kafka, "bench": cmd_bench, "demo": cmd_demo, "new": cmd_new, "deploy": cmd_deploy,
    "replay": cmd_replay, "eval": cmd_eval, "rollout": cmd_rollout,
}


# Commands that handle stop signals themselves (_StopSignals); the others get Python's default.
_OWN_STOP_HANDLING = frozenset({"worker", "dev"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in _OWN_STOP_HANDLING:
        early_stop.release()
    try:
        _setup_logging(args)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return code
    except AgentStreamError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        print(f"agentstream: Kafka refused: {exc.args[0].str() if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`agentstream lag | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
