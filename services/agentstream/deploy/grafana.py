"""Grafana for the compose stack: the Prometheus data source and the agentstream dashboard,
provisioned from files (no clicking), of the metrics the workers serve today."""

from __future__ import annotations

from typing import Any

GRAFANA_IMAGE = "grafana/grafana:11.6.0"
DATASOURCE_UID = "prometheus"
DASHBOARD_UID = "agentstream"
DATASOURCE_FILE = "deploy/grafana/provisioning/datasources/prometheus.yml"
PROVIDER_FILE = "deploy/grafana/provisioning/dashboards/agentstream.yml"
DASHBOARD_FILE = "deploy/grafana/dashboards/agentstream.json"
_DASHBOARDS_IN_CONTAINER = "/var/lib/grafana/dashboards"

# (title, PromQL, legend, unit): one time series panel each, two per row.
PANELS: tuple[tuple[str, str, str, str], ...] = (
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
