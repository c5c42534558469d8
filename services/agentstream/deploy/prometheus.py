"""prometheus.yml for the compose stack: every replica of every worker, found by DNS."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.workers import Worker
from agentstream.settings import DEPLOY_METRICS_PORT, METRICS_PATH

PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
PROMETHEUS_FILE = "deploy/prometheus.yml"


def prometheus_config(workers: list[Worker]) -> dict[str, Any]:
    # DNS A records, not static targets: a service scaled with `docker compose up --scale`
    # answers with one address per replica, and each is scraped.
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [{
            "job_name": "agentstream",
            "metrics_path": METRICS_PATH,
            "dns_sd_configs": [{"names": [w.name for w in workers], "type": "A", "port": DEPLOY_METRICS_PORT}],
            "relabel_configs": [{"source_labels": ["__meta_dns_name"], "target_label": "service"}],
        }],
    }
