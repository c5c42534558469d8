"""Fuzz (issue 11): hypothesis-generated records and bytes into every stage's input topic.

One stack (router, the three specialists, supervisor: real processes, scripted model)
takes, on each of the tasks topic, the billing specialist's topic and the supervisor's
topic, records made by hypothesis with a raw confluent-kafka producer: the stage's own
record with odd field values (astral, RTL, NUL, empty, huge, optionals missing), the same
record as JSON, truncated, framed the Confluent way, written with another writer schema
(honestly labelled, or under the real fingerprint), another stage's record, random bytes,
null values, null, binary and huge keys. Every record must end in the results topic (a
REJECTED result counts) or in the DLQ with a reason, and every worker must still run and
exit 0 on SIGTERM. The counts per stage are printed (run with -s to see them).

The records are drawn once, derandomized, so every run sends the same bytes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.serde import MAGIC, SchemaSet
from agentstream.topology import Topology

from .harness import wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
SCHEMA_FILES = Path(__file__).resolve().parents[2] / "schemas"
RECORDS_PER_STAGE = int(os.environ.get("AGENTSTREAM_FUZZ_RECORDS", "100"))
# Which schema each fuzzed stage reads; the specialist stage is billing's.
STAGE_SCHEMA = {"tasks": "TaskSubmitted", "billing": "RoutedTask", "supervisor": "SpecialistResult"}
KNOWN_TYPES = ("billing", "technical", "account")
PRODUCER_LIMIT = 1_000_000  # librdkafka's default message.max.bytes: key, value and overhead

# -- what hypothesis draws ------------------------------------------------------------------
_ODD = [
    "", " ", "\t\n", "\x00", "a\x00b", "\u202e\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "\U0001d54f\U0001f600\U00010348", "e\u0301\u0327", "\ufeff", "\u2028\u2029", "\uffff",
]
_TICKETS = ["I was charged twice on INV-1002", "API error 500 when I sync", "Reset my password please",
            "refund my order #5004 and my login fails"]
_TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(_ODD)
# Ids and input mostly non-blank, so most tasks get past validation to the stages behind it.
_FILLED = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(str.strip) | st.sampled_from(
    [odd for odd in _ODD if odd.strip()])
_MOSTLY_FILLED = st.one_of(_FILLED, _FILLED, _FILLED, _TEXT)
# Bigger than the router's 32 KiB input limit; at most one such field per record, so a
# record stays under the producer's 1 MB message limit.
_HUGE = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "\u00e9", "\U0001f600", "\x00", "\u202e"]),
                  st.integers(35_000, 70_000))
_LONG = st.integers(-(2**63), 2**63 - 1)
_INT = st.integers(-(2**31), 2**31 - 1)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_HUGE_FIELDS = ("task_id", "session_id", "tenant_id", "input", "metadata")
# How a record becomes bytes, and its share of each stage's records: every kind gets its
# share whatever hypothesis draws (a sampled_from of 100 draws skipped one kind entirely).
MODE_SHARES = {"avro": 8, "json": 1, "truncated": 1, "confluent": 1, "other-writer": 1, "lying-header": 1,
               "other-record": 1, "bytes": 2, "null": 1, "max-bytes": 1}
# A field's type as another writer might have it, and values of that type.
_WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "string": _TEXT, "long": _LONG, "int": _INT, "boolean": st.booleans(), "double": _FLOAT,
    "bytes": st.binary(max_size=40), "null": st.none(),
}


@dataclass
class Draw:
    """One generated input of a stage, before it becomes bytes (materialize)."""

    stage: str
    record: dict[str, Any]
    mode: str  # one of MODE_SHARES
    detail: Any  # per mode: the cut fraction, the wrong field and its type and value, ...
    key: str  # "session", "none", "binary", "huge"
    key_bytes: bytes


@dataclass
class Sent:
    """A record as produced, and where it went."""

    stage: str
    kind: str
    task_id: str | None  # a unique id the results can name it by; None when it has none
    key: bytes | None
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1


@st.composite
def _task_fields(draw: st.DrawFn, huge: str | None) -> dict[str, Any]:
    def text(name: str) -> str:
        return draw(_HUGE if huge == name else _MOSTLY_FILLED)

    record: dict[str, Any] = {
        "task_id": text("task_id"), "session_id": text("session_id"), "tenant_id": text("tenant_id"),
        "input": draw(_HUGE) if huge == "input" else draw(_MOSTLY_FILLED | st.sampled_from(_TICKETS)),
        "submitted_at": draw(_LONG),
    }
    if draw(st.booleans()):  # an absent optional takes its schema default when encoded
        record["metadata"] = {"k": draw(_HUGE)} if huge == "metadata" else draw(st.dictionaries(_TEXT, _TEXT, max_size=3))
    if draw(st.booleans()):
        record["budget_usd"] = draw(st.none() | _FLOAT)
    return record


@st.composite
def _stage_record(draw: st.DrawFn, stage: str) -> dict[str, Any]:
    huge = draw(st.sampled_from((None,) * 6 + _HUGE_FIELDS))
    record = draw(_task_fields(huge))
    if stage == "tasks":
        if draw(st.booleans()):
            record["requested_agent"] = draw(st.none() | st.sampled_from(KNOWN_TYPES) | _TEXT)
        return record
    if stage == "billing":
        # Mostly billing's own; another type's task on billing's topic must not vanish either.
        agent_type = draw(st.sampled_from(("billing",) * 4 + ("technical",)) | _TEXT)
        record.update(agent_type=agent_type, route=[agent_type], routed_at=draw(_LONG))
        if draw(st.booleans()):
            record["tier"] = draw(st.sampled_from(["simple", "standard", "complex"]) | _TEXT)
        return record
    # The supervisor: a specialist's result. Its route names only its own type, so the
    # supervisor does not wait (rightly) for a second result that never comes.
    agent_type = draw(_TEXT)
    del record["input"]
    record.pop("metadata", None)
    record.pop("budget_usd", None)
    record.update(
        agent_type=agent_type, route=[agent_type], status=draw(st.sampled_from(["COMPLETED", "FAILED"])),
        output=draw(st.none() | _TEXT), tools_used=draw(st.lists(_TEXT, max_size=3)),
        error=draw(st.none() | st.fixed_dictionaries({"code": _TEXT, "message": _TEXT})),
        usage={"input_tokens": draw(_LONG), "output_tokens": draw(_LONG), "cost_usd": draw(_FLOAT),
               "llm_calls": draw(_INT), "tool_calls": draw(_INT), "retries": draw(_INT)},
        started_at=draw(_LONG), finished_at=draw(_LONG), submitted_at=draw(st.none() | _LONG),
        behavior_version=draw(_TEXT), tier=draw(_TEXT), model=draw(_TEXT),
    )
    return record


@st.composite
def _draws(draw: st.DrawFn, stage: str, mode: str) -> Draw:
    record = draw(_stage_record(stage))
    detail: Any = None
    if mode == "truncated":
        detail = draw(st.floats(0.0, 0.99))
    elif mode in ("other-writer", "lying-header"):
        name = draw(st.sampled_from([f for f in record if f != "task_id"]))
        wrong = draw(st.sampled_from(sorted(_WRONG_TYPES)))
        detail = (name, wrong, draw(_WRONG_TYPES[wrong]))
    elif mode == "other-record":
        detail = draw(st.sampled_from([n for n in ("TaskSubmitted", "RoutedTask", "SpecialistResult") if n != STAGE_SCHEMA[stage]]))
    elif mode == "bytes":
        detail = draw(st.binary(max_size=2000) | st.binary(max_size=200).map(lambda b: MAGIC + b))
    elif mode == "max-bytes":  # as much as the producer takes: its dead letter must fit too
        detail = (draw(st.binary(min_size=1, max_size=16)), draw(st.sampled_from([0.6, 0.9, 1.0])))
    huge_value = any(len(str(v)) > 30_000 for v in record.values())
    key = draw(st.sampled_from(("session",) * 5 + ("none", "binary") + (() if huge_value else ("huge",))))
    if mode == "max-bytes":
        key = "huge"  # the dead letter copies a UTF-8 key out as the session id: the worst case
    key_bytes = b""
    if key == "binary":
        key_bytes = draw(st.binary(max_size=40))
    elif key == "huge":
        key_bytes = ("\u00e9" * draw(st.integers(50_000, 200_000))).encode()
    return Draw(stage, record, mode, detail, key, key_bytes)


def draw_batch(stage: str, count: int) -> list[Draw]:
    """About ``count`` inputs for ``stage``, each kind its share, the same on every run
    (derandomized, no example database)."""
    batch: list[Draw] = []
    total = sum(MODE_SHARES.values())
    for mode, share in MODE_SHARES.items():

        @settings(derandomize=True, database=None, max_examples=max(1, round(count * share / total)),
                  phases=[Phase.generate], deadline=None)
        @given(_draws(stage, mode))
        def collect(item: Draw) -> None:
            batch.append(item)

        collect()
    return batch


# -- from a draw to bytes --------------------------------------------------------------------
def _schema_json(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_FILES / f"{name}.avsc").read_text(encoding="utf-8"))
    return loaded


def _with_wrong_type(name: str, field: str, wrong: str) -> SchemaSet:
    """Schema ``name`` as another writer has it: ``field`` of type ``wrong``, no default."""
    schema = copy.deepcopy(_schema_json(name))
    for spec in schema["fields"]:
        if spec["name"] == field:
            spec["type"] = wrong
            spec.pop("default", None)
    return SchemaSet({name: schema})


def materialize(item: Draw, index: int, run: str) -> Sent:
    name = STAGE_SCHEMA[item.stage]
    record = dict(item.record)
    # A unique task id names the record in the results. A blank id stays blank (the router
    # must reject it); stages after the router get ids it has validated, so never blank.
    traceable = bool(record["task_id"].strip()) or item.stage != "tasks"
    if traceable:
        record["task_id"] = f"{record['task_id']}~{run}-{item.stage}-{index}"
    else:  # blank but unique: the router remembers a whitespace id (test_blank_task_ids_...)
        record["task_id"] = record["task_id"] and record["task_id"] + "".join(" \t"[int(b)] for b in f"{index:b}")
    key = {"session": record["session_id"].encode(), "none": None}.get(item.key, item.key_bytes)
    value: bytes | None
    if item.mode == "null":
        value = None
    elif item.mode == "bytes":
        value = item.detail
    elif item.mode == "max-bytes":
        pattern, share = item.detail
        size = int((PRODUCER_LIMIT - 10_000 - len(key or b"")) * share)
        value = (pattern * (size // len(pattern) + 1))[:size]
    elif item.mode == "json":
        value = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    elif item.mode == "other-record":
        value = SCHEMAS.encode(item.detail, _as_other(record, item.detail))
    elif item.mode in ("other-writer", "lying-header"):
        field, wrong, bad = item.detail
        encoded = _with_wrong_type(name, field, wrong).encode(name, {**SCHEMAS_DEFAULTS[name], **record, field: bad})
        # other-writer: its own fingerprint (unknown here); lying-header: ours over its body.
        value = encoded if item.mode == "other-writer" else MAGIC + SCHEMAS.fingerprint(name) + encoded[10:]
    else:
        value = SCHEMAS.encode(name, record)
        if item.mode == "truncated":
            value = value[: int(len(value) * item.detail)]
        elif item.mode == "confluent":
            value = b"\x00\x00\x00\x00\x07" + value[10:]
    kind = f"avro{'+huge' if len(value or b'') > 30_000 else ''}" if item.mode == "avro" else item.mode
    return Sent(item.stage, f"{kind}/key:{item.key}", record["task_id"] if traceable else None, key, value)


# Fields the stage records may leave out (schema defaults), filled where a variant
# schema without defaults encodes them.
SCHEMAS_DEFAULTS: dict[str, dict[str, Any]] = {
    "TaskSubmitted": {"requested_agent": None, "metadata": {}, "budget_usd": None},
    "RoutedTask": {"tier": "standard", "metadata": {}, "budget_usd": None},
    "SpecialistResult": {},
}
_OTHER_FILL: dict[str, Any] = {
    "input": "x", "submitted_at": 0, "agent_type": "billing", "route": ["billing"], "routed_at": 0, "status": "COMPLETED",
    "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "llm_calls": 0, "tool_calls": 0, "retries": 0},
    "started_at": 0, "finished_at": 0,
}


def _as_other(record: dict[str, Any], other: str) -> dict[str, Any]:
    """``record``'s ids in a valid record of schema ``other`` (another stage's record)."""
    fields = {f["name"] for f in _schema_json(other)["fields"]}
    out = {k: v for k, v in {**_OTHER_FILL, **record}.items() if k in fields}
    if out.get("submitted_at") is None and other != "SpecialistResult":  # only there it may be null
        out["submitted_at"] = 0
    return out


# -- producing and accounting -----------------------------------------------------------------
def produce_all(bootstrap: str, sent: list[Sent], topics: dict[str, str]) -> None:
    producer = Producer(producer_config(bootstrap))
    failures: list[str] = []

    def delivered(item: Sent, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{item.kind}: {err}")
            return
        item.topic, item.partition, item.offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0

    for item in sent:
        producer.produce(topics[item.stage], item.value, item.key, on_delivery=partial(delivered, item))
        producer.poll(0)
    assert producer.flush(60) == 0, "the fuzz records were not all acknowledged"
    assert not failures, f"the broker refused fuzz records: {failures[:5]}"


class Outcomes:
    """Results and dead letters read from the stack's topics, matched to what was sent."""

    def __init__(self, bootstrap: str, topics: dict[str, tuple[str, int]]) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(name, p, 0) for name, parts in topics.values() for p in range(parts)])
        self.results_topic, self.dlq_topic = topics["results"][0], topics["dlq"][0]
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.letters: dict[str, dict[str, Any]] = {}

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            if msg.topic() == self.results_topic:
                result = SCHEMAS.decode_as("TaskResult", msg.value() or b"")
                self.results.setdefault(result["task_id"], []).append(result)
            else:
                letter = SCHEMAS.decode_as("DeadLetter", msg.value() or b"")
                self.letters[letter["id"]] = letter

    def where(self, item: Sent) -> str:
        """rejected (a REJECTED result; the router dead-letters it too), dlq (a dead letter
        of this very record), results:<status>[:<error code>] (a later stage's dead letter
        shows as FAILED:DEAD_LETTERED), or unaccounted."""
        got = self.results.get(item.task_id) if item.task_id is not None else None
        if got and got[0]["status"] == "REJECTED":
            return "rejected"
        if f"{item.topic}-{item.partition}-{item.offset}" in self.letters:
            return "dlq"
        if got:
            error = got[0]["error"]
            return f"results:{got[0]['status']}" + (f":{error['code']}" if error and got[0]["status"] != "COMPLETED" else "")
        return "unaccounted"

    def close(self) -> None:
        self.consumer.close()


def input_topics(topology: Topology, stages: Iterable[str]) -> dict[str, str]:
    """The input topic of each fuzzed stage (``billing``: that specialist's)."""
    return {stage: topology.specialist_topic(stage) if stage == "billing" else topology.topic(stage) for stage in stages}


def test_fuzzed_records_on_every_stage_input_end_in_results_or_the_dlq(bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    sent = [materialize(item, i, run) for stage in STAGE_SCHEMA for i, item in enumerate(draw_batch(stage, RECORDS_PER_STAGE))]
    stack = DurableStack(bootstrap, tmp_path, latency="")
    topology = stack.topology
    stack.start("router", "router")
    for agent_type in KNOWN_TYPES:
        stack.start(agent_type, "specialist", "--type", agent_type)
    stack.start("supervisor", "supervisor")
    inputs = input_topics(topology, STAGE_SCHEMA)
    outcomes = Outcomes(bootstrap, {name: (topology.topic(name), topology.topic_spec(name).partitions) for name in ("results", "dlq")})
    codes: dict[str, int | None] = {}
    ready = settled = 0.0
    started = time.monotonic()
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        ready = time.monotonic() - started
        produce_all(bootstrap, sent, inputs)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(outcomes.where(item) == "unaccounted" for item in sent):
            outcomes.read(0.5)
        settled = time.monotonic() - started - ready
        outcomes.read(2.0)  # a little longer, so a late second result would be seen too
        alive = {name: worker.proc.poll() is None for name, worker in stack.workers.items()}
    finally:
        codes = stack.stop_all()
        outcomes.close()
        for name, worker in stack.workers.items():  # kept for reading a failure
            (tmp_path / f"{name}.log").write_text("\n".join(worker.lines), encoding="utf-8", errors="replace")
    table = Counter((item.stage, outcomes.where(item)) for item in sent)
    print(f"\nFuzz: {len(sent)} records (hypothesis, derandomized); workers ready in {ready:.0f} s, "
          f"outcomes read {settled:.0f} s after that")
    for stage in STAGE_SCHEMA:
        ends = {where: n for (s, where), n in sorted(table.items()) if s == stage}
        print(f"  {inputs[stage]}: {sum(ends.values())} sent -> {ends}")
    print(f"  kinds: {dict(sorted(Counter(item.kind.split('/')[0] for item in sent).items()))}")
    lost = [item for item in sent if outcomes.where(item) == "unaccounted"]
    crashed = {name: code for name, code in codes.items() if code != 0 or not alive[name]}
    print(f"  unaccounted: {len(lost)}, crashed workers: {len(crashed)}")
    assert not crashed, f"workers that died or did not exit 0: {crashed}\n" + "\n".join(
        stack.workers[name].tail(15) for name in crashed)
    assert not lost, "records that ended nowhere: " + "; ".join(
        f"{i.stage} {i.kind} {i.topic}[{i.partition}]@{i.offset} task {(i.task_id or '')[:40]!r}" for i in lost[:8])
    letters = [outcomes.letters[f"{i.topic}-{i.partition}-{i.offset}"] for i in sent if outcomes.where(i) == "dlq"]
    assert all(letter["error_type"] and letter["error_message"] and letter["stage"] for letter in letters), \
        "a dead letter without its reason"
    duplicated = {task: len(got) for task, got in outcomes.results.items() if len(got) > 1 and run in task}
    assert not duplicated, f"tasks with more than one result: {duplicated}"


def test_blank_task_ids_are_each_rejected_not_dropped_as_duplicates(bootstrap: str, tmp_path: Path) -> None:
    """Found by the fuzz: a whitespace-only id was marked as seen before it was rejected,
    so the next task with that blank id was dropped as a duplicate and ended nowhere."""
    stack = DurableStack(bootstrap, tmp_path, latency="")
    router = stack.start("router", "router")
    topology = stack.topology
    sent = [Sent("tasks", "blank-id", None, b"s-blank", SCHEMAS.encode("TaskSubmitted", new_task("hello", "s-blank", "it", task_id=blank)))
            for blank in (" ", " ", "\t", " ")]
    outcomes = Outcomes(bootstrap, {name: (topology.topic(name), topology.topic_spec(name).partitions) for name in ("results", "dlq")})
    try:
        router.wait_for_line(r": assigned ", 60)
        produce_all(bootstrap, sent, {"tasks": topology.topic("tasks")})
        for item in sent:  # handled: rejected, or (the bug) ignored as a duplicate
            router.wait_for_line(rf"{re.escape(item.topic)}\[{item.partition}\]@{item.offset}: ", 30)
        rejected = len(router.matching(r": task \s+ rejected: "))

        def letters_in() -> bool:
            outcomes.read(0.2)
            return len(outcomes.letters) >= rejected

        wait_for(letters_in, 30, f"{rejected} dead letters")
    finally:
        stack.stop_all()
        outcomes.close()
    assert [outcomes.where(item) for item in sent] == ["dlq"] * len(sent)
