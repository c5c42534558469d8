"""`agentstream kafka start|status|stop`: a local Apache Kafka that keeps its data across a
stop and a start (same ports, same cluster id). Needs java and mvn, like the Kafka path of
the broker fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.kafka_only


def _kafka(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([sys.executable, "-m", "agentstream", "kafka", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def _bootstrap(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("export KAFKA_BOOTSTRAP_SERVERS="))
    return line.split("=", 1)[1]


def test_start_status_stop_and_start_again_keeps_the_data(tmp_path: Path, unique: str) -> None:
    directory = str(tmp_path / "kafka")
    started = _kafka("start", "--dir", directory, cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        bootstrap = _bootstrap(started.stdout)
        topic = f"kept-{unique}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        status = _kafka("status", "--dir", directory, cwd=tmp_path)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr

        stopped = _kafka("stop", "--dir", directory, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        after_stop = _kafka("status", "--dir", directory, cwd=tmp_path)
        assert after_stop.returncode == 1 and "stopped" in after_stop.stdout

        again = _kafka("start", "--dir", directory, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _bootstrap(again.stdout) == bootstrap, "a stopped cluster starts on its own ports"
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics  # a new client: new connections
        assert topic in topics and len(topics[topic].partitions) == 2, "the topic survived stop and start"
    finally:
        _kafka("stop", "--dir", directory, cwd=tmp_path)


def test_status_of_a_directory_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    shown = _kafka("status", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert shown.returncode != 0
    assert "agentstream kafka start" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
