"""Holding a partition at a record until the time its header names (a retry tier's delay).

The partition is paused and rewound to the record, so nothing behind it is handled
early and no other partition waits; a timer resumes it when the record is due. The
consumer calls go through the processor's ConsumerCalls (made by the poll thread).
"""

from __future__ import annotations

import asyncio
import logging
import time

from confluent_kafka import Consumer, TopicPartition

from agentstream.runtime.consumer_calls import ConsumerCalls
from agentstream.runtime.context import MessageContext

log = logging.getLogger(__name__)

_TP = tuple[str, int]


class DueHolds:
    def __init__(self, calls: ConsumerCalls) -> None:
        self._held: dict[_TP, int] = {}  # partition -> offset it is held at
        self._calls = calls

    def is_held(self, tp: _TP) -> bool:
        return tp in self._held

    def hold_if_not_due(self, header: str, ctx: MessageContext, loop: asyncio.AbstractEventLoop) -> bool:
        """Hold ``ctx``'s partition if its ``header`` time is still ahead; True if held."""
        raw = ctx.header(header)
        try:
            due_ms = int(raw) if raw is not None else None
        except ValueError:
            due_ms = None
        wait_s = due_ms / 1000 - time.time() if due_ms is not None else 0.0
        if wait_s <= 0:
            return False
        tp = (ctx.topic, ctx.partition)
        self._held[tp] = ctx.offset
        partition = TopicPartition(ctx.topic, ctx.partition, ctx.offset)

        def pause_and_rewind(consumer: Consumer) -> None:
            consumer.pause([partition])
            consumer.seek(partition)

        self._calls.queue(pause_and_rewind)
        loop.call_later(wait_s, self._release, tp, ctx.offset)
        # A line per hold of a second or more; shorter ones come in bursts (a tier's backlog
        # falling due record by record), one per record.
        log.log(logging.INFO if wait_s >= 1 else logging.DEBUG,
                "holding %s[%d] at offset %d: due in %.1f s", ctx.topic, ctx.partition, ctx.offset, wait_s)
        return True

    def _release(self, tp: _TP, offset: int) -> None:
        if self._held.get(tp) != offset:
            return  # revoked meanwhile

        # Held until the poll thread has rewound and resumed it: records of the partition
        # fetched before the rewind may still be in the batch being handled (a batch lasts
        # as long as its waits for a slot), and one handled now would be seen past the held
        # record, which the rewind then fetches again as already seen: never handled.
        def resume(consumer: Consumer) -> None:
            consumer.resume([TopicPartition(tp[0], tp[1])])
            if self._held.get(tp) == offset:
                self._held.pop(tp, None)

        self._calls.queue(resume)

    def forget(self, tp: _TP) -> None:
        """The partition was revoked: its new owner starts from the committed offset."""
        self._held.pop(tp, None)

    def resume_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """On the poll thread, in the assignment callback: fetch what this member is given.

        librdkafka keeps an application pause across a revoke and a later assignment of the
        same partition to the same member (seen on Kafka 4.1 with both group protocols), so a
        partition revoked while held here (``forget`` drops the hold, not the pause) would
        come back paused and never be fetched again by this worker."""
        if partitions:  # each was forgotten by its revoke (both protocols revoke before they give back)
            consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in partitions])
