"""``agentstream worker --check``: ask a running worker's probe, for exec probes (Docker's
HEALTHCHECK, a Kubernetes exec probe) where no HTTP client is at hand."""

from __future__ import annotations

import urllib.error
import urllib.request

from agentstream.errors import ConfigurationError
from agentstream.settings import HEALTHZ_PATH, METRICS_PORT_ENV, READYZ_PATH

PROBE_PATHS = {"live": HEALTHZ_PATH, "ready": READYZ_PATH}


def check(port: int, probe: str = "live", host: str = "127.0.0.1", timeout: float = 5.0) -> tuple[bool, str]:
    """``(ok, what the worker said)``: ok only for an HTTP 200 of the probe within ``timeout``."""
    if port <= 0:
        raise ConfigurationError(
            f"--check asks the worker's HTTP port, and it has none: set {METRICS_PORT_ENV} (or --metrics-port) "
            "to the port the worker serves on."
        )
    url = f"http://{host}:{port}{PROBE_PATHS[probe]}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace").strip() or f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer from {url}: {reason}"
