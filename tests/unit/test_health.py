"""Liveness and readiness of a processor (runtime/health.py) and the probe endpoints'
answers (telemetry/server.py), without a server: the WSGI app called directly."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from agentstream.runtime.health import Health
from agentstream.telemetry.server import probes_app


def test_live_while_polling_and_not_after_a_stall() -> None:
    health = Health(stall_s=5)
    health.beat()
    now = time.monotonic()
    assert health.liveness(now + 4).ok
    verdict = health.liveness(now + 6)
    assert not verdict.ok and "the poll loop is stuck" in verdict.reason and "limit 5 s" in verdict.reason


def test_a_long_restore_is_live_but_not_ready() -> None:
    health = Health(stall_s=5)
    health.beat()
    health.restore_started()
    assert health.liveness(time.monotonic() + 600).ok
    assert health.readiness().reason == "restoring the state of newly assigned partitions"
    health.restore_finished()
    assert health.readiness().ok and health.liveness().ok


def test_not_ready_before_the_first_assignment_nor_after_the_stop() -> None:
    health = Health()
    assert health.liveness().ok  # starting: readiness gates it
    assert health.readiness().reason == "waiting for the group to assign partitions"
    health.restore_started()
    health.restore_finished()
    assert health.readiness().ok
    health.stopped()
    assert not health.readiness().ok and not health.liveness().ok


def test_a_member_never_assigned_anything_is_ready_after_a_while_of_polling() -> None:
    """KIP-848 gives a member without partitions no assignment callback at all."""
    health = Health(unassigned_ready_s=20)
    assert not health.readiness().ok  # never polled
    health.beat()
    now = time.monotonic()
    assert not health.readiness(now + 19).ok
    verdict = health.readiness(now + 21)
    assert verdict.ok and "no partitions after 21 s" in verdict.reason


def _call(app: Any, path: str) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body: Iterable[bytes] = app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response)
    return seen["status"], b"".join(body).decode()


def test_probe_paths_answer_200_or_503_and_others_go_to_the_metrics_app() -> None:
    health = Health(stall_s=5)

    def metrics_app(request: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"metrics for " + request["PATH_INFO"].encode()]

    app = probes_app(health, metrics_app)
    assert _call(app, "/readyz") == ("503 Service Unavailable", "failing: waiting for the group to assign partitions\n")
    health.restore_started()
    health.restore_finished()
    assert _call(app, "/readyz") == ("200 OK", "ok: assigned partitions restored\n")
    assert _call(app, "/healthz")[0] == "200 OK"
    assert _call(app, "/metrics") == ("200 OK", "metrics for /metrics")
