"""SASL settings from KAFKA_* variables reach every client: the CLI applies the topology and
submits a task through a SASL/PLAIN listener of a real Apache Kafka, and a wrong password
is refused. (Tansu has no SASL, so this runs on Apache Kafka only.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from agentstream.apache_kafka import KafkaCluster

from .harness import read_all

pytestmark = pytest.mark.kafka_only


def _cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentstream", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_sasl_settings_from_the_environment_reach_every_client(tmp_path: Path, unique: str) -> None:
    with KafkaCluster(tmp_path / "kafka", sasl_users={"agents": "s3cret-pass"}) as cluster:
        login = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.sasl_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "agents",
            "KAFKA_SASL_PASSWORD": "s3cret-pass",
            "AGENTSTREAM_PREFIX": f"sec{unique}",
        }
        applied = _cli("topology", "apply", env=login)
        assert applied.returncode == 0, applied.stderr[-2000:]
        submitted = _cli("submit", "Where is my order?", "--session", "s-1", env=login)
        assert submitted.returncode == 0, submitted.stderr[-2000:]

        # Seen through the PLAINTEXT listener: the topics exist and the task is there.
        tasks_topic = f"sec{unique}.tasks.v1"
        assert tasks_topic in AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10).topics
        assert len(read_all(cluster.bootstrap, tasks_topic)) == 1

        # A wrong password: one line at once, not the broker's retries until a timeout.
        began = time.monotonic()
        refused = _cli("topology", "plan", env={**login, "KAFKA_SASL_PASSWORD": "wrong"}, timeout=120)
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1, refused.stderr[-2000:]
        assert refused.stderr.startswith(f"agentstream: Kafka at {cluster.sasl_bootstrap} (KAFKA_BOOTSTRAP_SERVERS) "
                                         "refused the connection: "), refused.stderr
        assert "Authentication failed" in refused.stderr, refused.stderr
        assert refused.stderr.rstrip().endswith("check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and "
                                                "KAFKA_SASL_PASSWORD."), refused.stderr
        assert time.monotonic() - began < 15
