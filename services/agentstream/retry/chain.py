"""The retry topic chain of one stage: failed events hop through ``<input>.retry-N`` tiers,
each held until due, then go to the dead-letter queue; a session with an event in a
tier has its later events parked, in order, until that event completes or dies.

How a stage uses it: ``RetryChain(service, decode, handle)`` registers the stage's
handler on its input topic and on every tier (tiers with a due-time hold, see
``Processor.handler(due_header=)``). The handler raises; the chain decides:

- transient (classify.py) and tiers left → the raw event goes to the next tier with the
  failure headers (headers.py); the source offset is committed only after that record
  is acknowledged (it is an ordinary output, flushed before every commit);
- permanent, or out of tiers → a DeadLetter to the DLQ, plus a FAILED TaskResult (error
  DEAD_LETTERED) and a TaskEvent when the event names a task; no FAILED result for a
  record of another type than the stage's (WrongSchemaError), which is not its task.
Parked events and per-session retry counts live in two tables of the stage, so they
survive a kill -9 with the offsets that produced them.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentstream import metrics
from agentstream.runtime import MessageContext, Table
from agentstream.serde import WrongSchemaError
from agentstream.retry import headers as h
from agentstream.retry.classify import ErrorClass, classify
from agentstream.retry.dead_letter import (
    build_dead_letter,
    dead_letter_event,
    dead_letter_message,
    failed_result,
    read_original,
)
from agentstream.service import Service
from agentstream.telemetry import log_context
from agentstream.telemetry.handling import Handling

log = logging.getLogger(__name__)

Handle = Callable[[Any, MessageContext], Awaitable[None]]
Publish = Callable[[dict[str, Any]], None]  # takes a dead-lettered task's FAILED TaskResult

OK, RETRY, DEAD = "ok", "retry", "dead"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class RetryChain:
    def __init__(
        self, service: Service, decode: Callable[[bytes], Any], handle: Handle, *, emit_failed_results: bool = True,
        settle_on_return: bool = True, retrying: Table | None = None,
    ) -> None:
        """``settle_on_return=False``: the handler only starts the work (a specialist), so the
        stage calls :meth:`settled` itself when a retried event's work ends."""
        self.service = service
        self.decode = decode
        self.handle = handle
        self.emit_failed_results = emit_failed_results
        self.settle_on_return = settle_on_return
        topology = service.topology
        logical = topology.agent(service.agent).input
        self.input_topic = service.input_topic
        self.tiers = list(zip(topology.retry_topics(logical), topology.retry.delays_s, strict=False))
        self.max_attempts = topology.retry.max_attempts
        self.dlq_topic = topology.topic("dlq")
        # The stage may have declared it already (to use it itself).
        self.retrying = retrying or service.table("retrying")  # session -> its events waiting in a tier
        self.parked = service.table("parked")  # session -> events held behind them, in order
        app = service.processor
        app.handler(self.input_topic)(self._on_input)
        for tier_topic, _ in self.tiers:
            app.handler(tier_topic, due_header=h.DUE_MS)(self._on_retry)

    # -- handlers ------------------------------------------------------------------------
    async def _on_input(self, raw: bytes, ctx: MessageContext) -> None:
        session = ctx.key_str
        if self.retrying.get(session, 0) > 0:
            held = self.parked.get(session, [])
            held.append(self._park_record(raw, ctx))
            self.parked[session] = held
            metrics.parked().labels(self.service.agent).inc()
            log.info("%s: session %s has an event in retry; parked behind it (%d held)", ctx.where, session, len(held))
            return
        if await self.attempt(raw, ctx, 0) == RETRY:
            self.retrying[session] = self.retrying.get(session, 0) + 1

    async def _on_retry(self, raw: bytes, ctx: MessageContext) -> None:
        attempt = int(h.decode_headers(ctx.headers).get(h.ATTEMPT, "1") or 1)
        verdict = await self.attempt(raw, ctx, attempt)
        if verdict == DEAD or (verdict == OK and self.settle_on_return):
            await self.settled(ctx.key_str)

    async def attempt(self, raw: bytes, ctx: MessageContext, attempt: int) -> str:
        """Run the stage's handler once; on failure, send the event on. Returns ok/retry/dead."""
        try:
            value = self.decode(raw)
        except WrongSchemaError as exc:
            # Another stage's record (a RoutedTask on the tasks topic): the task it names is
            # not this stage's to fail, and may well get its own result. Its dead letter only.
            return self.failed(raw, ctx, exc, attempt, result=False)
        except Exception as exc:
            return self.failed(raw, ctx, exc, attempt)
        try:
            with log_context.bound(**log_context.task_fields(value)):  # the task's ids on every line
                await self.handle(value, ctx)
            return OK
        except Exception as exc:
            return self.failed(raw, ctx, exc, attempt)

    def failed(
        self, raw: bytes, ctx: MessageContext, exc: BaseException, attempt: int, *, result: bool = True,
        publish: Publish | None = None,
    ) -> str:
        """Attempt ``attempt + 1`` of the event failed with ``exc``: next tier or the DLQ
        (with a FAILED TaskResult unless ``result`` is False, see dead_letter)."""
        error_class = classify(exc)
        tries = attempt + 1
        if error_class is ErrorClass.TRANSIENT and tries < self.max_attempts and attempt < len(self.tiers):
            self._schedule(raw, ctx, exc, tries)
            return RETRY
        self.dead_letter(raw, ctx, exc, error_class, tries, result=result, publish=publish)
        return DEAD

    async def settled(self, session: str) -> None:
        """An event of ``session`` left the tiers (done or dead): release what waited behind it."""
        left = self.retrying.get(session, 1) - 1
        if left > 0:
            self.retrying[session] = left
            return
        if session in self.retrying:
            del self.retrying[session]
        held = self.parked.get(session, [])
        while held:
            record = held.pop(0)
            ctx = MessageContext(
                record["topic"], record["partition"], record["offset"], _unb64(record["key"]),
                tuple((name, _unb64(value) or b"") for name, value in record["headers"]), record["timestamp"],
            )
            with Handling(self.service.processor.name, self.service.processor.group_id, ctx, None):  # its own trace
                verdict = await self.attempt(_unb64(record["value"]) or b"", ctx, 0)
            if verdict == RETRY:
                self.retrying[session] = 1
                break
        if held:
            self.parked[session] = held
        elif session in self.parked:
            del self.parked[session]

    # -- sending on ----------------------------------------------------------------------
    def _schedule(self, raw: bytes, ctx: MessageContext, exc: BaseException, tries: int) -> None:
        seen = h.decode_headers(ctx.headers)
        tier_topic, delay_s = self.tiers[tries - 1]
        now = int(time.time() * 1000)
        # Keep the caller's headers and a replay marker; the failure context is written anew.
        original = [(name, value) for name, value in ctx.headers if name not in h.RETRY_CONTEXT or name == h.REPLAY]
        failure = h.failure_headers(
            attempt=tries,
            first_failure_ms=int(seen.get(h.FIRST_FAILURE_MS) or now),
            due_ms=now + int(delay_s * 1000),
            topic=seen.get(h.ORIGINAL_TOPIC) or ctx.topic,
            partition=int(seen.get(h.ORIGINAL_PARTITION) or ctx.partition),
            offset=int(seen.get(h.ORIGINAL_OFFSET) or ctx.offset),
            group=self.service.processor.group_id,
            stage=self.service.agent,
            error=exc,
            error_class=ErrorClass.TRANSIENT,
        )
        self.service.processor.send(tier_topic, raw, ctx.key, partition=ctx.partition, headers=[*original, *failure])
        metrics.retries().labels(self.service.agent, ErrorClass.TRANSIENT.value, str(tries)).inc()
        log.warning("%s: attempt %d failed (%s: %s); retrying from %s in %.0f s",
                    ctx.where, tries, type(exc).__name__, exc, tier_topic, delay_s)
        decoded = read_original(raw, self.service.schemas)
        if decoded is not None and "task_id" in decoded[1]:
            self.service.progress(decoded[1], "STATE", "BACKING_OFF", f"attempt {tries} failed: {type(exc).__name__}; {tier_topic}")

    def dead_letter(
        self, raw: bytes | None, ctx: MessageContext, exc: BaseException, error_class: str, tries: int, *,
        result: bool = True, publish: Publish | None = None,
    ) -> None:
        """Record the event in the DLQ (and, with ``result``, publish its FAILED TaskResult:
        a plain send, or ``publish``'s to make, for a stage that records what it decided)."""
        schemas = self.service.schemas
        letter = build_dead_letter(
            key=ctx.key, value=raw, headers=ctx.headers, topic=ctx.topic, partition=ctx.partition, offset=ctx.offset,
            stage=self.service.agent, group=self.service.processor.group_id, error=exc, error_class=error_class,
            attempts=tries, first_failure_ms=None, schemas=schemas,
        )
        key, value, headers = dead_letter_message(letter, schemas)
        self.service.processor.send(self.dlq_topic, value, key, headers=headers)
        metrics.dead_letters().labels(self.service.agent, str(error_class)).inc()
        log.error("%s: dead-lettered as %s after %d attempt(s): %s: %s", ctx.where, letter["id"], tries, type(exc).__name__, exc)
        decoded = read_original(raw, schemas)
        if result and self.emit_failed_results:
            final = failed_result(letter, decoded[1] if decoded else None)
            if final is not None:
                (publish or self.service.result)(final)
        event = dead_letter_event(letter)
        if event is not None:
            self.service.emit("task_events", "TaskEvent", event)

    @staticmethod
    def _park_record(raw: bytes, ctx: MessageContext) -> dict[str, Any]:
        return {
            "topic": ctx.topic, "partition": ctx.partition, "offset": ctx.offset, "key": _b64(ctx.key),
            "value": _b64(raw), "headers": [[name, _b64(value)] for name, value in ctx.headers], "timestamp": ctx.timestamp_ms,
        }
