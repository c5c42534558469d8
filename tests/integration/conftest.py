"""Integration fixtures: one running pipeline (every worker a real process) per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.stack import Stack


@pytest.fixture(scope="session")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Router, specialists and supervisor as processes on the shared broker, under a unique prefix.

    Tests share it (group joins cost seconds) and keep apart by unique session and task ids.
    """
    base: Path = tmp_path_factory.mktemp("pipeline")
    stack = Stack(base / "state", prefix=f"it{uuid.uuid4().hex[:8]}", log_dir=base / "logs", bootstrap=bootstrap)
    stack.start()
    try:
        yield stack
    finally:
        codes = stack.stop()
        assert all(code == 0 for code in codes.values()), f"workers did not stop cleanly: {codes}"
