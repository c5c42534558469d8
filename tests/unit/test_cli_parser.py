"""The command line's arguments: every option says what it does, and --help names the broker."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from agentstream.cli_parser import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "agentstream") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_help_names_the_bootstrap_variable_and_the_dev_file() -> None:
    text = build_parser().format_help()
    assert "KAFKA_BOOTSTRAP_SERVERS" in text and "<state dir>/bootstrap" in text


def test_verbose_goes_with_each_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["lag", "-v"]).verbose
    assert parser.parse_args(["dlq", "list", "--verbose"]).verbose
    assert not parser.parse_args(["submit", "hi", "--session", "s"]).verbose


def test_state_dirs_are_paths() -> None:
    parser = build_parser()
    assert parser.parse_args(["dev", "--state-dir", "here"]).state_dir == Path("here")
    assert parser.parse_args(["demo", "--state-dir", "here"]).state_dir == Path("here")
    assert parser.parse_args(["dev"]).state_dir is None  # then AGENTSTREAM_STATE_DIR, else .state
