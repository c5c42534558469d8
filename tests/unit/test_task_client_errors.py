"""A record the broker does not take is the same answer on both transports
(broker_refusal.py): 503 ``broker_unavailable`` to retry unless the broker refused it for
good (500 ``broker_refused``); the Kafka client raises it as a TaskClientError, the gateway
answers it (tests/unit/test_gateway_problems.py). Each blocking caller waits for its own
records' delivery reports (blocking_send.py), which a refusal alone shows."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError

from agentstream.blocking_send import Delivery, acknowledged
from agentstream.client import SubmitError, Submitter
from agentstream.kafka_client import _refused_by_broker
from agentstream.runtime.errors import CheckpointError
from agentstream.task_client import TaskClientError

TASKS = SimpleNamespace(topic=lambda: "tasks", partition=lambda: 2)


class _Producer:
    """A shared producer whose reports ``queued`` come in when any caller polls (or
    flushes): served by whichever thread asks first, as librdkafka's are."""

    def __init__(self) -> None:
        self.queued: list[tuple[Delivery, int | None]] = []
        self._lock = threading.Lock()

    def sent(self, delivery: Delivery, code: int | None) -> None:
        """A record whose report (``code``, None: landed) comes at the next poll."""
        with self._lock:
            self.queued.append((delivery, code))

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0

    def poll(self, timeout: float) -> int:
        with self._lock:
            served, self.queued = self.queued, []
        for delivery, code in served:
            delivery.report(None if code is None else KafkaError(code, "refused"), TASKS)
        return len(served)


def _submitter() -> Submitter:
    """A Submitter past its start-up (which asks the broker for the tasks topic)."""
    submitter = Submitter.__new__(Submitter)
    submitter._bootstrap, submitter._producer = "broker:9092", _Producer()
    submitter._unflushed, submitter._lock = [], threading.Lock()
    return submitter


def _queued(producer: _Producer, code: int | None) -> Delivery:
    """A record sent on ``producer`` whose report (``code``, None: landed) comes at its next poll."""
    delivery = Delivery()
    producer.sent(delivery, code)
    return delivery


def _refusal_of(error: Exception) -> TaskClientError:
    with pytest.raises(TaskClientError) as raised, _refused_by_broker():
        raise error
    return raised.value


def _submit_error(code: int) -> SubmitError:
    submitter = _submitter()
    delivery = Delivery()
    submitter._unflushed.append(delivery)
    submitter._producer.sent(delivery, code)
    with pytest.raises(SubmitError) as raised:
        submitter.flush()
    submitter.flush()  # the next flush waits only for what was sent since: nothing
    return raised.value


@pytest.mark.parametrize("error", [SubmitError("task not acknowledged"), CheckpointError("decision not acknowledged")])
def test_a_record_not_acknowledged_without_a_broker_error_is_a_503(error: Exception) -> None:
    refusal = _refusal_of(error)
    assert (refusal.status, refusal.code, refusal.retry_after) == (503, "broker_unavailable", 5.0)
    assert str(error) in refusal.message


@pytest.mark.parametrize("code", [KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.BROKER_NOT_AVAILABLE])
def test_a_submitted_task_not_taken_in_an_outage_or_a_failover_is_a_503(code: int) -> None:
    error = _submit_error(code)
    assert "tasks[2]" in str(error) and "nothing is lost by submitting again" in str(error)
    assert (_refusal_of(error).status, _refusal_of(error).code) == (503, "broker_unavailable")


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._FATAL])
def test_a_submitted_task_the_broker_refused_for_good_is_a_500_asking_no_retry(code: int) -> None:
    error = _submit_error(code)
    assert "submitting again will not help" in str(error)
    refusal = _refusal_of(error)
    assert (refusal.status, refusal.code, refusal.retry_after) == (500, "broker_refused", None)
    assert KafkaError(code).name() in refusal.message
    assert "submitting again" not in refusal.message, "the command line's advice is not the client's"


def test_a_produce_refused_at_once_is_answered_too() -> None:
    from confluent_kafka import KafkaException

    assert _refusal_of(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))).status == 500
    assert _refusal_of(BufferError("Local: Queue full")).status == 503


def test_each_caller_waits_for_its_own_task_whoever_serves_the_reports() -> None:
    """Two threads submit through one Submitter (AsyncClient) at once; whichever polls
    serves both reports: the other's refusal is not this caller's error, and its own
    refusal is not lost to the other's poll."""
    submitter = _submitter()
    landed, refused = Delivery(), Delivery()
    submitter._unflushed += [landed, refused]
    outcomes: dict[str, BaseException | None] = {}
    start = threading.Barrier(2)

    def caller(name: str, delivery: Delivery) -> None:
        start.wait(5)
        try:
            submitter.flush(timeout=5, deliveries=[delivery])
            outcomes[name] = None
        except SubmitError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=caller, args=args) for args in (("landed", landed), ("refused", refused))]
    for thread in threads:
        thread.start()
    submitter._producer.sent(refused, KafkaError._MSG_TIMED_OUT)  # in flight while both wait, then reported
    submitter._producer.sent(landed, None)
    for thread in threads:
        thread.join(10)
    assert outcomes["landed"] is None
    assert isinstance(outcomes["refused"], SubmitError) and "tasks[2]" in str(outcomes["refused"])
    assert submitter._unflushed == []


def test_a_record_refused_after_its_flush_is_an_error_not_a_success() -> None:
    """flush() returns 0 for a refused record too (it left the queue): only its report says so."""
    producer = _Producer()
    with pytest.raises(CheckpointError) as raised:
        acknowledged(producer, [_queued(producer, KafkaError.TOPIC_AUTHORIZATION_FAILED)], 1, "The decision on 'a-1'")
    assert str(raised.value).startswith("The decision on 'a-1': write to tasks[2]")
    assert _refusal_of(raised.value).status == 500


def test_a_record_never_reported_is_not_acknowledged_in_time() -> None:
    producer = _Producer()
    with pytest.raises(CheckpointError, match=r"1 of 2 not acknowledged within 0 s"):
        acknowledged(producer, [_queued(producer, None), Delivery()], 0.01, "The cancel of task 't'")
    acknowledged(producer, [_queued(producer, None)], 0.01, "a landed record")  # no error
