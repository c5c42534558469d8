"""`agentstream dev` as the README has a new user run it: in one shell, with no variable set
but AGENTSTREAM_STATE_DIR; the other commands find its broker through the state directory;
Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops it cleanly, and it
starts again in the same shell. Runs on the embedded broker, dev's default."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.broker import BOOTSTRAP_FILE
from agentstream.display import ELLIPSIS

from .cli import cli_env, one_line, run, start
from .harness import wait_for


class Dev:
    """An `agentstream dev` in its own process group, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = start("dev", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def started(self) -> None:
        wait_for(lambda: any(line.startswith("workers: ") for line in self.lines) or self.proc.poll() is not None,
                 120, "dev to start its workers")
        assert self.proc.poll() is None, "\n".join(self.lines[-40:])

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev") / "state"


@pytest.fixture(scope="module")
def env(state_dir: Path) -> dict[str, str]:
    return cli_env(AGENTSTREAM_STATE_DIR=str(state_dir))


@pytest.fixture(scope="module")
def dev(env: dict[str, str]) -> Iterator[Dev]:
    running = Dev(env)
    try:
        running.started()
        yield running
    finally:
        running.close()


def test_dev_writes_its_address_under_the_state_dir_of_the_environment(dev: Dev, state_dir: Path) -> None:
    address = (state_dir / BOOTSTRAP_FILE).read_text().strip()
    assert f"broker: {address} (embedded Tansu; it keeps nothing once dev stops)" in dev.lines
    # Its workers keep their stores there too (AGENTSTREAM_STATE_DIR, not a --state-dir default).
    wait_for(lambda: (state_dir / "router").is_dir(), 60, "the router's stores under the state dir")


def test_submit_wait_prints_the_result_cut_with_an_ellipsis(env: dict[str, str]) -> None:
    done = run("submit", "I was charged twice on INV-1002", "--session", "dev-1", "--wait", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    task_id, headline, answer = done.stdout.splitlines()
    assert f"RESULT {task_id} [dev-1] COMPLETED via billing" in headline
    assert answer.startswith('    [scripted model] Reply to: "I was charged twice on INV-1002"') and answer.endswith(ELLIPSIS)
    assert len(answer) <= 4 + 200

    full = run("submit", "I was charged twice on INV-1002", "--session", "dev-1", "--wait", "--full", env=env)
    assert full.returncode == 0, full.stderr[-2000:]
    assert ELLIPSIS not in full.stdout and len(full.stdout) > len(done.stdout)


def test_a_rejected_task_shows_its_reason(env: dict[str, str]) -> None:
    done = run("submit", "x" * 40_000, "--session", "dev-2", "--wait", env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    _, headline, reason = done.stdout.splitlines()
    assert headline.endswith("REJECTED via - calls=0")
    assert reason == "    INVALID_TASK: input is 40000 bytes, over the limit of 32768 bytes"


def test_results_follow_shows_the_latest_first_and_says_it_waits(env: dict[str, str]) -> None:
    follow = start("results", "--follow", "--last", "1", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert follow.stdout is not None and follow.stderr is not None
    try:
        headline = follow.stdout.readline()
        assert "RESULT" in headline and "[dev-2] REJECTED" in headline, headline
        assert follow.stdout.readline().startswith("    INVALID_TASK: input is 40000 bytes")
        assert follow.stderr.readline().strip() == "-- the 1 latest shown; waiting for new ones (Ctrl-C stops)"
    finally:
        follow.send_signal(signal.SIGINT)
    assert follow.wait(30) == 0


def test_a_wait_that_ends_without_a_result_says_where_the_task_is(dev: Dev, env: dict[str, str]) -> None:
    waiting = run("submit", "Please issue a refund for INV-1001", "--session", "dev-3", "--wait", "--timeout", "10", env=env)
    assert waiting.returncode == 1, waiting.stdout + waiting.stderr
    assert "its last progress: billing: WAITING_INPUT waiting for approval of refund_invoice" in waiting.stderr, waiting.stderr
    assert "`agentstream approvals list` shows what waits for a human" in waiting.stderr
    first = run("submit", "Is invoice INV-1001 paid?", "--session", "dev-4", "--task-id", "dev-dup-1", "--wait", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    again = run("submit", "Is invoice INV-1001 paid?", "--session", "dev-4", "--task-id", "dev-dup-1", "--wait",
                "--timeout", "8", env=env)
    assert again.returncode == 1
    assert "no stage reported progress on it: a task id submitted before gets no second result" in one_line(again.stderr)


def test_a_second_dev_on_the_same_state_dir_is_refused_and_touches_nothing(dev: Dev, env: dict[str, str],
                                                                          state_dir: Path) -> None:
    stores = sorted(path for path in state_dir.rglob("*") if path.is_dir())
    second = run("dev", env=env, timeout=60)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert one_line(second.stderr).startswith(f"Another `agentstream dev` or demo runs with the state directory {state_dir}")
    assert sorted(path for path in state_dir.rglob("*") if path.is_dir()) == stores, "the running dev's stores were touched"
    assert dev.proc.poll() is None


def test_ctrl_c_stops_every_worker_cleanly_and_dev_starts_again(dev: Dev, env: dict[str, str], state_dir: Path) -> None:
    assert dev.ctrl_c() == 0, "\n".join(dev.lines[-40:])
    assert dev.lines[-1] == "stopped: 5 workers exited cleanly", "\n".join(dev.lines[-40:])
    assert not (state_dir / BOOTSTRAP_FILE).exists(), "the address of a stopped broker is not left behind"
    stale = run("lag", env=env, timeout=30)
    assert stale.returncode == 2 and "No Kafka broker to talk to" in one_line(stale.stderr)

    again = Dev(env)  # the same shell, nothing to unset
    try:
        again.started()
        lag = run("lag", env=env)
        assert lag.returncode == 0, lag.stderr[-2000:]
        assert lag.stdout.splitlines()[0].split() == ["group", "topic", "part", "committed", "end", "lag"]
        # Every worker consuming, so each has its stop handlers: a worker still starting its
        # interpreter under load dies of a SIGTERM before it can catch one (-15, once in CI).
        wait_for(lambda: sum(": consuming " in line for line in again.lines) >= 5, 120, "the five workers consuming")
        # The first dev's stores were of a broker that is gone: cleared before the workers start,
        # not wiped store by store with a warning each (on each worker's first assignment).
        wait_for(lambda: sum(": assigned " in line for line in again.lines) >= 5, 120, "the five workers assigned")
        assert any("cleared the stores of 5 consumer groups" in line for line in again.lines), again.lines[:20]
        assert not [line for line in again.lines if "wiping the store" in line]
        began = time.monotonic()
        os.killpg(again.proc.pid, signal.SIGTERM)
        assert again.proc.wait(60) == 0, "\n".join(again.lines[-40:])
        assert time.monotonic() - began < 30
    finally:
        again.close()


def test_dev_names_a_broker_it_cannot_start_and_starts_nothing(tmp_path: Path) -> None:
    # Without --broker, dev starts what AGENTSTREAM_BROKER names (README "Running on Apache Kafka").
    refused = run("dev", env=cli_env(AGENTSTREAM_STATE_DIR=str(tmp_path), AGENTSTREAM_BROKER="redpanda"), timeout=60)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "AGENTSTREAM_BROKER='redpanda' is not a broker agentstream can start; use one of" in one_line(refused.stderr)
    assert not (tmp_path / BOOTSTRAP_FILE).exists()


def test_demo_output_says_which_model_and_has_no_librdkafka_lines(tmp_path: Path) -> None:
    done = run("demo", "--state-dir", str(tmp_path), env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "model: ScriptedModel, the offline deterministic test model shipped with agentstream." in out
    assert "9/9 tickets got a result" in out
    assert any(line.startswith("   | ") and line.endswith(ELLIPSIS) for line in out.splitlines()), "a cut is marked"
    assert "%6|" not in out + done.stderr and "%3|" not in out + done.stderr
    assert (tmp_path / "demo" / "logs" / "router.log").exists()
