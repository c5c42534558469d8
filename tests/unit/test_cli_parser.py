"""The command line's arguments: every option says what it does, and --help names the broker."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.approvals.ops import check_arguments
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


def test_verbose_goes_before_or_after_an_action() -> None:
    # An action's own parser must not reset what the command's took (argparse copies a
    # subparser's defaults over the namespace): README "-v on any command".
    parser = build_parser()
    for argv in (["dlq", "list"], ["approvals", "list"], ["approvals", "show", "id-1"], ["tenants", "check"],
                 ["rollout", "report"], ["deploy", "render", "compose"]):
        command, rest = argv[:1], argv[1:]
        assert parser.parse_args(command + ["-v"] + rest).verbose, argv
        assert parser.parse_args(argv + ["-v"]).verbose, argv
        assert not parser.parse_args(argv).verbose, argv


def test_dev_leaves_the_broker_to_the_environment_unless_told() -> None:
    parser = build_parser()
    assert parser.parse_args(["dev"]).broker is None  # then AGENTSTREAM_BROKER, else tansu (cli.cmd_dev)
    assert parser.parse_args(["dev", "--broker", "kafka"]).broker == "kafka"


def test_state_dirs_are_paths() -> None:
    parser = build_parser()
    assert parser.parse_args(["dev", "--state-dir", "here"]).state_dir == Path("here")
    assert parser.parse_args(["demo", "--state-dir", "here"]).state_dir == Path("here")
    assert parser.parse_args(["dev"]).state_dir is None  # then AGENTSTREAM_STATE_DIR, else .state


def test_approvals_actions_take_an_id_and_deny_needs_a_reason() -> None:
    parser = build_parser()
    approve = parser.parse_args(["approvals", "approve", "billing:t-1:0:0", "--args", '{"invoice_id": "INV-2"}'])
    assert (approve.action, approve.id, approve.args, approve.who) == ("approve", "billing:t-1:0:0", '{"invoice_id": "INV-2"}', None)
    check_arguments(approve)
    with pytest.raises(SystemExit):
        parser.parse_args(["approvals", "deny", "billing:t-1:0:0"])  # --reason is required
    for bad in ("[1]", "{not json"):
        with pytest.raises(SystemExit, match="--args"):
            check_arguments(parser.parse_args(["approvals", "approve", "x", "--args", bad]))
