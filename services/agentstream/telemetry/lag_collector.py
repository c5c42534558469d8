"""Consumer lag per assigned partition, collected when Prometheus scrapes (not kept as a
gauge that could go stale): the processor's fetched positions and high watermarks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agentstream.runtime.offsets import TP

LAG_METRIC = "agentstream_consumer_lag"


class LagCollector(Collector):
    """``agentstream_consumer_lag{worker, group, topic, partition}`` from ``lag()`` at scrape time."""

    def __init__(self, worker: str, group: str, lag: Callable[[], dict[TP, int]]) -> None:
        self._worker = worker
        self._group = group
        self._lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(LAG_METRIC, "Records behind the end of each assigned input partition",
                                   labels=["worker", "group", "topic", "partition"])
        for (topic, partition), lag in sorted(self._lag().items()):
            family.add_metric([self._worker, self._group, topic, str(partition)], lag)
        yield family
