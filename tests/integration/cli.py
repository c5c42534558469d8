"""Running the real ``agentstream`` command in tests: the environment a new user has (no
broker configured unless the test says so), the exit code and the one-line message."""

from __future__ import annotations

import os
import subprocess
import sys

from agentstream.settings import BOOTSTRAP_ENV, BROKER_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV, PREFIX_ENV, STATE_DIR_ENV

from .harness import REPO

COMMAND = [sys.executable, "-m", "agentstream"]


def cli_env(**values: str) -> dict[str, str]:
    """The test process's environment without agentstream's own settings, plus ``values``."""
    own = (BOOTSTRAP_ENV, BROKER_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV, PREFIX_ENV, STATE_DIR_ENV)
    env = {k: v for k, v in os.environ.items() if k not in own}
    return {**env, "PYTHONUNBUFFERED": "1", **values}


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start(*args: str, env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen([*COMMAND, *args], env=env, cwd=REPO, text=True, **popen)  # type: ignore[call-overload]


def one_line(stderr: str) -> str:
    """The single line a failing command printed, with its ``agentstream: `` prefix removed."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    assert lines[0].startswith("agentstream: "), lines[0]
    return lines[0].removeprefix("agentstream: ")
