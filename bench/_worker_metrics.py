"""A worker's Prometheus histograms over a benchmark's window: scraped from its metrics port
at the window's start and end, and the quantiles of what was observed in between,
interpolated within a bucket as PromQL's ``histogram_quantile`` does.

Used for the histograms that say where an agent loop waits besides its model:
``agentstream_acked_write_seconds`` (produce to acknowledgement, as the loop sees it),
``agentstream_event_loop_lag_seconds`` (how late the loop runs what is due) and
``agentstream_checkpoint_seconds`` (a commit, beside the worker's polls) and
``agentstream_offset_commit_seconds`` (its offset commit, during which the worker takes in
no record). And a counter's growth (``scrape_counter``): the requests a worker's Kafka clients
sent, ``agentstream_kafka_requests_total``.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from agentstream.settings import METRICS_PATH

ACKED_WRITE = "agentstream_acked_write_seconds"
LOOP_LAG = "agentstream_event_loop_lag_seconds"
CHECKPOINT = "agentstream_checkpoint_seconds"
OFFSET_COMMIT = "agentstream_offset_commit_seconds"
KAFKA_REQUESTS = "agentstream_kafka_requests"  # a counter: requests by worker, client and type

Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True)
class Snapshot:
    """One histogram as scraped: its cumulative buckets and the sum of its observations."""

    buckets: Buckets
    total_s: float


def _metric_families(port: int) -> Iterator[Metric]:
    """The families a worker's metrics port serves now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{METRICS_PATH}", timeout=10) as response:
        text = response.read().decode()
    return text_string_to_metric_families(text)


def scrape(port: int, families: tuple[str, ...] = (ACKED_WRITE, LOOP_LAG, CHECKPOINT, OFFSET_COMMIT)) -> dict[str, Snapshot]:
    """Each histogram in ``families``, summed over its series."""
    found: dict[str, Buckets] = {name: {} for name in families}
    totals = dict.fromkeys(families, 0.0)
    for family in _metric_families(port):
        if family.name not in found:
            continue
        for sample in family.samples:
            if sample.name == f"{family.name}_bucket":
                bound = float(sample.labels["le"])
                found[family.name][bound] = found[family.name].get(bound, 0.0) + sample.value
            elif sample.name == f"{family.name}_sum":
                totals[family.name] += sample.value
    return {name: Snapshot(found[name], totals[name]) for name in families}


def scrape_counter(port: int, family: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """The counter ``family`` (its ``_total`` samples) summed by the values of the labels ``by``."""
    sums: dict[tuple[str, ...], float] = {}
    for found in _metric_families(port):
        if found.name != family:
            continue
        for sample in found.samples:
            if sample.name == f"{family}_total":
                key = tuple(sample.labels.get(label, "") for label in by)
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def requests_per_task(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                      tasks: int) -> dict[str, dict[str, float]]:
    """Requests per task between two counts of each worker's (request type -> requests), by
    worker: Produce, Fetch, and the rest as ``other``; ``all``: the workers' sum. A worker or
    a type missing from ``before`` had sent none."""
    out: dict[str, dict[str, float]] = {}
    for name, counts in after.items():
        sent = {request: n - before.get(name, {}).get(request, 0.0) for request, n in counts.items()}
        produce, fetch = sent.pop("Produce", 0.0), sent.pop("Fetch", 0.0)
        out[name] = {"Produce": produce / tasks, "Fetch": fetch / tasks, "other": sum(sent.values()) / tasks}
    out["all"] = {kind: sum(worker[kind] for worker in out.values()) for kind in ("Produce", "Fetch", "other")}
    return {name: {kind: round(n, 2) for kind, n in kinds.items()} for name, kinds in out.items()}


def quantile(before: Buckets, after: Buckets, q: float) -> float:
    """The ``q`` quantile of the observations between two scrapes (NaN if none): the bucket
    holding it, and a linear guess inside it (the +Inf bucket answers its lower bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower
