"""Writes a finished run's transcript (transcripts/record.py) to the ``transcripts`` topic.

Called when the run ends, while its last step record (the answer) lands and before
anything of it is tombstoned, with the run's epochs and step records as the lifecycle
holds them (specialist/run_steps.py: what the checkpoint holds once that record has
landed, without reading it again), and acknowledged before the lifecycle goes on: a
worker killed between the two leaves the checkpoint in place, the next owner resumes the
run (replaying every step; the final model call again if the answer had not landed),
finishes it and writes the transcript again. So a finished run has at least one
transcript, sometimes two (alike unless the answer was made again): readers keep one per
``run_id``, the latest. A transcript
the producer or the broker refuses for good (over the message size, no write access) is
logged and left out; one the broker did not acknowledge in time is sent again
(specialist/run_end.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException

from agentstream.events import now_ms
from agentstream.retry.classify import ErrorClass, classify
from agentstream.runtime.errors import CheckpointError
from agentstream.service import Service
from agentstream.specialist import checkpoint as ckpt
from agentstream.transcripts.record import TRANSCRIPT, TRANSCRIPTS, ordered_steps, transcript

log = logging.getLogger(__name__)


class TranscriptWriter:
    """The transcripts of one specialist's runs."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.topic = service.topology.topic(TRANSCRIPTS)

    @classmethod
    def of(cls, service: Service) -> TranscriptWriter | None:
        """The writer, or None when the topology declares no ``transcripts`` topic."""
        if TRANSCRIPTS not in service.topology.topics:
            log.info("%s: the topology declares no %r topic; finished runs leave no transcript", service.agent, TRANSCRIPTS)
            return None
        return cls(service)

    async def write(
        self, task: Mapping[str, Any], result: Mapping[str, Any], epochs: Sequence[Sequence[int]],
        records: Sequence[Mapping[str, Any]],
    ) -> None:
        """Send the transcript of ``task``'s run (its head's ``epochs``, its step
        ``records``) and wait for the broker's acknowledgement."""
        run = ckpt.run_id(task)
        record = transcript(task, result, epochs, ordered_steps(epochs, records), now_ms())
        encoded = self.service.schemas.encode(TRANSCRIPT, record)
        try:
            await self.service.processor.send_acked(self.topic, encoded, task["session_id"], headers=self.service.headers())
        except CheckpointError as exc:
            if classify(exc) is ErrorClass.TRANSIENT:
                raise  # not acknowledged in time: the lifecycle sends it again (specialist/run_end.py)
            self._left_out(run, encoded, exc)  # refused by the broker (over the topic's size, no access)
        except KafkaException as exc:
            # Refused before sending (larger than message.max.bytes): no retry would pass,
            # and the result matters more than its record.
            self._left_out(run, encoded, exc)

    def _left_out(self, run: str, encoded: bytes, exc: Exception) -> None:
        log.error("%s: the transcript of run %s (%d bytes) was refused: %s; the run finishes without one",
                  self.topic, run, len(encoded), exc)
