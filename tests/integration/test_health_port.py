"""A worker's HTTP port against a real broker: /healthz, /readyz, /metrics and `--check`.

Every worker here is a real process; the probes are read over real HTTP.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config, producer_config
from agentstream.settings import METRICS_PORT_ENV
from agentstream.topology import load_topology
from agentstream.topology_admin import apply

from .cli import cli_env, run
from .harness import WorkerProcess, create_topics, fill_compacted, free_port, wait_for

COUNTER = "tests/integration/apps/counter_worker.py"
RESTORE_RECORDS = 600_000  # a restore of some seconds on either broker (as in test_runtime.py)


def _get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _status(port: int, path: str) -> int:
    return _get(port, path)[0]


def test_a_router_worker_serves_probes_metrics_and_check(bootstrap: str) -> None:
    prefix = f"hp{uuid.uuid4().hex[:8]}"
    apply(AdminClient(admin_config(bootstrap)), load_topology(prefix=prefix))
    port = free_port()
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=prefix)
    worker = WorkerProcess(["-m", "agentstream", "worker", "router", "--metrics-port", str(port)], "router", env=env)
    try:
        wait_for(lambda: _status(port, "/healthz") == 200, 60, "the router's /healthz to answer 200")
        wait_for(lambda: _status(port, "/readyz") == 200, 90, "the router's /readyz to answer 200")
        worker.wait_for_line(r"router: assigned ", timeout=30)
        status, text = _get(port, "/metrics")
        assert status == 200
        for family in ("agentstream_retries_total", "agentstream_dead_letters_total", "agentstream_parked_total"):
            assert f"# TYPE {family} counter" in text, f"{family} missing from /metrics:\n{text[:2000]}"
        assert 'agentstream_rebalances_total{change="assigned",worker="router"} 1.0' in text, text[:3000]
        assert 'agentstream_restore_seconds_count{worker="router"} 1.0' in text
        assert "# TYPE agentstream_consumer_lag gauge" in text

        # A partition's lag is known once the worker consumed from it: submit one task.
        assert run("submit", "where is my invoice?", "--session", "s-lag", env=env).returncode == 0
        tasks = f"{prefix}.tasks.v1"
        wait_for(lambda: _lag_lines(port, tasks) != [], 60, f"a lag series of {tasks} on /metrics")
        wait_for(lambda: all(line.endswith(" 0.0") for line in _lag_lines(port, tasks)), 30,
                 "the router to be caught up (lag 0)")

        probe_env = cli_env(**{METRICS_PORT_ENV: str(port)})
        assert run("worker", "--check", env=probe_env).returncode == 0
        ready = run("worker", "--check", "ready", env=probe_env)
        assert ready.returncode == 0 and "assigned partitions restored" in ready.stdout, ready
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.tail()
    gone = run("worker", "--check", env=cli_env(**{METRICS_PORT_ENV: str(port)}))
    assert gone.returncode == 1 and "no answer" in gone.stderr, gone


def _lag_lines(port: int, topic: str) -> list[str]:
    return [line for line in _get(port, "/metrics")[1].splitlines()
            if line.startswith("agentstream_consumer_lag{") and f'topic="{topic}"' in line]


def test_check_without_a_port_says_how_to_set_one() -> None:
    done = run("worker", "--check", env=cli_env())
    assert done.returncode == 2
    assert METRICS_PORT_ENV in done.stderr, done.stderr


def test_ready_only_once_the_restore_is_done(bootstrap: str, unique: str, tmp_path: Path) -> None:
    names = {"in": f"hp-in-{unique}", "out": f"hp-out-{unique}", "group": f"hp-{unique}"}
    create_topics(bootstrap, [names["in"], names["out"]])
    fill_compacted(bootstrap, f"{names['group']}.counts.changelog", RESTORE_RECORDS)
    port = free_port()
    worker = WorkerProcess([COUNTER, "--bootstrap", bootstrap, "--input", names["in"], "--output", names["out"],
                            "--group", names["group"], "--state-dir", str(tmp_path), "--metrics-port", str(port)],
                           "restoring")
    seen: list[tuple[int, str, int]] = []  # (/readyz status, its reason, /healthz status) as polled

    def ready() -> bool:
        status, reason = _get(port, "/readyz")
        seen.append((status, reason.strip(), _status(port, "/healthz")))
        return status == 200

    try:
        wait_for(ready, 180, "/readyz once the restore ends")
        worker.wait_for_line(r"counter: assigned ", timeout=30)
    finally:
        worker.stop()
    assert worker.matching(r"restoring 6 changelog partition\(s\)"), worker.tail()
    restoring = [entry for entry in seen if entry[1] == "failing: restoring the state of newly assigned partitions"]
    assert restoring, f"never saw /readyz report the restore: {sorted(set(seen))}"
    assert {entry[0] for entry in restoring} == {503}
    assert {entry[2] for entry in restoring} == {200}, "a long restore is no stuck loop: /healthz stays 200"


def test_healthz_fails_while_the_event_loop_is_stuck_and_recovers(bootstrap: str, unique: str, tmp_path: Path) -> None:
    names = {"in": f"hs-in-{unique}", "out": f"hs-out-{unique}", "group": f"hs-{unique}"}
    create_topics(bootstrap, [names["in"], names["out"]])
    port = free_port()
    release = tmp_path / "release"
    worker = WorkerProcess([COUNTER, "--bootstrap", bootstrap, "--input", names["in"], "--output", names["out"],
                            "--group", names["group"], "--state-dir", str(tmp_path / "state"),
                            "--metrics-port", str(port), "--health-stall", "2", "--stall-on", "stall",
                            "--release-file", str(release)], "stalling")
    try:
        wait_for(lambda: _status(port, "/readyz") == 200, 90, "the worker to be ready")
        assert _status(port, "/healthz") == 200
        producer = Producer(producer_config(bootstrap))
        producer.produce(names["in"], b"stall", b"k1")
        assert producer.flush(30) == 0
        worker.wait_for_line(r"STALLING the event loop", timeout=60)
        wait_for(lambda: _status(port, "/healthz") == 503, 30, "/healthz to report the stuck loop")
        status, reason = _get(port, "/healthz")
        assert status == 503 and "the poll loop is stuck" in reason, reason
        release.touch()
        wait_for(lambda: _status(port, "/healthz") == 200, 30, "/healthz once the loop runs again")
    finally:
        release.touch()
        worker.stop()
    assert worker.proc.returncode == 0, worker.tail()
