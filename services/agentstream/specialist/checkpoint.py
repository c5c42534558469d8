"""Step checkpoints of a running agent loop: record layout and the fenced chain rebuild.

Pure data logic, no Kafka. A task's checkpoint is a handful of records in the
specialist's ``checkpoints`` table (a compacted changelog, co-partitioned with the
session):

- head ``t/<task_id>``: the routed task, and the list of ownership epochs as
  ``[epoch, first_seq]`` pairs — a new owner that resumes the task appends one;
- step ``s/<task_id>/<epoch>/<seq>``: what one step added — a model reply, or a tool
  result — so bytes per step do not grow with the history; with its start time and
  latency, and for a reply the essentials of its request (kept for the run's transcript,
  transcripts/record.py). A tool record may carry, under ``more``, results of other calls
  of the same model turn that have no side effects (specialist/durable.py says when), so a
  turn of read-only calls costs one record, not one per call. The first result stays at
  the top level, in the shape every tool record had before ``more`` existed: records of
  the older code (a worker upgraded mid-task) still resume, and the older code, reading
  a record with ``more``, sees only its first result and runs the others again —
  harmless, they have no side effects;
- done ``d/<task_id>``: the task finished; a redelivered copy is ignored;
- place ``p/<task_id>``: the task's session id while the task is in the retry tiers, so
  a new owner keeps the session's later tasks behind it.

A revision of a task (the supervisor sent it back with feedback, RoutedTask.revision n > 0)
is a run of its own: its records use ``run_id`` — ``<task_id>#rev<n>`` — where the first
run uses the bare task id, so a revision is never taken for a duplicate of the task, and a
repeated revision n is one of revision n. (A client that names a task ``X#rev1`` as well
as ``X`` would make the two share records; task ids must not end in ``#rev<n>``.)

Fencing: step keys carry the writer's epoch, so a stale owner can never overwrite a newer
owner's record, even after compaction; and when the chain is rebuilt, a record of epoch
e only counts for the sequence numbers that epoch owned (from its first_seq up to the
next epoch's). A zombie's late steps fall outside its range and are ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentstream import jsoncodec
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage
from agentstream.tools.registry import ToolResult

HEAD = "t/"
STEP = "s/"
DONE = "d/"
PLACE = "p/"
MORE = "more"  # a tool record's further results of the same turn (read-only calls)

# The newest message of a model request is kept in its step (what the step was asked);
# clipped so a step's bytes stay bounded by what it added.
_NEWEST_CHARS = 500
_DIGEST_HEX = 16


REVISION_MARK = "#rev"


def run_id(task: Mapping[str, Any]) -> str:
    """The id of one run of a routed task: its task id, with the revision for a revision."""
    revision = int(task.get("revision") or 0)
    return str(task["task_id"]) if revision == 0 else f"{task['task_id']}{REVISION_MARK}{revision}"


def head_key(task_id: str) -> str:
    return f"{HEAD}{task_id}"


def step_key(task_id: str, epoch: int, seq: int) -> str:
    return f"{STEP}{task_id}/{epoch:06d}/{seq:06d}"


def step_prefix(task_id: str) -> str:
    return f"{STEP}{task_id}/"


def done_key(task_id: str) -> str:
    return f"{DONE}{task_id}"


def place_key(task_id: str) -> str:
    return f"{PLACE}{task_id}"


@dataclass(frozen=True, slots=True)
class Timing:
    """When a step began (epoch ms) and how long it took; kept for transcripts."""

    at: int
    latency_ms: int


def request_summary(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The essentials of a model request: its size, a digest of the whole conversation
    (equal digests: the model saw the same thing), the tools offered and the newest message."""
    return RequestSummaries().summary(messages, tools)


def _canonical_messages(messages: Sequence[Message]) -> bytes:
    """The canonical JSON of a list of messages, in one encoder call."""
    items = [[m.role, m.content, [[c.name, c.arguments] for c in m.tool_calls], m.tool_call_id] for m in messages]
    if all(not m.tool_calls and (m.content is None or type(m.content) is str) for m in messages):
        return jsoncodec.canonical_without_numbers(items)  # text only: no float to check for
    return jsoncodec.canonical(items)


class RequestSummaries:
    """request_summary for the successive calls of one run, each hashing only the messages
    the conversation gained since the previous call.

    The digest is the sha256 of the canonical JSON of the list of messages (the bytes
    json.dumps(sort_keys, compact, ensure_ascii=False, default=str) wrote, so the digests of
    transcripts older workers recorded still compare). A compact list is ``[`` + its items'
    JSON joined by ``,`` + ``]``, so the hash state after the messages a call shares with
    the previous one (the same objects: a Message is frozen) is continued, not redone — a
    run's calls resend the whole history, and rehashing it made the digest grow with the
    square of a run's length. A conversation that history compression rewrote starts over.
    """

    def __init__(self) -> None:
        self._hashed: list[Message] = []  # the messages the state has taken in, in order
        self._state = hashlib.sha256(b"[")

    def summary(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        newest = messages[-1] if messages else None
        return {
            "messages": len(messages),
            "digest": self._digest(messages),
            "tools": sorted(str(t.get("name")) for t in tools),
            "newest": None if newest is None else {"role": newest.role, "content": (newest.content or "")[:_NEWEST_CHARS]},
        }

    def _digest(self, messages: Sequence[Message]) -> str:
        hashed = self._hashed
        if len(messages) < len(hashed) or any(m is not h for m, h in zip(messages, hashed)):
            hashed = self._hashed = []
            self._state = hashlib.sha256(b"[")
        added = messages[len(hashed):]
        if added:
            encoded = _canonical_messages(added)  # first: a value it refuses leaves the state as it was
            if hashed:
                self._state.update(b",")
            self._state.update(memoryview(encoded)[1:-1])  # the items, without [ ]
            hashed.extend(added)
        whole = self._state.copy()
        whole.update(b"]")
        return whole.hexdigest()[:_DIGEST_HEX]


def _timed(record: dict[str, Any], timing: Timing | None) -> dict[str, Any]:
    if timing is not None:
        record.update(at=timing.at, latency_ms=timing.latency_ms)
    return record


def model_step(
    step: int, response: ModelResponse, epoch: int, seq: int, *,
    timing: Timing | None = None, request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record = {
        "epoch": epoch,
        "seq": seq,
        "kind": "model",
        "step": step,
        "text": response.text,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls],
        "usage": {"input_tokens": response.usage.input_tokens, "output_tokens": response.usage.output_tokens,
                  "cost_usd": response.usage.cost_usd},
        "model": response.model,
    }
    if request is not None:
        record["request"] = request
    return _timed(record, timing)


@dataclass(frozen=True, slots=True)
class Finished:
    """A tool call of a model turn that returned: its index in the turn and its result."""

    index: int
    result: ToolResult
    timing: Timing | None = None


def _tool_fields(index: int, result: ToolResult, timing: Timing | None) -> dict[str, Any]:
    return _timed({"index": index, "name": result.name, "ok": result.ok, "content": result.content}, timing)


def tool_step(
    step: int, index: int, result: ToolResult, epoch: int, seq: int, *,
    timing: Timing | None = None, more: Sequence[Finished] = (),
) -> dict[str, Any]:
    """The record of tool results of model step ``step``: call ``index``'s, and under
    ``more`` those of other calls of the step without side effects (only when there are)."""
    record = {"epoch": epoch, "seq": seq, "kind": "tool", "step": step, **_tool_fields(index, result, timing)}
    if more:
        record[MORE] = [_tool_fields(done.index, done.result, done.timing) for done in more]
    return record


def step_entries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steps a step record holds, each as a record of its own: a model reply's record
    is one; a tool record is its first result, then each under ``more`` (in the shape of
    a record without ``more``). Transcripts list these, one per model reply or tool result."""
    first = {key: value for key, value in record.items() if key != MORE}
    shared = {key: record[key] for key in ("epoch", "seq", "kind", "step")}
    return [first, *({**shared, **extra} for extra in record.get(MORE, ()))]


def response_of(record: Mapping[str, Any]) -> ModelResponse:
    usage = record["usage"]
    return ModelResponse(
        record["text"],
        tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in record["tool_calls"]),
        Usage(usage["input_tokens"], usage["output_tokens"], usage.get("cost_usd", 0.0)),
        record["model"],
    )


def tool_result_of(record: Mapping[str, Any]) -> ToolResult:
    return ToolResult(record["name"], record["ok"], record["content"])


@dataclass
class Chain:
    """The valid steps of a task, indexed for replay."""

    models: dict[int, dict[str, Any]] = field(default_factory=dict)  # model step -> record
    # (model step, index) -> that call's result, one per result (step_entries)
    tools: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    length: int = 0  # the next sequence number

    @property
    def model_calls(self) -> int:
        return len(self.models)


def rebuild(epochs: Sequence[Sequence[int]], records: Iterable[Mapping[str, Any]]) -> Chain:
    """The chain of valid steps: each record must fall inside its epoch's range, and the
    chain stops at the first missing sequence number (a step whose write never landed)."""
    ranges: dict[int, tuple[int, float]] = {}
    for i, (epoch, first) in enumerate(epochs):
        end = epochs[i + 1][1] if i + 1 < len(epochs) else float("inf")
        ranges[int(epoch)] = (int(first), end)
    by_seq: dict[int, Mapping[str, Any]] = {}
    for record in records:
        span = ranges.get(int(record["epoch"]))
        if span is not None and span[0] <= record["seq"] < span[1]:
            by_seq[int(record["seq"])] = record
    chain = Chain()
    while chain.length in by_seq:
        record = by_seq[chain.length]
        if record["kind"] == "model":
            chain.models[int(record["step"])] = dict(record)
        else:
            for entry in step_entries(record):
                chain.tools[(int(entry["step"]), int(entry["index"]))] = entry
        chain.length += 1
    return chain


def resumes_at_same_step(epochs: Sequence[Sequence[int]]) -> int:
    """How many owners in a row started at the sequence number the last one started at:
    a task whose step keeps killing its worker shows a growing count."""
    if not epochs:
        return 0
    last = epochs[-1][1]
    count = 0
    for _, first in reversed(epochs):
        if first != last:
            break
        count += 1
    return count
