"""A real Prometheus (the Debian package, see scripts/install-debian-packages.sh) scrapes
live worker processes — router, the support desk's three specialists and the supervisor,
each with its metrics port — while tasks run on a real broker; PromQL over its HTTP API
must then give the task counters, finite latency quantiles, and token, model-call,
tool-call and cost counters that add up to the usage in the tasks' results; and it must
accept every PromQL expression of the generated Grafana dashboard.

The specialists call an OpenAI-compatible HTTP server through the SDK
(``AGENTSTREAM_MODEL=openai:gpt-4o-mini``, model_server.py's ``AppModel``), so every
call has a price and the cost counters are more than zeros.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentstream import metrics
from agentstream.deploy.grafana import PANELS
from agentstream.client import new_task
from tests.unit.test_providers_openai import LoopbackServer

from .harness import REPO, free_port, wait_for
from .model_server import AppModel, openai_env
from .test_durable import DurableStack

WORKERS = {
    "router": ["router"],
    "billing": ["specialist", "--type", "billing"],
    "technical": ["specialist", "--type", "technical"],
    "account": ["specialist", "--type", "account"],
    "supervisor": ["supervisor"],
}
SCRAPE_INTERVAL_S = 1
TICKETS = json.loads((REPO / "examples" / "support_desk" / "tickets.json").read_text())["tickets"]


class Prometheus:
    """A ``prometheus`` process scraping ``targets`` every second, its storage and web
    port its own; ``vector`` asks its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    @contextmanager
    def started(cls, base: Path, targets: Iterable[int]) -> Iterator[Prometheus]:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not on PATH: run scripts/install-debian-packages.sh (make test does)"
        base.mkdir(parents=True)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
            "scrape_configs": [{"job_name": "agentstream",
                                "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in targets]}]}],
        }
        (base / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        address = f"127.0.0.1:{free_port()}"
        with (base / "prometheus.log").open("w") as log:
            process = subprocess.Popen(
                [binary, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
                 f"--web.listen-address={address}"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        prometheus = cls(f"http://{address}")
        try:
            wait_for(prometheus.ready, 60, f"Prometheus to be ready on {address} (log: {base / 'prometheus.log'})")
            yield prometheus
        finally:
            process.terminate()
            process.wait(30)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def vector(self, expr: str) -> dict[str, float]:
        """An instant query's samples: the label values of each (joined by ``,``) → value."""
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return {",".join(sample["metric"].values()): float(sample["value"][1]) for sample in answer["data"]["result"]}

    def value(self, expr: str) -> float | None:
        """The one value of an aggregated query, None while it has none."""
        found = self.vector(expr)
        assert len(found) <= 1, f"{expr} has {len(found)} series: {found}"
        return next(iter(found.values()), None)


def _waves() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo's tickets as tasks, each in a session of its own, in two waves: the first
    has a ticket for every specialist. A labelled series appears with its first observation,
    so rate() over it sees only what came after: the second wave is what the quantiles see."""
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    covered: set[str] = set()
    for n, ticket in enumerate(TICKETS):
        task = new_task(ticket["input"], f"{ticket['session_id']}-{n}", ticket["tenant_id"])
        route = set(ticket["expected_route"])
        (second if route <= covered else first).append(task)
        covered |= route
    return first, second


def test_prometheus_scrapes_the_workers_and_answers_task_counters_and_latency_quantiles(
    bootstrap: str, tmp_path: Path
) -> None:
    first, second = _waves()
    ports = {name: free_port() for name in WORKERS}
    with LoopbackServer(AppModel().answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", env=openai_env(server))
        try:
            stack.start_all({name: [*command, "--metrics-port", str(ports[name])] for name, command in WORKERS.items()})
            with Prometheus.started(tmp_path / "prometheus", ports.values()) as prometheus:
                wait_for(lambda: prometheus.value("sum(up)") == len(WORKERS), 60, "Prometheus to scrape every worker")
                # The latency series exist (at 0) before the first task, so rate() sees every task.
                wait_for(lambda: prometheus.value('sum(agentstream_task_duration_seconds_count{status="COMPLETED"})') == 0,
                         30, "the task latency series at 0")
                stack.submit(first)
                _results(stack, prometheus, first)
                stack.submit(second)
                _check(prometheus, _results(stack, prometheus, first + second))
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def _results(stack: DurableStack, prometheus: Prometheus, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The one result of each of ``tasks``, once Prometheus counts them all by status."""
    results = [only for (only,) in stack.results({t["task_id"] for t in tasks}, timeout=180).values()]
    statuses = Counter(result["status"] for result in results)
    wait_for(lambda: prometheus.vector('sum by (status) (agentstream_task_results_total{stage="supervisor"})')
             == {status: float(n) for status, n in statuses.items()}, 60, f"the task counters to read {dict(statuses)}")
    return results


def _check(prometheus: Prometheus, results: list[dict[str, Any]]) -> None:
    def total(field: str) -> float:
        return sum(result["usage"][field] for result in results)

    tenants = Counter(result["tenant_id"] for result in results)
    assert prometheus.vector("sum by (tenant) (agentstream_task_results_total)") == {t: float(n) for t, n in tenants.items()}

    # Every worker's model, tool and token counters, against the usage the results carry.
    expected = {
        "sum(agentstream_model_calls_total{outcome=\"ok\"})": total("llm_calls"),
        "sum(agentstream_tool_calls_total)": total("tool_calls"),
        "sum(agentstream_gen_ai_client_token_usage_sum{type=\"input\"})": total("input_tokens"),
        "sum(agentstream_gen_ai_client_token_usage_sum{type=\"output\"})": total("output_tokens"),
        "sum(agentstream_agent_steps_count)": sum(len(result["agents"]) for result in results),
    }
    assert all(value > 0 for value in expected.values()), expected
    for expr, value in expected.items():
        wait_for(lambda expr=expr, value=value: prometheus.value(expr) == value, 30, f"{expr} to read {value}")
    cost = total("cost_usd")
    assert cost > 0
    assert math.isclose(prometheus.value("sum(agentstream_tenant_cost_usd_total)") or 0, cost, rel_tol=1e-6)
    assert math.isclose(prometheus.value("sum(agentstream_task_cost_usd_sum)") or 0, cost, rel_tol=1e-6)
    # Every model call's price, counted where it was made: the same money, by model.
    assert math.isclose(prometheus.value("sum(agentstream_model_cost_usd_total)") or 0, cost, rel_tol=1e-6)
    assert prometheus.value("sum(agentstream_inflight_loops)") == 0
    assert (prometheus.value("sum(agentstream_checkpoint_seconds_count)") or 0) > 0
    assert (prometheus.value("sum(agentstream_offset_commit_seconds_count)") or 0) > 0
    # Every worker timed its event loop; all but the router (its tables are buffered, its
    # sends plain) waited for acknowledged writes: step checkpoints, markers, results.
    lags = prometheus.vector("sum by (worker) (agentstream_event_loop_lag_seconds_count)")
    assert len(lags) == len(WORKERS) and all(count > 0 for count in lags.values()), lags
    acked = prometheus.vector("sum by (worker) (agentstream_acked_write_seconds_count)")
    assert sorted(worker for worker, count in acked.items() if count > 0) == sorted(set(lags) - {"router"}), acked

    # Latency quantiles: finite, positive, and the p95 within the bucket of the slowest task.
    slowest = max(result["completed_at"] - result["submitted_at"] for result in results) / 1000
    bound = min(b for b in metrics.LATENCY_BUCKETS if b >= slowest)
    p50, p95 = (prometheus.value(f"histogram_quantile({q}, sum by (le) (rate(agentstream_task_duration_seconds_bucket[1m])))")
                for q in (0.5, 0.95))
    assert p50 is not None and p95 is not None and 0 < p50 <= p95 <= bound, (p50, p95, slowest)
    stages = prometheus.vector("histogram_quantile(0.5, sum by (le, stage) (rate(agentstream_stage_duration_seconds_bucket[1m])))")
    assert set(stages) == {"router", "billing", "technical", "account", "supervisor"}, stages
    assert all(0 < value < math.inf for value in stages.values()), stages
    model_p50 = prometheus.value("histogram_quantile(0.5, sum by (le) "
                                 "(rate(agentstream_gen_ai_client_operation_duration_seconds_bucket[1m])))")
    assert model_p50 is not None and 0 < model_p50 < math.inf, model_p50

    # Every panel of the generated Grafana dashboard is PromQL this Prometheus accepts, and
    # the task panels have data.
    answers = {title: prometheus.vector(expr) for title, expr, _, _ in PANELS}
    for title in ("Task results /s by status", "Task latency p95 by status", "Tokens /s by model", "Cost per hour by model",
                  "Tool success rate", "Event loop lag p95"):
        assert answers[title], f"the dashboard's {title!r} panel has no data"
