"""The routing decision by the topology's rules, and task validation: pure, no broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentstream.errors import ConfigurationError, UnknownAgentTypeError
from agentstream.router.decide import MAX_ID_BYTES, Rules, is_usable_id, validate_task
from agentstream.topology import load_topology
from tests import support_desk

KNOWN = ["billing", "technical", "account"]
ROUTING = load_topology().agent("router").routing
assert ROUTING is not None
RULES = Rules.from_settings(ROUTING)


def route(text: str, requested_agent: str | None, known: list[str], *, default: str | None = None) -> list[str]:
    rules = RULES if default is None else Rules(RULES.patterns, default)
    return rules.route(text, requested_agent, known)


def test_mixed_ticket_goes_to_billing_and_technical() -> None:
    text = "I was charged twice on invoice INV-1002 and the app crashes on login"
    assert route(text, None, KNOWN) == ["billing", "technical"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Where is my refund for the last invoice?", ["billing"]),
        ("What is the price of the Team plan?", ["billing"]),
        ("Status of order #5001 please", ["billing"]),
        ("The API returns a 500 since this morning", ["technical"]),
        ("Export requests keep timing out with a timeout error", ["technical"]),
        ("I can't log in on the desktop client", ["technical"]),
        ("I forgot my password", ["account"]),
        ("How do I change my email address?", ["account"]),
        ("Please delete my account", ["account"]),
        ("My 2FA codes are not accepted any more", ["account"]),
        (
            "Reset my password and refund invoice INV-1001; also the SDK throws an exception",
            ["account", "billing", "technical"],
        ),
    ],
)
def test_keyword_classification(text: str, expected: list[str]) -> None:
    assert route(text, None, KNOWN) == expected


def test_words_only_match_whole_words() -> None:
    # "billion" is not "bill", "rapid" is not "api", "errorless" is not "error".
    assert RULES.classify("A billion rapid, errorless thanks to the team!") == []


def test_result_is_sorted_deduplicated_and_independent_of_known_types_order() -> None:
    text = "Payment failed with error 500, the bill is wrong, error again"
    first = route(text, None, ["technical", "billing", "account", "billing"])
    assert first == ["billing", "technical"]
    assert route(text, None, list(reversed(KNOWN))) == first


def test_no_match_goes_to_the_default_type() -> None:
    assert RULES.default == "technical"
    assert route("Hello, is anybody there?", None, KNOWN) == ["technical"]
    assert route("Hello, is anybody there?", None, KNOWN, default="account") == ["account"]


def test_types_the_deployment_does_not_run_are_dropped() -> None:
    text = "I was charged twice and the app crashes"
    assert route(text, None, ["technical"]) == ["technical"]
    # Only billing matched, billing is not deployed: the default takes it.
    assert route("Refund my invoice", None, ["technical", "account"]) == ["technical"]


def test_default_must_be_a_known_type() -> None:
    with pytest.raises(ConfigurationError, match="'technical'"):
        route("Hello", None, ["billing"])


def test_no_known_types_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        route("Refund please", None, [])


def test_requested_agent_bypasses_classification() -> None:
    assert route("The app crashes on every start", "billing", KNOWN) == ["billing"]


def test_unknown_requested_agent_is_rejected_with_the_valid_types() -> None:
    with pytest.raises(UnknownAgentTypeError) as caught:
        route("anything", "shipping", KNOWN)
    message = str(caught.value)
    assert "'shipping'" in message
    assert "['account', 'billing', 'technical']" in message


def test_every_demo_ticket_gets_its_expected_route() -> None:
    tickets = support_desk.tickets()
    assert len(tickets) >= 8
    assert any(ticket["expected_route"] == ["billing", "technical"] for ticket in tickets)
    for ticket in tickets:
        assert route(ticket["input"], ticket["requested_agent"], KNOWN) == ticket["expected_route"], ticket


def _task(**overrides: object) -> dict[str, object]:
    task: dict[str, object] = {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "input": "Refund please"}
    task.update(overrides)
    return task


def test_a_valid_task_has_no_rejection_reason() -> None:
    assert validate_task(_task(), max_input_bytes=1000) is None


@pytest.mark.parametrize("key", ["task_id", "session_id", "tenant_id"])
def test_missing_or_blank_ids_are_rejected(key: str) -> None:
    missing = _task()
    del missing[key]
    assert validate_task(missing, 1000) == f"missing or empty {key}"
    assert validate_task(_task(**{key: "  "}), 1000) == f"missing or empty {key}"
    assert validate_task(_task(**{key: None}), 1000) == f"missing or empty {key}"


def test_empty_and_non_text_input_are_rejected() -> None:
    assert validate_task(_task(input=""), 1000) == "empty input"
    assert validate_task(_task(input=" \n\t"), 1000) == "empty input"
    assert validate_task(_task(input=None), 1000) == "input must be a string"


def test_input_size_is_counted_in_utf8_bytes() -> None:
    assert validate_task(_task(input="x" * 10), 10) is None
    # Six characters, twelve bytes.
    reason = validate_task(_task(input="é" * 6), 10)
    assert reason == "input is 12 bytes, over the limit of 10 bytes"


def test_long_ids_and_large_metadata_are_rejected_naming_the_limit() -> None:
    """Ids and metadata travel with the task through every stage and wait in its session's
    record; a record derived from a task must never outgrow a Kafka message."""
    task = {"task_id": "t", "session_id": "s", "tenant_id": "acme", "input": "hello"}
    assert validate_task(task, 1000) is None
    assert validate_task({**task, "session_id": "s" * 257}, 1000) == (
        "session_id is 257 bytes, over the limit of 256 bytes; use a shorter id (e.g. a UUID)")
    reason = validate_task({**task, "metadata": {"blob": "x" * 20_000}}, 1000)
    assert reason is not None and reason.startswith("metadata is 20004 bytes, over the limit of 16384 bytes")
    assert validate_task({**task, "metadata": "not a map"}, 1000) == "metadata must be a map of strings to strings, got str"
    assert validate_task({**task, "task_id": "\x00abc"}, 1000) == "task_id holds a control character; ids are printable text (e.g. a UUID)"


def test_a_task_id_with_the_revision_mark_is_rejected() -> None:
    """A specialist keys the runs of a revised task "<task_id>#rev<n>": a submitted task of
    that id would share its checkpoints and done marker with another task's revision."""
    why = validate_task(_task(task_id="t-1#rev1"), 1000)
    assert why is not None and "'#rev'" in why and "t-1#rev1" in why
    assert validate_task(_task(task_id="t-1#review"), 1000) is not None
    assert validate_task(_task(task_id="t-1#1"), 1000) is None


@given(st.text(max_size=300) | st.text(alphabet=st.characters(categories=["Cs", "Cc", "Ll", "Zs"]), max_size=80))
def test_an_id_is_usable_when_it_is_printable_nonblank_and_short(value: str) -> None:
    printable = not any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)
    short = len(value.encode("utf-8", "replace")) <= MAX_ID_BYTES
    assert is_usable_id(value) == (bool(value.strip()) and short and printable)


@pytest.mark.parametrize("value", ["a\x00b", "tab\there", "new\nline", "del\x7f", "\x1f"])
def test_an_id_with_a_control_character_is_not_usable(value: str) -> None:
    assert not is_usable_id(value)
    assert is_usable_id("".join("x" if ord(char) < 0x20 or ord(char) == 0x7F else char for char in value))


def test_an_id_is_usable_up_to_its_byte_limit_and_with_a_lone_surrogate() -> None:
    assert is_usable_id("é" * (MAX_ID_BYTES // 2)) and not is_usable_id("é" * (MAX_ID_BYTES // 2) + "x")
    assert is_usable_id("a\ud800b")  # a JSON caller's lone surrogate is printable; validate_task refuses it later
