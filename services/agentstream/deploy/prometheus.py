"""prometheus.yml for the compose stack: every replica of every worker and of the gateway,
found by DNS."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.gateway import GATEWAY
from agentstream.deploy.workers import Worker
from agentstream.settings import DEFAULT_GATEWAY_PORT, DEPLOY_METRICS_PORT, METRICS_PATH

PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
PROMETHEUS_FILE = "deploy/prometheus.yml"
WORKERS_JOB = "agentstream"
GATEWAY_JOB = "agentstream-gateway"  # its own job: `up{job="agentstream"}` stays the workers'


def prometheus_config(workers: list[Worker]) -> dict[str, Any]:
    # DNS A records, not static targets: a service scaled with `docker compose up --scale`
    # answers with one address per replica, and each is scraped.
    # The gateway serves /metrics on its API port; without its compose profile the name does
    # not resolve and the job has no target.
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [_job(WORKERS_JOB, [w.name for w in workers], DEPLOY_METRICS_PORT),
                           _job(GATEWAY_JOB, [GATEWAY], DEFAULT_GATEWAY_PORT)],
    }


def _job(name: str, services: list[str], port: int) -> dict[str, Any]:
    return {
        "job_name": name,
        "metrics_path": METRICS_PATH,
        "dns_sd_configs": [{"names": services, "type": "A", "port": port}],
        "relabel_configs": [{"source_labels": ["__meta_dns_name"], "target_label": "service"}],
    }
