"""A group's committed offsets, asked again while the group's coordinator moves.

Shared by the lag probes (runtime/lag.py) and by a worker taking newly assigned partitions
(runtime/fetch_start.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential
from tenacity.stop import stop_base

# The group's coordinator moved or is still loading its offsets (a broker restarted or was
# paused a moment ago), or a transaction's offsets are not settled yet: asking again
# shortly answers. librdkafka does not mark these retriable on committed(); tenacity asks
# again, as it retries model calls.
COORDINATOR_MOVING = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.UNSTABLE_OFFSET_COMMIT})
_SHORTEST_ASK_S = 0.5  # the last attempt's own timeout when the deadline is all but reached


def coordinator_moving(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    error = exc.args[0]
    return error.code() in COORDINATOR_MOVING or error.retriable()


class _StopWhen(stop_base):
    """Stop retrying once ``should_stop()`` says so (a worker shutting down)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self._should_stop = should_stop

    def __call__(self, retry_state: object) -> bool:
        return self._should_stop()


def committed_offsets(probe: Consumer, partitions: list[TopicPartition], timeout: float, *,
                      should_stop: Callable[[], bool] = lambda: False) -> list[TopicPartition]:
    """``probe.committed(partitions)``, asked again for up to ``timeout`` s in all (each try
    waits at most for the time left) while the group's coordinator is moving, for the whole
    request or for one of its partitions, and until ``should_stop()``. Any other error of the
    request, or the same one past the timeout, is raised; another partition's error is left
    on its TopicPartition."""
    deadline = time.monotonic() + timeout
    for attempt in Retrying(retry=retry_if_exception(coordinator_moving),
                            stop=stop_after_delay(timeout) | _StopWhen(should_stop),
                            wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True):
        with attempt:
            answered = list(probe.committed(partitions, timeout=max(deadline - time.monotonic(), _SHORTEST_ASK_S)))
            _raise_if_moving(answered)
            return answered
    raise AssertionError("unreachable: tenacity reraises the last error")


def _raise_if_moving(answered: list[TopicPartition]) -> None:
    for tp in answered:
        if tp.error is not None and tp.error.code() in COORDINATOR_MOVING:
            raise KafkaException(KafkaError(tp.error.code(), f"{tp.topic}[{tp.partition}]: {tp.error.str()}"))
