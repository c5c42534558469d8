"""JSON and text log lines through the real formatters: the record's context fields, and
no secret ever in a line."""

from __future__ import annotations

import argparse
import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentstream.errors import ConfigurationError
from agentstream.settings import LOG_LEVEL_ENV
from agentstream.telemetry import log_context
from agentstream.telemetry.logs import formatter
from agentstream.telemetry.redact import _PATTERNS, PATTERN_WORDS, REDACTED, Redactor, may_match_a_pattern, secret_values

KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c"


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("agentstream.test", logging.WARNING, __file__, 1, message, args, exc_info)


def _json_line(record: logging.LogRecord, redact: Redactor | None = None) -> dict[str, object]:
    line = formatter("json", redact or Redactor()).format(record)
    assert "\n" not in line, "one JSON object per line"
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_json_line_carries_the_records_context_fields_in_order() -> None:
    fields = log_context.record_fields("billing", "agents.specialist.billing.v1[3]@42", b"s-1",
                                       {"task_id": "t-1", "tenant_id": "acme", "agent_type": "billing"})
    with log_context.bound(**fields), log_context.bound(step=2):
        line = _json_line(_record("task %s done", "t-1"))
    assert list(line) == ["time", "level", "logger", "worker", "task_id", "session_id", "tenant_id", "agent",
                          "step", "record", "message"]
    assert line["record"] == "agents.specialist.billing.v1[3]@42"
    assert (line["worker"], line["task_id"], line["session_id"], line["tenant_id"], line["agent"], line["step"]) == (
        "billing", "t-1", "s-1", "acme", "billing", 2)
    assert line["message"] == "task t-1 done" and line["level"] == "WARNING" and str(line["time"]).endswith("+00:00")
    assert "task_id" not in _json_line(_record("outside")), "fields end with their block"


def test_an_exception_is_one_field_of_the_line() -> None:
    try:
        raise ValueError("bad value 7")
    except ValueError as exc:
        line = _json_line(_record("failed", exc=exc))
    assert "ValueError: bad value 7" in str(line["exception"]) and "Traceback" in str(line["exception"])


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_secret_in_a_message_an_argument_or_a_traceback_never_reaches_the_line(log_format: str) -> None:
    redact = Redactor(secret_values({"OPENAI_API_KEY": KEY, "DB_PASSWORD": "correct-horse", "MY_TOKEN": "tok_98765",
                                     "PATH": "/usr/bin"}))
    fmt = formatter(log_format, redact)
    try:
        raise RuntimeError(f"provider said 401 for key {KEY}")
    except RuntimeError as exc:
        lines = [
            fmt.format(_record("calling with key %s and Authorization: Bearer abc.def-123", KEY, exc=exc)),
            fmt.format(_record("db login correct-horse then tok_98765")),
            fmt.format(_record("config {'api_key': 'zz-not-in-env-1234', 'password': 'p@ss-word'}")),
            fmt.format(_record("another provider key sk-ant-api03-XYZXYZXYZXYZ")),
        ]
    text = "\n".join(lines)
    for secret in (KEY, "abc.def-123", "correct-horse", "tok_98765", "zz-not-in-env-1234", "p@ss-word", "sk-ant-api03"):
        assert secret not in text, f"{secret!r} leaked into:\n{text}"
    assert text.count(REDACTED) >= 8
    assert "/usr/bin" not in text and "db login" in text, "only secrets are replaced"


def test_secret_values_are_the_variables_named_as_secrets_and_long_enough() -> None:
    found = secret_values({"ANTHROPIC_API_KEY": "sk-ant-1234567", "GITHUB_TOKEN": "ghp_abcdef", "X_SECRET": "abc",
                           "HOME": "/root", "KEYBOARD": "us-international"})
    assert found == ["sk-ant-1234567", "ghp_abcdef"]


def test_counts_and_ordinary_words_are_not_taken_for_secrets() -> None:
    text = "input_tokens=512 max_tokens: 100 secretary=bob tokens left"
    assert Redactor()(text) == text


def test_an_unknown_log_format_names_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"AGENTSTREAM_LOG_FORMAT='xml'.*text, json"):
        formatter("xml")


def test_record_fields_take_the_session_from_the_key_and_ignore_non_mappings() -> None:
    assert log_context.record_fields("router", "t[0]@1", b"s-9", b"raw") == {
        "worker": "router", "record": "t[0]@1", "session_id": "s-9"}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_double_quoted_secrets_and_secrets_with_quotes_never_reach_the_line(log_format: str) -> None:
    # The JSON line escapes a quote as \" and a backslash as \\: redacted only after that, a
    # double-quoted value or a secret holding a quote slipped through the patterns.
    redact = Redactor(secret_values({"DB_PASSWORD": 'pa"ss\\word-123'}))
    line = formatter(log_format, redact).format(
        _record('login password="hunter22xyz" api_key: "abcd1234" with pa"ss\\word-123'))
    for secret in ("hunter22xyz", "abcd1234", "word-123"):
        assert secret not in line, f"{secret!r} leaked into {line}"
    if log_format == "json":
        assert "login" in json.loads(line)["message"]


EVERY_CHARACTER = "".join(map(chr, range(0x110000)))


def test_the_patterns_word_check_keeps_every_character_the_patterns_match() -> None:
    # A pattern matching means its word is in the line, each letter as any character that
    # IGNORECASE takes for it (the long s for "s", the Kelvin sign for "k"); the check
    # compares the casefolded line, so each such character must fold to exactly its letter.
    for letter in sorted(set("".join(PATTERN_WORDS))):
        matched = re.findall("(?i)" + re.escape(letter), EVERY_CHARACTER)
        assert matched and all(character.casefold() == letter for character in matched), letter


def test_the_word_start_check_takes_the_word_characters_of_the_patterns() -> None:
    # "sk-" must follow a non-word character (\b); the check takes isalnum() or "_" for
    # the word characters: the same set as the patterns' \w.
    assert re.findall(r"\w", EVERY_CHARACTER) == [c for c in EVERY_CHARACTER if c.isalnum() or c == "_"]


@pytest.mark.parametrize("pattern", [pattern for pattern, _ in _PATTERNS])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_text_a_pattern_matches_passes_the_word_check(pattern: re.Pattern[str], data: st.DataObject) -> None:
    # Derived from the patterns themselves: a pattern given a new alternative without its
    # word in PATTERN_WORDS fails here.
    text = data.draw(st.from_regex(pattern))
    assert may_match_a_pattern(text), text


@pytest.mark.parametrize("text", [
    "key: Authorization BEARER abc.def-ghi", "api_key=abcd1234", "sk-abcdefghijkl in a traceback",
    "\"password\": \"hunter22\"", "paſſword=hunter22", "TOKEN: 0123456789", "a ſecret=abcdefgh",
    "task-1 failed: sk-abcdefghijkl", "(sk-abcdefghijkl)",
])
def test_a_line_a_pattern_matches_passes_the_word_check(text: str) -> None:
    assert may_match_a_pattern(text)
    assert Redactor()(text) != text  # and is redacted


@pytest.mark.parametrize("text", [
    "billing.v1[3]@1234: task t-1 COMPLETED via billing", "task-abc-123 of support_desk-1 COMPLETED",
])
def test_a_line_without_the_patterns_words_is_left_as_it_is(text: str) -> None:
    assert not may_match_a_pattern(text)
    assert Redactor()(text) == text


@pytest.mark.parametrize(("verbose", "expected"), [(False, logging.WARNING), (True, logging.NOTSET)])
def test_the_model_sdks_http_clients_log_each_request_only_at_debug(
    verbose: bool, expected: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx logs every request at INFO: a line per model call, kept out of INFO as a
    routine task's line is (telemetry.logs.task_line_level)."""
    from agentstream import cli

    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    for name in cli.HTTP_CLIENT_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    # What _setup_logging sets beside them, put back after the test.
    for changed in (logging.root, cli.KAFKA_LOG):
        monkeypatch.setattr(changed, "level", changed.level)
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    cli._setup_logging(argparse.Namespace(command="worker", verbose=verbose))
    assert [logging.getLogger(name).level for name in cli.HTTP_CLIENT_LOGGERS] == [expected] * len(cli.HTTP_CLIENT_LOGGERS)
