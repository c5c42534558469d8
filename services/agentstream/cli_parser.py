"""The arguments of the ``agentstream`` command (``cli.py`` runs them): every option has help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

from agentstream import __version__
from agentstream.broker import BOOTSTRAP_ENV, BOOTSTRAP_FILE, BROKER_KINDS
from agentstream.clients import DEFAULT_LINGER_MS
from agentstream.settings import (
    BROKER_ENV,
    DEFAULT_GATEWAY_PORT,
    FETCH_WAIT_ENV,
    FLUSH_TIMEOUT_ENV,
    GATEWAY_PORT_ENV,
    HEALTH_STALL_ENV,
    HEALTHZ_PATH,
    KAFKA_STATS_ENV,
    LINGER_ENV,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    MAX_INFLIGHT_ENV,
    METRICS_PATH,
    METRICS_PORT_ENV,
    READYZ_PATH,
    PREFIX_ENV,
    QUIET_PAUSE_ENV,
    STATE_DIR_ENV,
    TENANTS_ENV,
    TOPOLOGY_ENV,
)

ENVIRONMENT = f"""\
environment:
  {BOOTSTRAP_ENV}   the Kafka to use (host:port,...). Unset: the broker of a running
                            `agentstream dev`, whose address it writes to <state dir>/{BOOTSTRAP_FILE}
  KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*   passed to librdkafka (sasl.username, ...)
  {STATE_DIR_ENV}     state directory of every command (default .state; --state-dir wins)
  {TOPOLOGY_ENV}      an app folder or its topology file (default examples/support_desk)
  {PREFIX_ENV}        rename every topic and group (e.g. per environment)
  {TENANTS_ENV}       the tenants file of `gateway`; the router enforces its tenants' limits (default: none)
  {GATEWAY_PORT_ENV}  the port of `agentstream gateway` (default {DEFAULT_GATEWAY_PORT})
  {MAX_INFLIGHT_ENV}  agent loops a specialist runs at once (default 256)
  {METRICS_PORT_ENV}  a worker's HTTP port for {METRICS_PATH}, {HEALTHZ_PATH}, {READYZ_PATH} (default: none)
  {HEALTH_STALL_ENV}  seconds without a poll before {HEALTHZ_PATH} fails (default 30)
  {FLUSH_TIMEOUT_ENV} seconds a checkpoint waits for the broker's acknowledgements before the worker stops (default 30)
  {FETCH_WAIT_ENV}   ms the broker may hold a worker's empty fetch (default 500 on Kafka, 20 on Tansu;
                              50 or less also turns on {QUIET_PAUSE_ENV})
  {QUIET_PAUSE_ENV}   s without a record before a worker stops fetching an input until its end moves
                              (default 30 where the fetch wait is 50 ms or less, as on Tansu; 0: never)
  {LINGER_ENV}       ms a worker's producer waits to batch records (default {DEFAULT_LINGER_MS}; 0: lowest latency, more CPU)
  {KAFKA_STATS_ENV}   s between a worker's librdkafka statistics, counted in agentstream_kafka_requests_total (default: none)
  {LOG_LEVEL_ENV}     DEBUG, INFO (default), WARNING or ERROR; DEBUG also shows each routine task's line and librdkafka's log
  {LOG_FORMAT_ENV}    text (default) or json: one JSON object per line; secrets are redacted in both
  OTEL_EXPORTER_OTLP_ENDPOINT   export traces over OTLP/HTTP there (default: no tracing)
"""

STATE_DIR_HELP = f"state directory (default ${STATE_DIR_ENV}, else .state)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentstream", description="Kafka-native runtime for AI agents.", epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agentstream {__version__}")
    # -v goes on every command and every action, before or after the action's name: not
    # given, it sets nothing (SUPPRESS), so an action's parser cannot reset the command's.
    parser.set_defaults(verbose=False)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=f"debug logging, librdkafka's own lines included (also {LOG_LEVEL_ENV}=DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                              parents=[common], epilog=ENVIRONMENT,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    worker = command("worker", "run one agent service (a stream processor) until SIGTERM or Ctrl-C")
    worker.add_argument("kind", nargs="?", choices=["router", "specialist", "supervisor"],
                        help="which service (not needed with --check)")
    worker.add_argument("--type", help="the specialist type (specialist only; see the topology's agents)")
    worker.add_argument("--metrics-port", type=int, metavar="PORT",
                        help=f"serve {METRICS_PATH}, {HEALTHZ_PATH} and {READYZ_PATH} on this port "
                             f"(default ${METRICS_PORT_ENV}, else none)")
    worker.add_argument("--tenants", type=Path, metavar="FILE",
                        help=f"router: refuse tasks of tenants that are unknown, over their daily budget or their cap "
                             f"of tasks in flight, as this tenants file says (default ${TENANTS_ENV}, else none)")
    worker.add_argument("--check", nargs="?", const="live", choices=["live", "ready"],
                        help=f"do not run: ask the worker on the metrics port of this host ({HEALTHZ_PATH}, or "
                             f"{READYZ_PATH} with `--check ready`) and exit 0 if it answers OK, 1 if not "
                             "(for exec probes: Docker HEALTHCHECK, Kubernetes)")

    topology = command("topology", "show or create the topics of the topology, show config drift")
    topology.add_argument("action", choices=["plan", "apply"],
                          help="plan: what apply would do, changing nothing; apply: create what is missing "
                               "(refuses while a conflict stands)")
    topology.add_argument("--apply-config", action="store_true",
                          help="apply: also set declared configs that differ on existing topics "
                               "(IncrementalAlterConfigs; Apache Kafka only, not Tansu)")

    _add_submit(command("submit", "submit a task; prints its task id (and, with --wait, its result)"))
    _add_results(command("results", "print task results (and progress events)"))

    lag = command("lag", "committed offset, true end offset and lag per agent group and partition")
    lag.add_argument("--agent", help="only this agent type's group (router, a specialist type, supervisor)")

    _add_dlq(command("dlq", "list, show, replay or purge dead letters"), common)

    _add_approvals(command("approvals", "list, show, approve or deny the tool calls that wait for a human"), common)

    gateway = command("gateway", "serve the HTTP API (tasks, progress as SSE, approvals) until SIGTERM or Ctrl-C")
    gateway.add_argument("--port", type=int, help=f"the port (default ${GATEWAY_PORT_ENV}, else {DEFAULT_GATEWAY_PORT})")
    gateway.add_argument("--tenants", type=Path, metavar="FILE",
                         help=f"the tenants file: API key hashes, JWT settings, roles, limits (default ${TENANTS_ENV})")

    _add_tenants(command("tenants", "hash an API key for the tenants file, or check a tenants file"), common)
    _add_replay(command("replay", "run a finished task's agent loop again from its transcript; show where the runs diverge"))
    _add_eval(command("eval", "run a case set through a specialist's loop in-process and score it; exit 1 under the threshold"))
    cancel = command("cancel", "cancel a task: stopped at its next step, or while it waits, with a CANCELED result")
    cancel.add_argument("task_id", help="the task's id (as submitted)")
    cancel.add_argument("--reason", help="why (kept in the cancel and the result's error message)")
    cancel.add_argument("--by", help="who cancels (default: the login name)")
    _add_rollout(command("rollout", "canary weights, the per-version report and the rollback watcher of candidate versions"), common)

    dev = command("dev", "a broker, the topology and every worker, until Ctrl-C")
    dev.add_argument("--state-dir", type=Path, help=STATE_DIR_HELP + f"; the broker's address goes to <it>/{BOOTSTRAP_FILE}")
    dev.add_argument("--broker", choices=BROKER_KINDS,
                     help=f"the broker to start when {BOOTSTRAP_ENV} is unset: tansu (embedded; the default, "
                          f"unless ${BROKER_ENV} names another) or kafka (Apache Kafka 4 from Maven in a temporary "
                          "directory; needs java and mvn). Either keeps nothing once dev stops")

    _add_kafka(command("kafka", "start, inspect or stop a local Apache Kafka 4 cluster (needs java and mvn)"))

    new = command("new", "add to an app folder: `new agent NAME` writes a specialist's topology entry, "
                         "tools module and prompt")
    new.add_argument("what", choices=["agent"], help="what to add (a specialist agent type)")
    new.add_argument("name", help="the agent type's name: lower-case letters, digits and _, e.g. refunds")
    new.add_argument("--app", type=Path,
                     help=f"the app folder holding topology.yaml (default: the folder of ${TOPOLOGY_ENV}, else examples/support_desk)")

    _add_deploy(command("deploy", "generate the deploy files (Dockerfile, compose, Kubernetes) from the topology"), common)

    bench = command("bench", "run a benchmark from bench/ (pipeline, relay, concurrency, ...)")
    bench.add_argument("name", help="the benchmark: a module of bench/, e.g. pipeline or relay")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")

    demo = command("demo", "run an app's pipeline on its sample tickets (tickets.json) and show the results")
    demo.add_argument("--app", type=Path,
                      help=f"the app folder (default: ${TOPOLOGY_ENV}, else examples/support_desk)")
    demo.add_argument("--state-dir", type=Path, help=STATE_DIR_HELP + "; the demo keeps its stores and logs in <it>/demo")
    demo.add_argument("--timeout", type=float, default=None,
                      help="seconds to wait for every result (default 120 on the scripted model, 900 on a real one)")
    return parser


def _actions(command: argparse.ArgumentParser, common: argparse.ArgumentParser) -> Callable[..., argparse.ArgumentParser]:
    """How ``command`` adds its actions: each takes the common options (-v) as well."""
    return partial(command.add_subparsers(dest="action", required=True, metavar="action").add_parser, parents=[common])


def _add_submit(submit: argparse.ArgumentParser) -> None:
    submit.add_argument("text", help="the task's input")
    submit.add_argument("--session", required=True, help="the session id (the key: a session's tasks keep their order)")
    submit.add_argument("--tenant", default="default", help="the tenant id (default: default)")
    submit.add_argument("--task-id", help="the idempotency key: submitting it again gives one result (default: random)")
    submit.add_argument("--agent", help="skip classification: send to this specialist type of the topology")
    submit.add_argument("--wait", action="store_true",
                        help="wait for the task's result and print it; exit 0 if it COMPLETED, 1 otherwise")
    submit.add_argument("--timeout", type=float, default=120.0, help="with --wait: seconds to wait (default 120)")
    submit.add_argument("--full", action="store_true", help="with --wait: print the whole answer, not one cut line")


def _add_results(results: argparse.ArgumentParser) -> None:
    results.add_argument("--follow", action="store_true",
                         help="after the latest results, keep printing new ones until Ctrl-C")
    results.add_argument("--last", type=int, metavar="N",
                         help="start with the N latest results (default: all of them; 10 with --follow)")
    results.add_argument("--from-beginning", action="store_true",
                         help="start with every result the topic still holds (with --follow too)")
    results.add_argument("--events", action="store_true", help="also print the progress events of every stage")
    results.add_argument("--full", action="store_true",
                         help="print whole answers and error messages (default: one line, cut with …)")


def _add_dlq(dlq: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    add_action = _actions(dlq, common)
    listing = add_action("list", help="a table of dead letters")
    show = add_action("show", help="everything about one dead letter")
    show.add_argument("id", help="the dead letter's id (first column of `dlq list`)")
    replay = add_action("replay", help="re-inject into the original topic (attempt 0, replay marker)")
    replay.add_argument("id", nargs="?", help="the dead letter to replay (or use --all-matching)")
    replay.add_argument("--all-matching", action="store_true", help="every dead letter the filters match")
    purge = add_action("purge", help="hide dead letters (asks first)")
    purge.add_argument("ids", nargs="*", help="these ids only (default: all matching)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for action in (listing, replay, purge):
        action.add_argument("--since", help="dead-lettered since: 30m, 1h, 2d or an ISO time")
        action.add_argument("--stage", help="only this stage (router, a specialist type, supervisor)")
        action.add_argument("--error", help="only this error class (PERMANENT, TRANSIENT) or exception type")


def _add_approvals(approvals: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    add_action = _actions(approvals, common)
    add_action("list", help="the requests no decision answers yet, with age and deadline")
    show = add_action("show", help="one request and every decision it got")
    approve = add_action("approve", help="let the call run (with --args: with these arguments instead)")
    approve.add_argument("--args", help="edited arguments, a JSON object: the tool runs with these")
    approve.add_argument("--reason", help="why (kept with the decision)")
    deny = add_action("deny", help="refuse the call; the model reads the reason as the tool's result")
    deny.add_argument("--reason", required=True, help="why: the model reads it and tells the user")
    for action in (show, approve, deny):
        action.add_argument("id", help="the approval id (first column of `approvals list`)")
    for action in (approve, deny):
        action.add_argument("--who", help="who decides (default: the login name)")


def _add_tenants(tenants: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    add_action = _actions(tenants, common)
    add_action("hash-key", help="read an API key from stdin and print the hash the tenants file stores "
                                        "(e.g. `printf %%s \"$KEY\" | agentstream tenants hash-key`)")
    check = add_action("check", help="load the tenants file (its JWT keys included) and list its tenants; "
                                             "exit 2 with the problem if it does not load")
    check.add_argument("--tenants", type=Path, metavar="FILE", help=f"the tenants file (default ${TENANTS_ENV})")


def _add_replay(replay: argparse.ArgumentParser) -> None:
    replay.add_argument("task_id", help="the task whose transcript to replay")
    replay.add_argument("--agent", help="the specialist whose run to replay (needed when several ran the task)")
    replay.add_argument("--version", metavar="live|candidate|PATH",
                        help="run this version's model (its prompt and model settings; a topology file or app folder "
                             "for PATH) against the recorded tool results; default: exact, from the recorded replies, "
                             "under the settings of the version that ran the task (live, or a canary's candidate)")


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (a share of the cases, e.g. 0.8)")
    return value


def _add_eval(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("cases", type=Path, help="the case file (YAML; e.g. examples/support_desk/evals.yaml)")
    evaluate.add_argument("--agent", help="the specialist to evaluate (default: the case file's agent)")
    evaluate.add_argument("--app", type=Path,
                          help=f"the app folder (default: ${TOPOLOGY_ENV}, else examples/support_desk)")
    evaluate.add_argument("--version", default="live", metavar="live|candidate|PATH",
                          help="which version of the agent: the app's (live, default), its candidate, or the "
                               "settings of another topology file or app folder")
    evaluate.add_argument("--threshold", type=_unit_interval,
                          help="the share of cases that must pass (default: the case file's, else 0.8)")


def _add_rollout(rollout: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    add_action = _actions(rollout, common)
    weight = add_action("set-weight", help="the share of sessions a canary gets, now, on every router")
    weight.add_argument("agent", help="the specialist type whose candidate it is (e.g. billing)")
    weight.add_argument("weight", type=float, help="0 to 1 (0.2: 20 %% of the sessions; 0: roll back)")
    weight.add_argument("--reason", default="", help="why (shown by `rollout report`)")
    weight.add_argument("--who", help="who sets it (default: the login name)")
    report = add_action("report", help="per version: completion, latency, cost, steps, tool errors, agreement")
    watch = add_action("watch", help="check the rollback rules continuously; roll a breaching canary "
                                "back, step a healthy one up (promote:)")
    for action in (report, watch):
        action.add_argument("--window", type=float, default=3600.0, metavar="S",
                            help="judge the results of the last S seconds (default 3600)")
    report.add_argument("--agent", help="only this specialist type")
    watch.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between checks (default 5)")


def _add_kafka(kafka: argparse.ArgumentParser) -> None:
    kafka.add_argument("action", choices=["start", "status", "stop"],
                       help="start: fetch the jars once (Maven), format and start (or start a stopped cluster again, "
                            "data kept); status: exit 0 if every node runs; stop: SIGTERM every node")
    kafka.add_argument("--dir", default=".kafka", help="where the nodes keep their data and logs (default .kafka)")
    kafka.add_argument("--nodes", type=int, choices=[1, 3], default=1, help="1 node, or 3 for replication (start only)")
    kafka.add_argument("--heap-mb", type=int, default=512, help="JVM heap per node in MB (start only)")


def _add_deploy(deploy: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    add_action = _actions(deploy, common)
    render = add_action(
        "render", help="write the deploy files of the topology (default: $AGENTSTREAM_TOPOLOGY, else the default app)",
        description="compose: Dockerfile, docker-compose.yml (the gateway in the profile gateway), "
                    "deploy/prometheus.yml and deploy/grafana/; k8s: k8s/ (namespace, topology ConfigMap, "
                    "Deployments, PodDisruptionBudgets, KEDA ScaledObjects, Strimzi KafkaTopics, the gateway's "
                    "Service and HorizontalPodAutoscaler). A topology with a canary also gets the rollout "
                    "watcher. Files the topology no longer needs are deleted.")
    render.add_argument("target", nargs="+", choices=["compose", "k8s"], help="what to render (both: compose k8s)")
    render.add_argument("--out", type=Path, default=Path("."),
                        help="the folder to write into, also the Docker build context (default: the current one)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and list the files that differ from a fresh rendering")
