"""The first hour with the CLI: every command as a real process against no broker, a stale
address, a cluster without the topology, and a cluster with it. Each case asserts the exit
code and the one line the user reads."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from agentstream.broker import BOOTSTRAP_FILE
from agentstream.clients import admin_config
from agentstream.topology import load_topology
from agentstream.topology_admin import apply

from .cli import cli_env, one_line, run, start
from .harness import WorkerProcess

DEAD = "127.0.0.1:1"  # nothing listens on port 1

NO_BROKER_COMMANDS = [
    ("submit", "hello", "--session", "s-1"),
    ("results",),
    ("results", "--follow"),
    ("lag",),
    ("dlq", "list"),
    ("dlq", "show", "some-id"),
    ("replay", "some-task"),
    ("cancel", "some-task"),
    ("gateway", "--tenants", "tenants.yaml"),
    ("worker", "router"),
    ("worker", "specialist", "--type", "billing"),
    ("topology", "plan"),
    ("topology", "apply"),
    ("dev",),
]


def test_no_broker_every_command_says_so_in_one_line(tmp_path: Path) -> None:
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=DEAD, AGENTSTREAM_STATE_DIR=str(tmp_path))
    began = time.monotonic()
    procs = [(args, start(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
             for args in NO_BROKER_COMMANDS]
    for args, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (args, err[-2000:])
        line = one_line(err)
        assert line.startswith(f"No Kafka broker answered at {DEAD} (KAFKA_BOOTSTRAP_SERVERS) within 5 s "
                               "(Connect to ipv4#127.0.0.1:1 failed: Connection refused); "), (args, line)
        fix = ("unset KAFKA_BOOTSTRAP_SERVERS and `agentstream dev` starts a broker of its own" if args == ("dev",)
               else "check the address, or unset KAFKA_BOOTSTRAP_SERVERS and run `agentstream dev`")
        assert fix in line, (args, line)
        assert "%3|" not in out + err and "Traceback" not in out + err
    assert time.monotonic() - began < 30, "a brief probe, not 30 s of retries per command"


def test_no_address_at_all_says_how_to_get_one(tmp_path: Path) -> None:
    done = run("lag", env=cli_env(AGENTSTREAM_STATE_DIR=str(tmp_path)), timeout=30)
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        "No Kafka broker to talk to: set KAFKA_BOOTSTRAP_SERVERS=host:port, or run `agentstream dev` in this "
        f"directory (it writes {tmp_path / BOOTSTRAP_FILE}, which the other commands read)."
    )


def test_the_address_left_by_a_stopped_dev_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / BOOTSTRAP_FILE).write_text(f"{DEAD}\n")
    done = run("submit", "hi", "--session", "s-1", env=cli_env(AGENTSTREAM_STATE_DIR=str(tmp_path)), timeout=30)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"No Kafka broker answered at {DEAD} (from {tmp_path / BOOTSTRAP_FILE}, written by "
                           "`agentstream dev`) within 5 s"), line
    assert line.endswith("is `agentstream dev` still running? Start it again, or set KAFKA_BOOTSTRAP_SERVERS."), line


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("worker", "router"), {"AGENTSTREAM_MAX_INFLIGHT": "abc"},
         "AGENTSTREAM_MAX_INFLIGHT='abc' is not valid: Input should be a valid integer, unable to parse string "
         "as an integer."),
        (("lag",), {"AGENTSTREAM_LOG_LEVEL": "loud"},
         "AGENTSTREAM_LOG_LEVEL='LOUD' is not a log level; use one of DEBUG, INFO, WARNING, ERROR."),
        (("lag",), {"AGENTSTREAM_LOG_FORMAT": "xml"},
         "AGENTSTREAM_LOG_FORMAT='xml' is not a log format; use one of text, json."),
        (("dlq", "replay"), {},
         "Say what to replay: a dead letter id (see `agentstream dlq list`), or --all-matching with "
         "--stage/--error/--since."),
        (("dlq", "replay", "x", "--all-matching"), {},
         "Give a dead letter id or --all-matching (with --stage/--error/--since), not both."),
        (("dlq", "list", "--since", "yesterday"), {},
         "Cannot read --since 'yesterday': give a relative time like 90s, 30m, 1h, 2d, 1w, or an ISO time like "
         "2024-05-01T12:00:00Z."),
    ],
)
def test_a_wrong_setting_or_argument_is_one_sentence_before_any_broker_is_asked(
    args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    # The "broker" is a listening socket: a probe would connect to it (the kernel completes the
    # handshake without an accept), whatever the time a loaded machine takes to start the CLI.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        done = run(*args, env=cli_env(KAFKA_BOOTSTRAP_SERVERS=address, **env), timeout=30)
        assert done.returncode == 2
        assert one_line(done.stderr) == expected
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection waits: refused before any broker was asked


def test_version_and_help_name_the_broker_variable() -> None:
    env = cli_env()
    version = run("--version", env=env, timeout=30)
    assert (version.returncode, version.stdout.strip()) == (0, "agentstream 0.1.0")
    for args in (("--help",), ("submit", "--help"), ("worker", "--help")):
        shown = run(*args, env=env, timeout=30)
        assert shown.returncode == 0 and "KAFKA_BOOTSTRAP_SERVERS" in shown.stdout, args


@pytest.fixture(scope="module")
def applied(bootstrap: str) -> dict[str, Any]:
    """A fresh topology prefix whose topics exist on the session's broker."""
    prefix = f"cli{uuid.uuid4().hex[:8]}"
    topology = load_topology(prefix=prefix)
    apply(AdminClient(admin_config(bootstrap)), topology)
    return {"topology": topology, "env": cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=prefix)}


def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    return sorted(t for t in AdminClient(admin_config(bootstrap)).list_topics(timeout=30).topics if t.startswith(prefix))


def test_submit_before_apply_creates_no_topic_and_says_to_apply(bootstrap: str) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}"
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=prefix)
    done = run("submit", "I was charged twice", "--session", "s-1", env=env)
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"Topic {prefix}.tasks.v1 does not exist on {bootstrap}; create the topology's topics with "
        "`agentstream topology apply`."
    )
    assert _topics_with_prefix(bootstrap, prefix) == [], "asking must not create the topic"
    assert run("topology", "apply", env=env).returncode == 0, "apply is not blocked by a wrongly created topic"


def test_submit_refuses_an_agent_type_the_topology_lacks(applied: dict[str, Any]) -> None:
    done = run("submit", "hi", "--session", "s-1", "--agent", "plumbing", env=applied["env"])
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        "Unknown agent type 'plumbing'; the topology's specialist types are billing, technical, account."
    )


def test_a_worker_refuses_to_start_without_its_topics(bootstrap: str) -> None:
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=f"cli{uuid.uuid4().hex[:8]}")
    done = run("worker", "supervisor", env=env)
    assert done.returncode == 2
    assert "`agentstream topology apply`" in one_line(done.stderr)


def test_output_into_a_closed_pipe_is_no_traceback(applied: dict[str, Any]) -> None:
    """`agentstream lag | head`: the reader goes away before lag writes."""
    proc = start("lag", env=applied["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_stopping_worker_exits_0_whatever_more_stop_signals_come(applied: dict[str, Any]) -> None:
    """A terminal's Ctrl-C reaches every worker of `agentstream dev`, and dev then sends SIGTERM
    too: the second signal must not land on Python's default handler while it exits (-15)."""
    worker = WorkerProcess(["-m", "agentstream", "worker", "router"], "router", env=applied["env"])
    worker.wait_for_line(r"router: assigned ", timeout=90)
    worker.proc.send_signal(signal.SIGINT)
    worker.wait_for_line(r"worker router exiting", timeout=60)
    deadline = time.monotonic() + 60
    while worker.proc.poll() is None:  # a signal every 5 ms until it has exited, at most a minute
        assert time.monotonic() < deadline, f"the worker did not exit within 60 s of its stop:\n{worker.tail()}"
        worker.proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    assert worker.proc.returncode == 0, worker.tail()


def test_a_bad_topology_is_named_before_the_broker_is_asked(tmp_path: Path) -> None:
    # Nothing listens on port 9: before, the command waited for that broker and named it instead.
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", AGENTSTREAM_TOPOLOGY=str(tmp_path / "nope"))
    done = run("topology", "plan", env=env, timeout=30)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"Cannot read the topology file {tmp_path / 'nope'}: No such file or directory")
