"""Grafana for the compose stack: the Prometheus data source and the agentstream dashboard,
provisioned from files (no clicking), of the metrics the workers serve (agentstream/metrics.py)
and the gateway's (gateway/metrics.py)."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.prometheus import GATEWAY_JOB

GRAFANA_IMAGE = "grafana/grafana:11.6.0"
DATASOURCE_UID = "prometheus"
DASHBOARD_UID = "agentstream"
DATASOURCE_FILE = "deploy/grafana/provisioning/datasources/prometheus.yml"
PROVIDER_FILE = "deploy/grafana/provisioning/dashboards/agentstream.yml"
DASHBOARD_FILE = "deploy/grafana/dashboards/agentstream.json"
_DASHBOARDS_IN_CONTAINER = "/var/lib/grafana/dashboards"

_ERRORS = 'outcome!~"ok|cache_hit"'  # a model call that failed (agentstream/metrics.py outcomes)

# (title, PromQL, legend, unit): one time series panel each, two per row. The tasks and
# their agents first (what the users get, what it costs), then the plumbing.
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("Task results /s by status", "sum by (status) (rate(agentstream_task_results_total[5m]))", "{{status}}", "ops"),
    ("Completion rate", 'sum(rate(agentstream_task_results_total{status="COMPLETED"}[5m])) / '
     "sum(rate(agentstream_task_results_total[5m]))", "completed", "percentunit"),
    ("Task latency p50 by status",
     "histogram_quantile(0.5, sum by (le, status) (rate(agentstream_task_duration_seconds_bucket[5m])))",
     "{{status}}", "s"),
    ("Task latency p95 by status",
     "histogram_quantile(0.95, sum by (le, status) (rate(agentstream_task_duration_seconds_bucket[5m])))",
     "{{status}}", "s"),
    ("Stage latency p95", "histogram_quantile(0.95, sum by (le, stage) (rate(agentstream_stage_duration_seconds_bucket[5m])))",
     "{{stage}}", "s"),
    ("Cost per task (mean)", "sum(rate(agentstream_task_cost_usd_sum[5m])) / sum(rate(agentstream_task_cost_usd_count[5m]))",
     "USD per task", "currencyUSD"),
    ("Cost per hour by tenant", "sum by (tenant) (increase(agentstream_tenant_cost_usd_total[1h]))", "{{tenant}}",
     "currencyUSD"),
    ("Cost per hour by model", "sum by (model) (increase(agentstream_model_cost_usd_total[1h]))", "{{model}}",
     "currencyUSD"),
    ("Tokens /s by model", "sum by (model, type) (rate(agentstream_gen_ai_client_token_usage_sum[5m]))",
     "{{model}} {{type}}", "short"),
    ("Steps per completion p50", "histogram_quantile(0.5, sum by (le, agent) (rate(agentstream_agent_steps_bucket[15m])))",
     "{{agent}}", "none"),
    ("In-flight agent loops", "sum by (agent) (agentstream_inflight_loops)", "{{agent}}", "short"),
    ("Tasks waiting for approval", "sum by (agent) (agentstream_approvals_waiting)", "{{agent}}", "short"),
    ("Tool success rate", 'sum by (tool) (rate(agentstream_tool_calls_total{outcome="ok"}[5m])) / '
     "sum by (tool) (rate(agentstream_tool_calls_total[5m]))", "{{tool}}", "percentunit"),
    ("Tool calls /s by outcome", "sum by (tool, outcome) (rate(agentstream_tool_calls_total[5m]))",
     "{{tool}} {{outcome}}", "ops"),
    ("Model calls /s by outcome", "sum by (model, outcome) (rate(agentstream_model_calls_total[5m]))",
     "{{model}} {{outcome}}", "ops"),
    ("Model error rate", f"sum by (model) (rate(agentstream_model_calls_total{{{_ERRORS}}}[5m])) / "
     "sum by (model) (rate(agentstream_model_calls_total[5m]))", "{{model}}", "percentunit"),
    ("Model call latency p95", "histogram_quantile(0.95, sum by (le, model) "
     "(rate(agentstream_gen_ai_client_operation_duration_seconds_bucket[5m])))", "{{model}}", "s"),
    ("Model retries /s by error", "sum by (model, error_class) (rate(agentstream_model_retries_total[5m]))",
     "{{model}} {{error_class}}", "ops"),
    ("Circuit breakers (0 closed, 1 open, 2 half-open)", "max by (model) (agentstream_circuit_breaker_state)",
     "{{model}}", "none"),
    ("Rate-limit wait p95", "histogram_quantile(0.95, sum by (le, model) (rate(agentstream_rate_limit_wait_seconds_bucket[5m])))",
     "{{model}}", "s"),
    ("Checkpoint duration p95", "histogram_quantile(0.95, sum by (le, worker) (rate(agentstream_checkpoint_seconds_bucket[5m])))",
     "{{worker}}", "s"),
    # Where a loop waits besides its model: the broker (acknowledgements) or its own worker (loop lag).
    ("Acknowledged write p95", "histogram_quantile(0.95, sum by (le, worker) (rate(agentstream_acked_write_seconds_bucket[5m])))",
     "{{worker}}", "s"),
    ("Event loop lag p95", "histogram_quantile(0.95, sum by (le, worker) (rate(agentstream_event_loop_lag_seconds_bucket[5m])))",
     "{{worker}}", "s"),
    ("Workers up", 'up{job="agentstream"}', "{{service}} {{instance}}", "none"),
    ("Consumer lag by group", "sum by (group) (agentstream_consumer_lag)", "{{group}}", "short"),
    ("Consumer lag by partition", "agentstream_consumer_lag", "{{topic}}[{{partition}}]", "short"),
    ("Retries /s by stage and tier", "sum by (stage, tier) (rate(agentstream_retries_total[5m]))",
     "{{stage}} tier {{tier}}", "ops"),
    ("Dead letters /s by stage and error", "sum by (stage, error_class) (rate(agentstream_dead_letters_total[5m]))",
     "{{stage}} {{error_class}}", "ops"),
    ("Events parked /s by stage", "sum by (stage) (rate(agentstream_parked_total[5m]))", "{{stage}}", "ops"),
    ("Rebalances (15 min)", "sum by (worker, change) (increase(agentstream_rebalances_total[15m]))",
     "{{worker}} {{change}}", "short"),
    ("Restore time p95", "histogram_quantile(0.95, sum by (le, worker) (rate(agentstream_restore_seconds_bucket[15m])))",
     "{{worker}}", "s"),
    # Rolling out a new agent version (rollout/): each version's completion, and the canary weights.
    ("Specialist completion by version", 'sum by (agent, variant, behavior_version) '
     '(rate(agentstream_specialist_runs_total{status="COMPLETED"}[5m])) / '
     "sum by (agent, variant, behavior_version) (rate(agentstream_specialist_runs_total[5m]))",
     "{{agent}} {{variant}} {{behavior_version}}", "percentunit"),
    ("Canary weight", "max by (agent) (agentstream_rollout_weight)", "{{agent}}", "percentunit"),
    # The HTTP gateway (gateway/metrics.py), scraped as its own job.
    ("Gateway requests /s by route and status", "sum by (route, status) (rate(agentstream_gateway_requests_total[5m]))",
     "{{route}} {{status}}", "ops"),
    ("Gateway answer time p95 by route", "histogram_quantile(0.95, sum by (le, method, route) "
     "(rate(agentstream_gateway_request_duration_seconds_bucket[5m])))", "{{method}} {{route}}", "s"),
    ("Gateway submissions /s by outcome", "sum by (outcome) (rate(agentstream_gateway_submissions_total[5m]))",
     "{{outcome}}", "ops"),
    ("Gateway SSE streams open", "sum(agentstream_gateway_sse_streams)", "streams", "short"),
    ("Gateway replicas up", f'up{{job="{GATEWAY_JOB}"}}', "{{instance}}", "none"),
)


def grafana_mounts() -> list[str]:
    return [
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
        f"./deploy/grafana/dashboards:{_DASHBOARDS_IN_CONTAINER}:ro",
    ]


def datasource(prometheus_url: str) -> dict[str, Any]:
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True,
    }]}


def dashboard_provider() -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "agentstream", "folder": "agentstream", "type": "file", "disableDeletion": True,
        "options": {"path": _DASHBOARDS_IN_CONTAINER},
    }]}


def dashboard() -> dict[str, Any]:
    return {
        "uid": DASHBOARD_UID,
        "title": "agentstream",
        "tags": ["agentstream", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": [_panel(i, *spec) for i, spec in enumerate(PANELS)],
    }


def _panel(index: int, title: str, expr: str, legend: str, unit: str) -> dict[str, Any]:
    source = {"type": "prometheus", "uid": DATASOURCE_UID}
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": source,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "datasource": source, "expr": expr, "legendFormat": legend}],
    }
