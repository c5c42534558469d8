"""Prometheus metrics of agentstream (prometheus-client). Metrics are created once, on
first use, in the default registry; a worker serves them on its HTTP port
(telemetry/server.py, ``AGENTSTREAM_METRICS_PORT``). Consumer lag is collected at scrape
time (telemetry/lag_collector.py).

Names follow Prometheus style (base units, ``_total`` for counters, added by the client)
and, where the OpenTelemetry GenAI semantic conventions have a metric, its name and unit:
``gen_ai.client.token.usage`` → ``agentstream_gen_ai_client_token_usage`` (a histogram of
tokens per call by ``type``), ``gen_ai.client.operation.duration`` →
``agentstream_gen_ai_client_operation_duration_seconds``.

Label cardinality (every series lives in every worker's memory and in Prometheus):
- ``agent``, ``stage``, ``worker``, ``model``, ``tool``: bounded by the topology and the
  tools modules. A tool name the model made up is never a label value (``not_allowed``).
- ``outcome`` / ``error_class``: ``ok``, ``cache_hit`` or an exception class name — a
  fixed set of classes in the code, never a message.
- ``status``: the TaskResult status enum; ``behavior_version``: one hash per deployed
  behaviour of an agent type (a redeploy retires the old series).
- ``client`` and ``request`` (agentstream_kafka_requests): two clients and the Kafka
  protocol's request names (a few dozen at most, a handful in use).
- ``tenant``: only on two counters (task results, cost), on the router's two tenant ledger
  gauges (the tenants file's tenants only) and on no histogram, so a tenant costs about
  eight series. Tenants are a deployment's customers (tens to a few thousand),
  which Prometheus handles; never a per-user id (session and task ids are not labels).
  A deployment with unbounded tenant ids should drop the label at scrape time
  (``metric_relabel_configs`` with ``labeldrop: tenant``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from agentstream.settings import KAFKA_STATS_ENV

# Seconds: a task or a loop takes from tens of milliseconds (scripted) to minutes (real models).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The bucket boundaries the OpenTelemetry GenAI conventions advise for token usage.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
COST_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)
STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
# Seconds: an acknowledgement or a callback's wait on a worker's event loop, from a
# millisecond (idle) to seconds (a saturated loop or a broker in trouble).
LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# agentstream_circuit_breaker_state: the value per state (controls/breaker.py CircuitState values).
BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}
# The TaskResult status enum (schemas/TaskResult.avsc): series made at start, see register_all.
TASK_STATUSES = ("COMPLETED", "FAILED", "REJECTED", "EXPIRED", "CANCELED")
NOT_ALLOWED = "not_allowed"  # the tool label of a call the agent's allowlist refused
OK = "ok"
CACHE_HIT = "cache_hit"


# -- families ------------------------------------------------------------------------------
@cache
def retries() -> Counter:
    return Counter("agentstream_retries", "Events sent to a retry tier", ["stage", "error_class", "tier"])


@cache
def dead_letters() -> Counter:
    return Counter("agentstream_dead_letters", "Events dead-lettered", ["stage", "error_class"])


@cache
def parked() -> Counter:
    return Counter("agentstream_parked", "Events parked behind an event of their session in retry", ["stage"])


@cache
def rebalances() -> Counter:
    return Counter("agentstream_rebalances", "Partitions assigned, revoked or lost, per rebalance", ["worker", "change"])


@cache
def idle_partitions() -> Counter:
    return Counter("agentstream_idle_partitions",
                   "Idle partitions paused at their end (retry tiers, quiet inputs), resumed, or a check of their ends failed",
                   ["worker", "change"])


@cache
def restore_seconds() -> Histogram:
    return Histogram("agentstream_restore_seconds", "Time to restore the tables of newly assigned partitions",
                     ["worker"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))


@cache
def checkpoint_seconds() -> Histogram:
    return Histogram("agentstream_checkpoint_seconds",
                     "One commit of a processor: changelog produce, flush, offset commit, store write",
                     ["worker"], buckets=LATENCY_BUCKETS)


@cache
def offset_commit_seconds() -> Histogram:
    return Histogram("agentstream_offset_commit_seconds",
                     "The offset commit of one checkpoint, on the consumer's thread: the worker polls no record meanwhile",
                     ["worker"], buckets=LATENCY_BUCKETS)


@cache
def task_results() -> Counter:
    return Counter("agentstream_task_results", "TaskResults published, by the stage that published them",
                   ["stage", "status", "tenant"])


@cache
def task_duration() -> Histogram:
    return Histogram("agentstream_task_duration_seconds", "End-to-end task latency: result completed_at - submitted_at",
                     ["status"], buckets=LATENCY_BUCKETS)


@cache
def task_cost() -> Histogram:
    return Histogram("agentstream_task_cost_usd", "Cost of one task (its result's usage.cost_usd)", ["status"],
                     buckets=COST_BUCKETS)


@cache
def tenant_cost() -> Counter:
    return Counter("agentstream_tenant_cost_usd", "USD spent on the tasks of a tenant (results' usage.cost_usd)",
                   ["tenant"])


@cache
def stage_duration() -> Histogram:
    return Histogram("agentstream_stage_duration_seconds",
                     "Time a task spent in a stage: router = submitted to routed, specialist = its run",
                     ["stage", "status"], buckets=LATENCY_BUCKETS)


@cache
def agent_steps() -> Histogram:
    return Histogram("agentstream_agent_steps", "Model turns of a specialist run, per completion",
                     ["agent", "status", "behavior_version"], buckets=STEP_BUCKETS)


@cache
def specialist_runs() -> Counter:
    # variant: live, candidate or shadow (rollout/); with the behaviour version, what a rollout compares.
    return Counter("agentstream_specialist_runs", "Specialist runs ended, by version and status",
                   ["agent", "variant", "behavior_version", "status"])


@cache
def rollout_weight() -> Gauge:
    return Gauge("agentstream_rollout_weight", "Share of sessions a router sends to an agent type's canary", ["agent"])


@cache
def inflight_loops() -> Gauge:
    return Gauge("agentstream_inflight_loops", "Agent loops running in this worker now", ["agent"])


@cache
def approvals_waiting() -> Gauge:
    return Gauge("agentstream_approvals_waiting", "Tasks of this worker's partitions waiting for an approval decision",
                 ["agent"])


@cache
def tenant_spend_today() -> Gauge:
    return Gauge("agentstream_tenant_spend_today_usd",
                 "A tenant's spend this UTC day, as the router's tenant ledger has read it from the results", ["tenant"])


@cache
def tenant_in_flight() -> Gauge:
    return Gauge("agentstream_tenant_tasks_in_flight",
                 "A tenant's tasks submitted and not yet answered, as the router's tenant ledger has read them", ["tenant"])


@cache
def tool_calls() -> Counter:
    return Counter("agentstream_tool_calls", "Tool calls a model asked for", ["agent", "tool", "outcome"])


@cache
def model_calls() -> Counter:
    return Counter("agentstream_model_calls", "Model calls (after their retries), by outcome or error class",
                   ["agent", "model", "outcome"])


@cache
def operation_duration() -> Histogram:
    return Histogram("agentstream_gen_ai_client_operation_duration_seconds",
                     "Duration of a model call, retries and rate-limit waits included (gen_ai.client.operation.duration)",
                     ["agent", "model", "outcome"], buckets=LATENCY_BUCKETS)


@cache
def token_usage() -> Histogram:
    return Histogram("agentstream_gen_ai_client_token_usage", "Tokens of one model call (gen_ai.client.token.usage)",
                     ["agent", "model", "type"], buckets=TOKEN_BUCKETS)


@cache
def model_cost() -> Counter:
    return Counter("agentstream_model_cost_usd", "USD of model calls (each call's tokens at the provider's price)",
                   ["agent", "model"])


@cache
def model_retries() -> Counter:
    return Counter("agentstream_model_retries", "Model call attempts after the first, by the error retried",
                   ["agent", "model", "error_class"])


@cache
def breaker_state() -> Gauge:
    return Gauge("agentstream_circuit_breaker_state", "Circuit breaker of a model: 0 closed, 1 open, 2 half-open",
                 ["model"])


@cache
def rate_limit_wait() -> Histogram:
    return Histogram("agentstream_rate_limit_wait_seconds", "Time a model call attempt waited for its rate limit",
                     ["agent", "model"], buckets=(0, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60))


@cache
def acked_write_seconds() -> Histogram:
    return Histogram("agentstream_acked_write_seconds",
                     "Time from producing a record the worker waits for (a checkpoint, an acknowledged send) to "
                     "its acknowledgement reaching the worker's event loop; acknowledged writes only, the expiry "
                     "passes' deletes left out", ["worker"], buckets=LOOP_BUCKETS)


@cache
def event_loop_lag_seconds() -> Histogram:
    return Histogram("agentstream_event_loop_lag_seconds",
                     "How late the worker's event loop ran a timer, one sample every 0.1 s: what a callback made "
                     "ready then waits (an acknowledgement, a model reply) before it runs", ["worker"],
                     buckets=LOOP_BUCKETS)


@cache
def kafka_requests() -> Counter:
    return Counter("agentstream_kafka_requests",
                   "Requests the worker's Kafka clients sent to the brokers, by client (producer, consumer) and "
                   f"request type (Produce, Fetch, ...), from librdkafka's statistics: counted only with {KAFKA_STATS_ENV} "
                   "set, up to that many seconds late; librdkafka leaves out ConsumerGroupHeartbeat and "
                   "OffsetForLeaderEpoch", ["worker", "client", "request"])


# -- label children of the per-call series ---------------------------------------------------
# Every model and tool call adds to these; ``labels(...)`` checks and hashes its values each
# time, so the children are looked up once per label values and kept. Nothing here ever
# removes a child from its family, so a kept child is the one the family exports; the label
# values are the bounded ones above, so these caches hold no more than the families do.
@cache
def _tool_series(agent: str, tool: str, outcome: str) -> Counter:
    return tool_calls().labels(agent, tool, outcome)


@cache
def _call_series(agent: str, model: str, outcome: str) -> tuple[Counter, Histogram]:
    return model_calls().labels(agent, model, outcome), operation_duration().labels(agent, model, outcome)


@cache
def _token_series(agent: str, model: str) -> tuple[Histogram, Histogram, Counter]:
    usage = token_usage()
    return usage.labels(agent, model, "input"), usage.labels(agent, model, "output"), model_cost().labels(agent, model)


@cache
def _stage_series(stage: str, status: str) -> Histogram:
    return stage_duration().labels(stage, status)


@cache
def _run_series(agent: str, variant: str, version: str, status: str) -> tuple[Histogram, Counter]:
    return agent_steps().labels(agent, status, version), specialist_runs().labels(agent, variant, version, status)


@cache
def _result_series(stage: str, status: str, tenant: str) -> tuple[Counter, Histogram, Histogram, Counter]:
    # A child per tenant, as the tenant's families keep one: the cache holds no more.
    return (task_results().labels(stage, status, tenant), task_duration().labels(status),
            task_cost().labels(status), tenant_cost().labels(tenant))


@cache
def _inflight_series(agent: str) -> Gauge:
    return inflight_loops().labels(agent)


FAMILIES = (
    retries, dead_letters, parked, rebalances, idle_partitions, restore_seconds, checkpoint_seconds, offset_commit_seconds, task_results, task_duration,
    task_cost, tenant_cost, stage_duration, agent_steps, inflight_loops, approvals_waiting, tenant_spend_today,
    tenant_in_flight, tool_calls, model_calls, operation_duration,
    token_usage, model_cost, model_retries, breaker_state, rate_limit_wait, specialist_runs, rollout_weight,
    acked_write_seconds, event_loop_lag_seconds, kafka_requests,
)


def register_all() -> None:
    """Create every metric now, so a scrape lists each family (its HELP and TYPE) before its
    first event: dashboards and alerts see a 0-series family rather than none. The task
    latency and cost series of each status start at 0 too: a series that appears with its
    first task already counted hides that task from ``rate()``."""
    for metric in FAMILIES:
        metric()
    for status in TASK_STATUSES:
        task_duration().labels(status)
        task_cost().labels(status)


# -- what the stages call: one line at each instrumentation point --------------------------
def task_result(stage: str, result: Mapping[str, Any]) -> None:
    """A TaskResult was published by ``stage``: count it, its latency and its cost."""
    status = str(result["status"])
    results, duration, costs, tenant_costs = _result_series(stage, status, str(result.get("tenant_id") or ""))
    results.inc()
    completed, submitted = result.get("completed_at"), result.get("submitted_at")
    if isinstance(completed, int) and isinstance(submitted, int) and completed >= submitted:
        duration.observe((completed - submitted) / 1000)
    cost = float((result.get("usage") or {}).get("cost_usd") or 0.0)
    costs.observe(cost)
    tenant_costs.inc(cost)


def stage_done(stage: str, status: str, started_ms: int, finished_ms: int) -> None:
    _stage_series(stage, status).observe(max(0, finished_ms - started_ms) / 1000)


def specialist_run(result: Mapping[str, Any], steps: int) -> None:
    """A specialist run ended with the SpecialistResult ``result`` (about to be sent): its
    model turns and its duration."""
    agent, status = str(result["agent_type"]), str(result["status"])
    version = str(result.get("behavior_version") or "")
    steps_series, runs_series = _run_series(agent, str(result.get("variant") or "live"), version, status)
    steps_series.observe(steps)
    runs_series.inc()
    stage_done(agent, status, int(result["started_at"]), int(result["finished_at"]))


def canary_weight(agent: str, weight: float) -> None:
    rollout_weight().labels(agent).set(weight)


@contextmanager
def loop_running(agent: str) -> Iterator[None]:
    """Inside the block, the loop counts in ``agentstream_inflight_loops``."""
    gauge = _inflight_series(agent)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def waiting_for_approval(agent: str, tasks: int) -> None:
    approvals_waiting().labels(agent).set(tasks)


def tenant_ledger(tenant: str, spent_today: float, in_flight: int) -> None:
    tenant_spend_today().labels(tenant).set(spent_today)
    tenant_in_flight().labels(tenant).set(in_flight)


def tool_call(agent: str, tool: str, allowed: bool, ok: bool) -> None:
    outcome = ("ok" if ok else "error") if allowed else "refused"
    _tool_series(agent, tool if allowed else NOT_ALLOWED, outcome).inc()


def model_call(agent: str, model: str) -> _ModelCallTimer:
    """Time one model call; the caller sets ``outcome`` to ``cache_hit`` where it applies;
    an exception sets its class name (and propagates)."""
    return _ModelCallTimer(agent, model)


class _ModelCallTimer:
    """model_call's block: a class, not a generator (one per model call; a generator-based
    context manager costs a generator and its wrapper on top)."""

    __slots__ = ("_agent", "_model", "_seen", "_started")

    def __init__(self, agent: str, model: str) -> None:
        self._agent = agent
        self._model = model
        self._seen = {"outcome": OK}
        self._started = 0.0

    def __enter__(self) -> dict[str, str]:
        self._started = time.monotonic()
        return self._seen

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if kind is not None:  # CancelledError too: a drained call is no success
            self._seen["outcome"] = kind.__name__
        calls, duration = _call_series(self._agent, self._model, self._seen["outcome"])
        calls.inc()
        duration.observe(time.monotonic() - self._started)


def tokens_used(agent: str, model: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
    inputs, outputs, cost = _token_series(agent, model)
    inputs.observe(input_tokens)
    outputs.observe(output_tokens)
    cost.inc(max(0.0, cost_usd))


def model_retry(agent: str, model: str, error: BaseException) -> None:
    model_retries().labels(agent, model, type(error).__name__).inc()


def breaker_changed(model: str, state: str) -> None:
    breaker_state().labels(model).set(BREAKER_STATES[state])


def rate_limit_waited(agent: str, model: str, seconds: float) -> None:
    rate_limit_wait().labels(agent, model).observe(seconds)
