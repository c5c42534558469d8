"""runtime/lag's ListOffsets: a partition without a leader yet, or in a leadership change, is
asked again; other errors are not."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.lag import _listed_offsets

PARTITIONS = [("in", 0), ("in", 1)]


class _Listed:
    """An offset's answer."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Admin:
    """Answers list_offsets() for partition 0 with the errors given, then with offset 9;
    partition 1 answers 4 at once."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.asked: list[list[int]] = []
        self.refreshed = 0
        self.timeouts: list[float] = []

    def list_topics(self, timeout: float) -> None:
        self.refreshed += 1

    def list_offsets(self, specs: dict[TopicPartition, OffsetSpec], request_timeout: float) -> dict[TopicPartition, Future[_Listed]]:
        self.asked.append(sorted(tp.partition for tp in specs))
        self.timeouts.append(request_timeout)
        return {tp: self._answer(tp.partition) for tp in specs}

    def _answer(self, partition: int) -> Future[_Listed]:
        future: Future[_Listed] = Future()
        if partition == 0 and self.errors:
            future.set_exception(KafkaException(KafkaError(self.errors.pop(0))))
        else:
            future.set_result(_Listed(9 if partition == 0 else 4))
        return future


def test_a_partition_with_no_leader_found_is_asked_again_alone_with_fresh_metadata() -> None:
    # librdkafka's "Failed to query partition leaders: No leaders found", just after a fenced
    # broker came back (a CI failure of test_unacknowledged_changelog_write_is_never_committed):
    # it answers from its metadata cache, so each round asks for the metadata again first.
    admin = _Admin(KafkaError._NOENT, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT)
    offsets = _listed_offsets(admin, PARTITIONS, OffsetSpec.latest(), timeout=10)  # type: ignore[arg-type]
    assert offsets == {("in", 0): 9, ("in", 1): 4}
    assert admin.asked == [[0, 1], [0], [0], [0], [0]] and admin.refreshed == 4


@pytest.mark.parametrize("error", [KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH,
                                   KafkaError.OFFSET_NOT_AVAILABLE])
def test_a_leadership_change_in_progress_is_asked_again(error: int) -> None:
    # UNKNOWN_LEADER_EPOCH stopped two workers restoring in CI: their broker, starved, had
    # not answered for ~30 s, and its partitions' leader epoch moved while they asked.
    admin = _Admin(error)
    offsets = _listed_offsets(admin, PARTITIONS, OffsetSpec.latest(), timeout=10)  # type: ignore[arg-type]
    assert offsets == {("in", 0): 9, ("in", 1): 4}
    assert admin.asked == [[0, 1], [0]] and admin.refreshed == 1


def test_a_round_waits_at_most_five_seconds_for_its_answer() -> None:
    # A request to a leader that was killed waits for it until its timeout: a bounded round
    # lets the next one ask whoever leads by then.
    admin = _Admin()
    _listed_offsets(admin, PARTITIONS, OffsetSpec.latest(), timeout=30)  # type: ignore[arg-type]
    assert admin.timeouts == [5.0]


def test_any_other_error_is_raised_at_once_naming_the_partition() -> None:
    admin = _Admin(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(ProcessorError, match=r"ListOffsets for in\[0\] failed"):
        _listed_offsets(admin, PARTITIONS, OffsetSpec.latest(), timeout=10)  # type: ignore[arg-type]
    assert admin.asked == [[0, 1]]


def test_a_leader_still_missing_at_the_timeout_is_raised() -> None:
    admin = _Admin(*[KafkaError._NOENT] * 1000)
    with pytest.raises(ProcessorError, match="No leaders found|Local: No such entry"):
        _listed_offsets(admin, PARTITIONS, OffsetSpec.latest(), timeout=0.3)  # type: ignore[arg-type]
    assert 1 < len(admin.asked) < 1000
