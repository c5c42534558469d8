"""A worker asked to stop while it is still starting (its imports take a while) exits 0,
as it would a second later, instead of being killed by Python's default SIGTERM handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config
from agentstream.topology import load_topology
from agentstream.topology_admin import apply

from .harness import wait_for


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def test_sigterm_during_start_up_is_a_clean_stop(bootstrap: str, tmp_path: Path) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    apply(AdminClient(admin_config(bootstrap)), load_topology(prefix=prefix))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AGENTSTREAM_PREFIX": prefix,
           "AGENTSTREAM_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "agentstream", "worker", "supervisor"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The first handler is installed before the slow imports; stop it right then.
        wait_for(lambda: _catches_sigterm(proc.pid), 10, "the worker to catch SIGTERM", interval=0.001)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "a stop was asked for while starting" in output, output  # it came before the command's own handler
    assert "consuming" not in output, "it stopped before it began to consume"
