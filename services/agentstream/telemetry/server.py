"""The HTTP port of a worker: ``/metrics``, ``/healthz`` and ``/readyz``.

prometheus-client's own WSGI app serves ``/metrics`` (its exposition format, content
negotiation and gzip are theirs); the two probes are a few lines of WSGI in front of it.
It runs on the standard library's threading WSGI server in a daemon thread of its own,
never on the worker's asyncio loop: the probes exist to report a stuck loop, so they must
answer while it is stuck.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from agentstream import metrics
from agentstream.errors import ConfigurationError
from agentstream.runtime.health import Health, Verdict
from agentstream.settings import HEALTHZ_PATH, METRICS_PORT_ENV, READYZ_PATH
from agentstream.telemetry.lag_collector import LagCollector

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per probe (a kubelet asks every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def probes_app(health: Health, metrics_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``/healthz`` and ``/readyz`` from ``health``; every other path goes to ``metrics_app``."""
    probes: dict[str, Callable[[], Verdict]] = {HEALTHZ_PATH: health.liveness, READYZ_PATH: health.readiness}

    def app(request: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        probe = probes.get(request.get("PATH_INFO", ""))  # the WSGI environ: the request, not os.environ
        if probe is None:
            return metrics_app(request, start_response)
        verdict = probe()
        body = f"{'ok' if verdict.ok else 'failing'}: {verdict.reason}\n".encode()
        status = "200 OK" if verdict.ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class HealthServer:
    """Serves one processor's probes and the process's metrics on ``port`` (0: any free port)."""

    def __init__(self, processor: Any, port: int, host: str = "0.0.0.0") -> None:
        self._collector = LagCollector(processor.name, processor.group_id, processor.partition_lag)
        app = probes_app(processor.health, make_wsgi_app(REGISTRY))
        try:
            self._server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot serve metrics and probes on port {port}: {exc.strerror}; pick a free port with "
                f"{METRICS_PORT_ENV} or --metrics-port (each worker on one host needs its own)."
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        metrics.register_all()
        REGISTRY.register(self._collector)
        self._thread.start()
        log.info("metrics and probes on port %d (/metrics, %s, %s)", self.port, HEALTHZ_PATH, READYZ_PATH)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        REGISTRY.unregister(self._collector)
