"""Operating the dead-letter queue: ``agentstream dlq list | show | replay | purge``.

The DLQ topic (``topology.topic("dlq")``) holds DeadLetter records keyed by their id. It
is read whole, with a group-less reader, to the true end of each partition (from fetch
high watermarks: ListOffsets is wrong on the embedded broker). A dead letter written
twice with one id (a redelivered failure) is listed once, the last copy winning.

Replay
    ``replay <id>`` (or ``--all-matching`` with filters) produces the original key, value
    and headers to the original stage input topic and partition (never a retry tier). The
    headers lose the stale failure context (attempt, due time, error, original-*), get
    ``agentstream-attempt: 0`` and the marker ``agentstream-replay: <dead letter id>``. If
    the replayed event fails again, its new dead letter has a new id and names the old one
    in ``replayed_from``. A dead letter whose value was truncated (over 512 KiB) cannot be
    replayed. Replay does not remove the dead letter: purge it once the replay completed.

How downstream should treat a replayed task
    When a task was dead-lettered, ``agents.results.v1`` got a TaskResult with status
    FAILED and error code DEAD_LETTERED. If the task is replayed and completes, a second
    TaskResult with the same ``task_id`` follows (COMPLETED, or FAILED/REJECTED with
    another code). Downstream must key results by ``task_id`` and let the later one
    replace the earlier: last result wins (both share the session key, so they are in
    one partition, in order). Treat a DEAD_LETTERED result as final-until-replaced: an
    operator may still bring the task back, and nothing else will.

Purge
    ``purge`` asks for confirmation (``--yes`` skips it). The embedded broker supports
    neither ``delete_records`` nor compaction, so a purge writes, per dead letter, a
    tombstone (null value) keyed by its id with the header ``agentstream-purged`` holding
    the ``dead_lettered_at`` it covers; list, show and replay hide a dead letter covered
    by such a marker. The bytes stay on the broker until retention removes them (the DLQ
    topic keeps 30 days). On a real Kafka cluster, retention (``retention.ms``) is what
    frees the space; with ``cleanup.policy=compact,delete`` the tombstones would also
    drop the purged dead letters at the next compaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config, producer_config
from agentstream.errors import AgentStreamError
from agentstream.retry import headers as h
from agentstream.retry.dead_letter import DEAD_LETTER
from agentstream.runtime.lag import read_topic
from agentstream.runtime.topics import require_topics
from agentstream.serde import SchemaSet, SerdeError
from agentstream.topology import Topology

__all__ = [
    "DeadLetterFilter",
    "DeadLetterNotFoundError",
    "DeadLetterQueue",
    "DlqError",
    "check_arguments",
    "format_dead_letter",
    "format_table",
    "parse_since",
    "run_command",
]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PREVIEW_BYTES = 256


class DlqError(AgentStreamError):
    """A DLQ operation cannot be done as asked; the message says why and what to do."""


class DeadLetterNotFoundError(DlqError):
    """No visible dead letter has the id."""


def parse_since(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from ``1h``/``30m``/``2d``/``90s``/``1w`` ago, or an ISO time (UTC if no zone)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        return now - int(float(relative[1]) * _UNIT_S[relative[2]] * 1000)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DlqError(
            f"Cannot read --since {text!r}: give a relative time like 90s, 30m, 1h, 2d, 1w, "
            "or an ISO time like 2024-05-01T12:00:00Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation covers; None matches everything."""

    since_ms: int | None = None
    stage: str | None = None
    error: str | None = None  # an error class (PERMANENT) or the short exception type name

    def matches(self, letter: Mapping[str, Any]) -> bool:
        if self.since_ms is not None and letter["dead_lettered_at"] < self.since_ms:
            return False
        if self.stage is not None and letter["stage"] != self.stage:
            return False
        if self.error is not None:
            wanted = self.error.lower()
            short_type = str(letter["error_type"]).rsplit(".", 1)[-1].lower()
            if wanted not in (str(letter["error_class"]).lower(), short_type, str(letter["error_type"]).lower()):
                return False
        return True


class DeadLetterQueue:
    """The visible dead letters of one DLQ topic, and the writes that replay or purge them."""

    def __init__(self, bootstrap: str, topic: str, schemas: SchemaSet, timeout: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._schemas = schemas
        self._timeout = timeout
        self.undecodable = 0  # records on the topic that are neither a DeadLetter nor a marker
        self._writer: Producer | None = None
        self._errors: list[str] = []

    def letters(self, where: DeadLetterFilter | None = None) -> list[dict[str, Any]]:
        """The visible dead letters matching ``where``, oldest first."""
        latest: dict[str, dict[str, Any]] = {}
        purged: dict[str, int] = {}
        self.undecodable = 0
        for key, value, headers in self._read():
            if value is None:
                self._note_marker(key, headers, purged)
                continue
            try:
                letter = self._schemas.decode_as(DEAD_LETTER, value)
            except SerdeError:
                self.undecodable += 1
                continue
            previous = latest.get(letter["id"])
            if previous is None or letter["dead_lettered_at"] >= previous["dead_lettered_at"]:
                latest[letter["id"]] = letter
        visible = [
            letter
            for letter in latest.values()
            if letter["dead_lettered_at"] > purged.get(letter["id"], -1) and (where is None or where.matches(letter))
        ]
        return sorted(visible, key=lambda letter: (letter["dead_lettered_at"], letter["id"]))

    def get(self, letter_id: str) -> dict[str, Any]:
        for letter in self.letters():
            if letter["id"] == letter_id:
                return letter
        raise DeadLetterNotFoundError(
            f"No dead letter {letter_id!r} in {self.topic} (or it was purged); `agentstream dlq list` shows the ids."
        )

    def replay(self, letters: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
        """Produce each letter's original event back to its source; (id, topic, partition) sent."""
        blocked = [letter["id"] for letter in letters if letter["value_truncated"]]
        if blocked:
            raise DlqError(
                f"Cannot replay {blocked}: only the first 512 KiB of their values were kept. "
                "Re-send those events from their producer; nothing was replayed."
            )
        # Never create a topic by producing to it (a broker that auto-creates would pick its
        # partition count): the source topics must still be there.
        admin = AdminClient(admin_config(self.bootstrap))
        require_topics(admin, sorted({letter["source_topic"] for letter in letters}), self.bootstrap)
        sent = []
        for letter in letters:
            headers = h.replay_headers(((x["name"], x["value"]) for x in letter["headers"]), letter["id"])
            sent.append((letter["id"], letter["source_topic"], letter["source_partition"]))
            self._producer().produce(
                letter["source_topic"],
                letter["value"],
                letter["key"],
                partition=letter["source_partition"],
                headers=headers,
                on_delivery=self._delivered,
            )
        self._flush("replay")
        return sent

    def purge(self, letters: Iterable[Mapping[str, Any]]) -> int:
        """Write a purge marker for each letter (see the module docstring); how many."""
        count = 0
        for letter in letters:
            headers = h.encode_headers({h.DEAD_LETTER_ID: letter["id"], h.PURGED: letter["dead_lettered_at"]})
            self._producer().produce(
                self.topic, None, letter["id"].encode("utf-8"), headers=headers, on_delivery=self._delivered
            )
            count += 1
        self._flush("purge")
        return count

    # -- reading and writing -------------------------------------------------------------

    def _read(self) -> Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
        for record in read_topic(self.bootstrap, self.topic, self._timeout):
            yield record.key, record.value, record.headers

    @staticmethod
    def _note_marker(key: bytes | None, headers: list[tuple[str, bytes | None]], purged: dict[str, int]) -> None:
        seen = h.decode_headers(headers)
        letter_id = seen.get(h.DEAD_LETTER_ID) or (key.decode("utf-8", "replace") if key else None)
        covers = seen.get(h.PURGED)
        if letter_id and covers and covers.lstrip("-").isdigit():
            purged[letter_id] = max(purged.get(letter_id, -1), int(covers))

    def _producer(self) -> Producer:
        if self._writer is None:
            self._writer = Producer(producer_config(self.bootstrap))
        return self._writer

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def _flush(self, what: str) -> None:
        if self._writer is None:
            return
        unsent = self._writer.flush(self._timeout)
        if unsent or self._errors:
            raise DlqError(
                f"The {what} was not fully acknowledged ({unsent} unsent, errors: {self._errors[:3]}); "
                "check the broker and run it again (a replayed event seen twice is deduplicated by task_id)."
            )


# -- output ------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_table(letters: Sequence[Mapping[str, Any]]) -> str:
    """One line per dead letter: id, time, stage, error class, type, task, session, attempts."""
    head = ("ID", "DEAD-LETTERED (UTC)", "STAGE", "CLASS", "TYPE", "TASK", "SESSION", "ATTEMPTS")
    rows = [head] + [
        (
            letter["id"],
            _when(letter["dead_lettered_at"]),
            letter["stage"],
            letter["error_class"],
            str(letter["error_type"]).rsplit(".", 1)[-1],
            letter["task_id"] or "-",
            letter["session_id"] or "-",
            str(letter["attempts"]),
        )
        for letter in letters
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _preview(data: bytes) -> str:
    """Text when the bytes are mostly printable UTF-8, else hex; at most _PREVIEW_BYTES."""
    part, rest = data[:_PREVIEW_BYTES], len(data) - _PREVIEW_BYTES
    more = f" ... ({rest} more bytes)" if rest > 0 else ""
    try:
        text = part.decode("utf-8")
        if sum(c.isprintable() or c in "\n\t" for c in text) >= 0.9 * len(text):
            return repr(text) + more
    except UnicodeDecodeError:
        pass
    return "hex " + part.hex(" ") + more


def _decoded_value(letter: Mapping[str, Any], schemas: SchemaSet) -> list[str]:
    value = letter["value"]
    if value is None:
        return ["value:          null"]
    size = f"{letter['value_size']} bytes, sha256 {letter['value_sha256']}"
    if letter["value_truncated"]:
        size += f" (only the first {len(value)} bytes kept: not replayable)"
    lines = [f"value:          {size}"]
    try:
        name, record = schemas.decode(value)
    except SerdeError as exc:
        lines.append(f"  not decodable ({type(exc).__name__}): {_preview(value)}")
        return lines
    body = json.dumps(record, indent=2, ensure_ascii=False, default=lambda b: _preview(b))
    lines.append(f"  decoded as {name}:")
    lines += ["    " + line for line in body.splitlines()]
    return lines


def format_dead_letter(letter: Mapping[str, Any], schemas: SchemaSet) -> str:
    """Everything a dead letter holds, the original value decoded where possible."""
    key = "null" if letter["key"] is None else _preview(letter["key"])
    lines = [
        f"id:             {letter['id']}",
        f"dead-lettered:  {_when(letter['dead_lettered_at'])} ({letter['dead_lettered_at']})",
        f"first failure:  {_when(letter['first_failure_at'])} ({letter['first_failure_at']})",
        f"source:         {letter['source_topic']}[{letter['source_partition']}]@{letter['source_offset']}",
        f"stage:          {letter['stage']} (group {letter['consumer_group']})",
        f"error:          {letter['error_class']} {letter['error_type']}",
        f"message:        {letter['error_message']}",
        f"attempts:       {letter['attempts']}",
        f"task:           {letter['task_id'] or '-'}",
        f"session:        {letter['session_id'] or '-'}",
        f"replayed from:  {letter['replayed_from'] or '-'}",
        f"key:            {key}",
        *_decoded_value(letter, schemas),
        f"headers:        {len(letter['headers'])}",
    ]
    for header in letter["headers"]:
        shown = "null" if header["value"] is None else _preview(header["value"])
        lines.append(f"  {header['name']}: {shown}")
    lines.append("stack:")
    lines += ["  " + line for line in (letter["error_stack"] or "-").splitlines()]
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> DeadLetterFilter:
    since = parse_since(args.since) if getattr(args, "since", None) else None
    return DeadLetterFilter(since, getattr(args, "stage", None), getattr(args, "error", None))


def _confirm(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    stdout.write(f"{question} [y/N] ")
    stdout.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse arguments that cannot work, before any broker is asked."""
    if args.action == "replay" and args.id is None and not args.all_matching:
        raise DlqError("Say what to replay: a dead letter id (see `agentstream dlq list`), or --all-matching "
                       "with --stage/--error/--since.")
    if args.action == "replay" and args.id is not None and args.all_matching:
        raise DlqError("Give a dead letter id or --all-matching (with --stage/--error/--since), not both.")
    if getattr(args, "since", None):
        parse_since(args.since)


def run_command(
    args: argparse.Namespace,
    bootstrap: str,
    topology: Topology,
    schemas: SchemaSet | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run ``agentstream dlq <action>``; the exit code."""
    out, inp = stdout or sys.stdout, stdin or sys.stdin
    schemas = schemas or SchemaSet.load()
    dlq = DeadLetterQueue(bootstrap, topology.topic("dlq"), schemas)
    if args.action == "list":
        letters = dlq.letters(_filter(args))
        print(format_table(letters) if letters else f"No dead letters in {dlq.topic} match.", file=out)
        print(f"{len(letters)} dead letter(s) in {dlq.topic}" + _skipped(dlq), file=out)
        return 0
    if args.action == "show":
        print(format_dead_letter(dlq.get(args.id), schemas), file=out)
        return 0
    if args.action == "replay":
        check_arguments(args)
        letters = [dlq.get(args.id)] if args.id else dlq.letters(_filter(args))
        for letter_id, topic, partition in dlq.replay(letters):
            print(f"replayed {letter_id} -> {topic}[{partition}]", file=out)
        print(f"{len(letters)} dead letter(s) replayed", file=out)
        return 0
    letters = [dlq.get(i) for i in args.ids] if args.ids else dlq.letters(_filter(args))
    if not letters:
        print(f"No dead letters in {dlq.topic} match; nothing to purge.", file=out)
        return 0
    if not args.yes and not _confirm(f"Purge {len(letters)} dead letter(s) from {dlq.topic}?", inp, out):
        print("Not purged.", file=out)
        return 1
    print(f"{dlq.purge(letters)} dead letter(s) purged from {dlq.topic}", file=out)
    return 0


def _skipped(dlq: DeadLetterQueue) -> str:
    return f" ({dlq.undecodable} undecodable record(s) skipped)" if dlq.undecodable else ""
