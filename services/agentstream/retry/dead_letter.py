"""The DeadLetter envelope (schemas/DeadLetter.avsc) and what downstream sees of it.

A dead letter keeps the original key, value and headers byte for byte, so ``agentstream
dlq replay`` can re-inject exactly what the stage failed on. A value above 512 KiB keeps
only its first 512 KiB (with the full size and SHA-256), and less when the key and headers
take the room, so the envelope always fits the producer's default 1,000,000-byte message
limit; such a dead letter can be inspected but not replayed. A key too big even for that
(over ~937 KiB) is cut as well, and the letter marked ``value_truncated`` so replay refuses
it too. The task and session id copies (for lookups) keep at most their first 1 KiB.

Downstream is never left waiting: a dead-lettered task also gets a FAILED TaskResult
(error code DEAD_LETTERED, naming the dead letter) and a TaskEvent (ERROR, DEAD_LETTERED).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from agentstream.events import now_ms, task_event, task_result
from agentstream.retry import headers as h
from agentstream.retry.classify import deciding_error
from agentstream.serde import SchemaSet, SerdeError

__all__ = [
    "DEAD_LETTER",
    "DEAD_LETTERED",
    "MAX_VALUE_BYTES",
    "build_dead_letter",
    "dead_letter_event",
    "dead_letter_message",
    "failed_result",
    "read_original",
]

DEAD_LETTER = "DeadLetter"  # the schema name
DEAD_LETTERED = "DEAD_LETTERED"  # TaskResult error code and TaskEvent state
MAX_VALUE_BYTES = 512 * 1024
# Key, value and original headers together: under librdkafka's default message.max.bytes
# (1,000,000) with room for the rest (trimmed ids, error text and stack: ~10 KB). A letter
# over it is refused at produce() and the event would be lost with it.
MAX_LETTER_BYTES = 960_000
MAX_ID_BYTES = 1024

RawHeaders = Iterable[tuple[str, bytes | None]] | None


def read_original(value: bytes | None, schemas: SchemaSet) -> tuple[str, dict[str, Any]] | None:
    """The schema name and record a value holds, or None when it does not decode."""
    if value is None:
        return None
    try:
        return schemas.decode(value)
    except SerdeError:
        return None


def build_dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: RawHeaders,
    topic: str,
    partition: int,
    offset: int | None,
    stage: str,
    group: str,
    error: BaseException,
    error_class: str,
    attempts: int,
    first_failure_ms: int | None,
    schemas: SchemaSet,
) -> dict[str, Any]:
    """A DeadLetter record for an event the stage gives up on.

    ``topic``/``partition``/``offset`` are where the stage consumed the event. When the
    event came from a retry tier its ``agentstream-original-*`` headers name the stage
    input instead, and those win, so replay goes back to the stage, not to the tier.
    ``first_failure_ms`` None takes the header's value, else now.
    """
    header_list = list(headers or ())
    seen = h.decode_headers(header_list)
    topic, partition, offset = _source(seen, topic, partition, offset)
    now = now_ms()
    if first_failure_ms is None:
        first_failure_ms = _int(seen.get(h.FIRST_FAILURE_MS)) or now
    task_id, session_id = _ids(key, value, schemas)
    header_bytes = sum(len(name) + len(data or b"") for name, data in header_list)
    kept_key, value_fields = _fitted(key, value, MAX_LETTER_BYTES - header_bytes)
    decider = deciding_error(error)
    return {
        "id": f"{topic}-{partition}-{offset}" if offset is not None and offset >= 0 else str(uuid.uuid4()),
        "key": kept_key,
        **value_fields,
        "headers": [{"name": name, "value": data} for name, data in header_list],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset if offset is not None else -1,
        "stage": stage,
        "consumer_group": group,
        "error_class": str(error_class),
        "error_type": h.type_name(decider),
        "error_message": h.trim_text(str(decider) or type(decider).__name__),
        "error_stack": h.trim_stack(error),
        "attempts": attempts,
        "first_failure_at": first_failure_ms,
        "dead_lettered_at": now,
        "task_id": task_id,
        "session_id": session_id,
        "replayed_from": seen.get(h.REPLAY) or None,
    }


def dead_letter_message(dead_letter: Mapping[str, Any], schemas: SchemaSet) -> tuple[bytes, bytes, h.HeaderList]:
    """Key, value and headers to produce to the DLQ topic: keyed by id (purge markers are too)."""
    headers = h.encode_headers(
        {
            h.DEAD_LETTER_ID: dead_letter["id"],
            h.STAGE: dead_letter["stage"],
            h.ERROR_CLASS: dead_letter["error_class"],
            h.ORIGINAL_TOPIC: dead_letter["source_topic"],
        }
    )
    return dead_letter["id"].encode("utf-8"), schemas.encode(DEAD_LETTER, dead_letter), headers


def failed_result(dead_letter: Mapping[str, Any], original_record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A FAILED TaskResult (code DEAD_LETTERED) when the task's ids and tenant are known, else None.

    ``original_record`` is the decoded event (``read_original``); a TaskResult needs its
    ``tenant_id``, which only the event itself carries.
    """
    ids = ("task_id", "session_id", "tenant_id")
    if not original_record or not all(isinstance(original_record.get(f), str) for f in ids):
        return None
    result = task_result(original_record, "FAILED", error=("DEAD_LETTERED", _reason(dead_letter)))
    if isinstance(original_record.get("tier"), str):
        result["tier"] = original_record["tier"]
    return result


def dead_letter_event(dead_letter: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TaskEvent (kind ERROR, state DEAD_LETTERED), when the task and session are known."""
    if not dead_letter.get("task_id") or not dead_letter.get("session_id"):
        return None
    return task_event(dead_letter, dead_letter["stage"], "ERROR", DEAD_LETTERED, _reason(dead_letter))


def _reason(dead_letter: Mapping[str, Any]) -> str:
    error_type = str(dead_letter["error_type"]).rsplit(".", 1)[-1]
    return h.trim_text(
        f"Dead-lettered at stage {dead_letter['stage']} after {dead_letter['attempts']} attempt(s), "
        f"{dead_letter['error_class']} {error_type}: {dead_letter['error_message']} "
        f"(inspect or replay: agentstream dlq show {dead_letter['id']})",
        1024,
    )


def _source(seen: Mapping[str, str], topic: str, partition: int, offset: int | None) -> tuple[str, int, int | None]:
    original = seen.get(h.ORIGINAL_TOPIC)
    if not original:
        return topic, partition, offset
    original_partition = _int(seen.get(h.ORIGINAL_PARTITION))
    if original_partition is not None:
        partition = original_partition
    return original, partition, _int(seen.get(h.ORIGINAL_OFFSET))


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _ids(key: bytes | None, value: bytes | None, schemas: SchemaSet) -> tuple[str | None, str | None]:
    """task_id and session_id from the event when it decodes; the key is the session id otherwise."""
    decoded = read_original(value, schemas)
    record = decoded[1] if decoded else {}
    task_id = record.get("task_id") if isinstance(record.get("task_id"), str) else None
    session_id = record.get("session_id") if isinstance(record.get("session_id"), str) else None
    if session_id is None and key is not None:
        try:
            session_id = key.decode("utf-8") or None
        except UnicodeDecodeError:
            session_id = None
    return (h.trim_text(task_id, MAX_ID_BYTES) if task_id else None,
            h.trim_text(session_id, MAX_ID_BYTES) if session_id else None)


def _fitted(key: bytes | None, value: bytes | None, room: int) -> tuple[bytes | None, dict[str, Any]]:
    """The key and value fields of a letter whose key and value may take ``room`` bytes."""
    room = max(0, room)
    key_cut = key is not None and len(key) > room
    kept_key = key[:room] if key is not None and key_cut else key
    if value is None:
        return kept_key, {"value": None, "value_size": 0, "value_sha256": "", "value_truncated": key_cut}
    fits = min(MAX_VALUE_BYTES, room - len(kept_key or b""))
    return kept_key, {
        "value": value[:fits] if len(value) > fits else value,
        "value_size": len(value),
        "value_sha256": hashlib.sha256(value).hexdigest(),
        "value_truncated": key_cut or len(value) > fits,
    }
