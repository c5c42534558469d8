"""Runs the gateway on uvicorn until SIGTERM or Ctrl-C: it stops taking connections, lets
requests finish (open SSE streams at most GRACEFUL_SHUTDOWN_S), runs the app's shutdown
and exits 0, as the workers do (a Kubernetes rolling update is not a failure)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType

import uvicorn

from agentstream.gateway.app import create_app
from agentstream.gateway.context import GatewayConfig

log = logging.getLogger(__name__)
# An open SSE stream holds shutdown at most this long (then it is cut; the client resumes
# with Last-Event-ID on another replica).
GRACEFUL_SHUTDOWN_S = 10
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture, which re-raises the signal once shut
    down (so a clean stop would exit -15); a second signal forces the exit, as uvicorn's does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._stop) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def serve(config: GatewayConfig) -> None:
    settings = config.settings
    server = _Server(uvicorn.Config(
        create_app(config), host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on"))
    log.info("gateway starting on http://%s:%d (OpenAPI at /docs and /openapi.json)", settings.host, settings.port)
    server.run()
