"""Where every command finds the broker: the variable, else the file `agentstream dev` writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.broker import BOOTSTRAP_FILE, clear_bootstrap_file, find_bootstrap, write_bootstrap_file
from agentstream.errors import ConfigurationError


def test_the_variable_wins_over_the_file(tmp_path: Path) -> None:
    write_bootstrap_file(tmp_path, "127.0.0.1:40001")
    found = find_bootstrap(tmp_path, {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert (found.bootstrap, found.source) == ("kafka:9092", "KAFKA_BOOTSTRAP_SERVERS")


def test_the_file_of_a_running_dev_is_read(tmp_path: Path) -> None:
    path = write_bootstrap_file(tmp_path / "state", "127.0.0.1:40001")
    assert path == tmp_path / "state" / BOOTSTRAP_FILE
    found = find_bootstrap(tmp_path / "state", {})
    assert found.bootstrap == "127.0.0.1:40001"
    assert found.source == f"from {path}, written by `agentstream dev`"


def test_neither_is_one_sentence_with_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"set KAFKA_BOOTSTRAP_SERVERS=host:port, or run `agentstream dev`"):
        find_bootstrap(tmp_path, {})


def test_dev_removes_only_its_own_address(tmp_path: Path) -> None:
    write_bootstrap_file(tmp_path, "127.0.0.1:40002")  # a second dev took over the directory
    clear_bootstrap_file(tmp_path, "127.0.0.1:40001")
    assert (tmp_path / BOOTSTRAP_FILE).exists()
    clear_bootstrap_file(tmp_path, "127.0.0.1:40002")
    assert not (tmp_path / BOOTSTRAP_FILE).exists()
    clear_bootstrap_file(tmp_path, "127.0.0.1:40002")  # already gone: fine
