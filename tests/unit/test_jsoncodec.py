"""agentstream.jsoncodec: orjson where it writes and reads what the standard library did,
the standard library where it would not; and the hot paths that use it."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
import re
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentstream import jsoncodec
from agentstream.models.base import Message, ToolCall
from agentstream.runtime.table import Table
from agentstream.specialist import checkpoint as ckpt
from agentstream.transcripts.record import steps_of, task_of, transcript

BIG = 2**70  # beyond orjson's 64-bit integers


def _std_canonical(value: Any) -> bytes:
    """What request_summary hashed before the codec (and still must, byte for byte)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _std_compact(value: Any) -> bytes:
    """What the checkpoint table wrote before the codec."""
    return json.dumps(value, separators=(",", ":")).encode()


# JSON-like values as tool arguments and checkpoints hold them: any str (astral planes
# included, no lone surrogates: neither encoder writes those as UTF-8), ints across and
# beyond 64 bits, finite floats of every magnitude.
_SCALARS = (
    st.none() | st.booleans() | st.text(st.characters(blacklist_categories=("Cs",)))
    | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False, allow_infinity=False)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_canonical_is_the_standard_librarys_bytes_for_any_json_value(value: Any) -> None:
    assert jsoncodec.canonical(value) == _std_canonical(value)


# Text that reads like a float the two encoders spell differently: only a number may be
# spelt otherwise, never a string's text (the float check would have sent these to the
# standard library).
_FLOATLIKE_TEXT = st.sampled_from(["1e-05", "0.00001", "1e+16", "1e16", "10e0", "0.0000"]) | st.text(
    st.characters(blacklist_categories=("Cs",)))
_NUMBERLESS = st.recursive(
    st.none() | st.booleans() | _FLOATLIKE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_FLOATLIKE_TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_NUMBERLESS)
def test_canonical_without_numbers_is_the_standard_librarys_bytes_for_a_value_without_numbers(value: Any) -> None:
    assert jsoncodec.canonical_without_numbers(value) == _std_canonical(value)


def test_canonical_without_numbers_takes_the_standard_path_for_a_str_subclass() -> None:
    class Role(str):
        pass

    value = [Role("user"), "1e+16", None, [], {"b": True, "a": "0.00001"}]
    assert jsoncodec.canonical_without_numbers(value) == _std_canonical(value) == jsoncodec.canonical(value)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_whatever_dumps_writes_loads_reads_back_exactly(value: Any) -> None:
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.loads(_std_compact(value)) == value  # a value an older worker wrote


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_of_any_magnitude_hash_as_before(number: float) -> None:
    # orjson spells small floats otherwise (1e-5, 0.00001 for 1e-05): those take the standard path.
    assert jsoncodec.canonical([number, {"x": number}]) == _std_canonical([number, {"x": number}])


class Colour(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    CALM = "calm"


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Amount:
    value: float


class Cents(float):
    pass


@pytest.mark.parametrize("value", [
    {"when": datetime.datetime(2026, 12, 1, 15, 0, tzinfo=datetime.UTC), "day": datetime.date(2026, 12, 1)},
    {"amount": Amount(1.5)},
    {"tags": frozenset({"x"})},
    {"colour": Colour.RED, "mood": Mood.CALM},
    {"point": Point(1, 2), "pair": (1, "two")},
    collections.OrderedDict([("b", 1), ("a", 2)]),
    {"cents": Cents(0.25), "big": BIG, "small": -(2**64)},
    {1: "int keys", 2: "are text in JSON"},
    {"nested": [{"z": 1e-7, "y": 5e-324, "x": 1e16, "w": -0.0}]},
])
def test_canonical_takes_the_standard_path_wherever_orjson_would_write_otherwise(value: Any) -> None:
    assert jsoncodec.canonical(value) == _std_canonical(value)


_MAYBE_ANOTHER_FLOAT = re.compile(rb"0\.0000|[0-9]e[-+0-9]")  # the rule, as a regex


@given(st.binary(max_size=40) | st.text("0123456789e+-.E ,x", max_size=40).map(str.encode))
def test_the_float_check_finds_every_small_float_and_exponent_a_regex_finds(encoded: bytes) -> None:
    assert jsoncodec._may_spell_a_float_otherwise(encoded) == bool(_MAYBE_ANOTHER_FLOAT.search(encoded))


def test_the_float_check_maps_every_byte_around_an_e_as_the_rule_says() -> None:
    for byte in (bytes([b]) for b in range(256)):
        for text in (b"[1" + byte + b"5]", b"[" + byte + b"e5]", b"[1e" + byte + b"]", b'"0.000' + byte + b'"'):
            assert jsoncodec._may_spell_a_float_otherwise(text) == bool(_MAYBE_ANOTHER_FLOAT.search(text)), text


def test_request_digests_match_those_older_workers_recorded() -> None:
    # Digests computed by the code before the codec (main at 96e6552, json.dumps), pinned:
    # a transcript an older worker wrote still shows the digest a new worker computes.
    messages = [
        Message("system", "Du bist ein Agent für Rechnungen ✓"),
        Message("user", 'Refund €12.50 on invoice "INV-7"\n\t please'),
        Message("assistant", None, tool_calls=(ToolCall("call_0_0", "lookup_invoice", {
            "invoice_id": "INV-7", "z": [1, 2.5, 1e-05, 1e20, -0.0, True, None], "amount": 12.5, "big": BIG,
            "ä": {"b": 1, "a": "\u2028"}}),)),
        Message("tool", '{"total": 12.5}', tool_call_id="call_0_0", name="lookup_invoice"),
    ]
    assert ckpt.request_summary(messages, [{"name": "lookup_invoice"}])["digest"] == "c16b6895332dd010"
    assert ckpt.request_summary(messages[:2], [])["digest"] == "c2adb28972e9a748"


def _whole_digest(messages: list[Message]) -> str:
    """The request digest as it was computed before it was incremental: over the whole list."""
    import hashlib
    items = [[m.role, m.content, [[c.name, c.arguments] for c in m.tool_calls], m.tool_call_id] for m in messages]
    return hashlib.sha256(_std_canonical(items)).hexdigest()[:16]


_MESSAGES = st.builds(
    Message, st.sampled_from(["system", "user", "assistant", "tool"]), st.none() | st.text(max_size=8),
    st.lists(st.builds(ToolCall, st.text(max_size=4), st.text(max_size=4), st.dictionaries(st.text(max_size=4), _VALUES,
                                                                                            max_size=3)),
             max_size=2).map(tuple),
    st.none() | st.text(max_size=4),
)
# A run's calls: each either adds messages to the previous call's conversation (the same
# objects, as the loop does) or rewrites it from some point on (history compression).
_CALLS = st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=6), st.lists(_MESSAGES, max_size=3)),
                  min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_CALLS)
def test_a_runs_incremental_request_digests_are_those_of_the_whole_conversation(calls: list[Any]) -> None:
    summaries, conversation = ckpt.RequestSummaries(), []
    for rewrites, keep, added in calls:
        conversation = (conversation[:keep] if rewrites else list(conversation)) + added
        assert summaries.summary(conversation, [])["digest"] == _whole_digest(conversation)


def test_a_message_the_encoder_refuses_leaves_the_runs_digest_state_as_it_was() -> None:
    summaries, first = ckpt.RequestSummaries(), Message("user", "hi")
    summaries.summary([first], [])
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: no encoder writes it as UTF-8
        summaries.summary([first, Message("assistant", "half \ud800 pair")], [])
    conversation = [first, Message("assistant", "hello")]
    assert summaries.summary(conversation, [])["digest"] == _whole_digest(conversation)


@pytest.mark.parametrize("value", [
    {"result": BIG},  # a tool result with a huge int
    {"counts": {1: "one", 2: "two"}},  # non-str keys
    {"text": "half a pair \ud800"},  # a lone surrogate
    [-(2**63) - 1, 2**64],  # just outside orjson's integers
])
def test_a_value_orjson_refuses_is_written_by_the_standard_encoder(value: Any) -> None:
    encoded = jsoncodec.dumps(value)
    assert encoded == _std_compact(value)
    assert jsoncodec.loads(encoded) == json.loads(encoded)


def test_a_sorted_value_orjson_refuses_is_sorted_by_the_standard_encoder() -> None:
    assert jsoncodec.dumps({"b": BIG, "a": 1}, sort_keys=True) == b'{"a":1,"b":%d}' % BIG


def test_dumps_writes_compact_utf8_in_insertion_order_unless_sorted() -> None:
    value = {"z": "é€😀", "a": [1, 2.5, None, True]}
    assert jsoncodec.dumps(value) == '{"z":"é€😀","a":[1,2.5,null,true]}'.encode()
    assert jsoncodec.dumps(value, sort_keys=True) == '{"a":[1,2.5,null,true],"z":"é€😀"}'.encode()


def test_nan_and_infinity_become_null() -> None:
    # The one value dumps writes otherwise than the standard library (NaN, Infinity are not JSON).
    assert jsoncodec.dumps([math.nan, math.inf, -math.inf]) == b"[null,null,null]"


def test_types_the_standard_encoder_refused_are_still_refused() -> None:
    for value in ({"at": datetime.datetime(2026, 12, 1)}, {"amount": Amount(1.0)}, {"s": {1, 2}}):
        with pytest.raises(TypeError, match="not JSON serializable"):
            jsoncodec.dumps(value)


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1, "b": [1.5, "\\u00e9\\ud83d\\ude00"]}', {"a": 1, "b": [1.5, "é😀"]}),  # spaced, ASCII-escaped
    ('{"n": NaN, "i": Infinity}', None),  # the standard library's non-standard tokens
    ('{"half": "\\ud800"}', {"half": "\ud800"}),  # a lone surrogate escape
    ("[123456789012345678901234567890, -9999999999999999999, 18446744073709551615]",
     [123456789012345678901234567890, -9999999999999999999, 18446744073709551615]),
])
def test_loads_reads_what_older_workers_wrote(text: str, value: Any) -> None:
    for raw in (text, text.encode(), memoryview(text.encode()), bytearray(text.encode())):
        decoded = jsoncodec.loads(raw)
        if value is None:
            assert math.isnan(decoded["n"]) and decoded["i"] == math.inf
        else:
            assert decoded == value and [type(x) for x in decoded] == [type(x) for x in value]


def test_a_big_int_stays_an_int_not_a_float() -> None:
    # orjson alone reads 2**70 as 1.1805916207174113e+21, silently.
    assert type(jsoncodec.loads(jsoncodec.dumps({"n": BIG}))["n"]) is int


def test_loads_reads_text_holding_a_lone_surrogate_character() -> None:
    assert jsoncodec.loads('["\ud800"]') == ["\ud800"]


def test_loads_refuses_what_is_not_json_as_the_standard_reader_does() -> None:
    with pytest.raises(json.JSONDecodeError):
        jsoncodec.loads(b"{not json")


def test_the_checkpoint_table_keeps_any_tool_result_and_reads_older_values() -> None:
    table = Table("checkpoints", "checkpoints-changelog")
    step = {"epoch": 1, "seq": 3, "kind": "tool", "content": "€", "result": {"big": BIG, "keys": {7: "x"}}}
    assert table.decode_value(table.encode_value(step)) == {**step, "result": {"big": BIG, "keys": {"7": "x"}}}
    older = {"epoch": 1, "seq": 2, "kind": "model", "text": "é", "usage": {"cost_usd": 1e-05}}
    assert table.decode_value(_std_compact(older)) == older


def test_a_transcript_keeps_its_task_and_steps() -> None:
    task = {"task_id": "t1", "session_id": "s", "tenant_id": "acme", "input": "Grüße", "metadata": {"b": 1, "a": 2}}
    result = {"agent_type": "billing", "behavior_version": "v", "status": "COMPLETED", "usage": {},
              "started_at": 1, "finished_at": 2}
    steps = [{"epoch": 0, "seq": 0, "kind": "tool", "content": "😀", "n": BIG, "cost": 1e-05}]
    record = transcript(task, result, [[0, 0]], steps, 3)
    assert task_of(record) == task and steps_of(record) == steps
    assert list(task_of(record)) == sorted(task)  # the task's keys sorted, as before
    # Text a worker before the codec wrote reads the same.
    older = {"task": json.dumps(task, sort_keys=True, ensure_ascii=False), "steps": json.dumps(steps)}
    assert task_of(older) == task and steps_of(older) == steps


def test_canonical_spells_large_exponents_as_the_standard_library_does() -> None:
    # orjson before 3.11.7 wrote 1e16 where the standard library writes 1e+16: any exponent
    # takes the standard path, whatever orjson is installed.
    value = {"amount": 1e16, "more": [1e20, -3.5e300, 2e-7]}
    assert jsoncodec.canonical(value) == _std_canonical(value) == b'{"amount":1e+16,"more":[1e+20,-3.5e+300,2e-07]}'


def test_canonical_writes_a_nan_as_null_the_one_documented_difference() -> None:
    assert jsoncodec.canonical({"x": float("nan")}) == b'{"x":null}'
    assert _std_canonical({"x": float("nan")}) == b'{"x":NaN}'
