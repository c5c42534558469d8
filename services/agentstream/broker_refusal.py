"""A record the broker did not take, as both task transports refuse it (task_client.py):
the gateway's HTTP answer (gateway/problems.py) and the Kafka client's TaskClientError
(kafka_client.py) alike.

- 500 ``broker_refused``: the broker refused the record for good (``REFUSED_FOR_GOOD``: no
  write access to the topic, a record over its ``max.message.bytes``, an invalid record,
  a fatal producer error). A client told to retry would retry for ever; an operator must
  fix the cause the message names.
- 503 ``broker_unavailable``, retry after 5 s: anything else — not acknowledged in time (an
  outage), no leader, a topic or partition not known yet (a restart, a failover), a full
  local queue. Retrying with the same task id or Idempotency-Key cannot submit the task
  twice (a record not acknowledged in time has been given up: blocking_send.py,
  gateway/producer.py).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from agentstream.errors import SubmitError
from agentstream.retry.classify import deciding_error
from agentstream.task_client import TaskClientError

RETRY_AFTER_S = 5.0
UNAVAILABLE = "broker_unavailable"
REFUSED = "broker_refused"
# Refusals no retry passes. Narrower than what the retry chain dead-letters (every code not
# in runtime/delivery.py WORTH_WAITING): a client is told "do not retry" only when it is sure.
# A delivery report never carries the fatal flag (confluent-kafka builds it unset): _FATAL
# is the code a report and a produce() after a fatal error carry.
REFUSED_FOR_GOOD = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.POLICY_VIOLATION, KafkaError._FATAL,
})


def refused_for_good(exc: BaseException) -> bool:
    """Whether the broker's error deciding ``exc`` (its cause chain) says no retry will pass."""
    decider = deciding_error(exc)
    error = decider.args[0] if isinstance(decider, KafkaException) and decider.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() in REFUSED_FOR_GOOD)


def broker_refusal(exc: BaseException) -> TaskClientError:
    """The refusal of a request whose record the broker did not take (``exc``: a
    CheckpointError or SubmitError, with the broker's error as its cause when it named one,
    or a produce() refused at once)."""
    what = _described(exc)
    if refused_for_good(exc):
        return TaskClientError(500, REFUSED, f"The broker refused the record for good ({what}). An operator must fix "
                                             "the cause named here (e.g. write access to the topic, or the topic's "
                                             "max.message.bytes).")
    return TaskClientError(503, UNAVAILABLE, f"The broker did not take the record ({what}); retry with the same task id "
                                             "or Idempotency-Key, which cannot submit the task twice.", RETRY_AFTER_S)


def _described(exc: BaseException) -> str:
    """What failed, without a SubmitError's own advice (for the command line)."""
    if isinstance(exc, SubmitError) and exc.__cause__ is not None:
        return str(exc.__cause__)
    return str(exc) or type(exc).__name__
