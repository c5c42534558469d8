"""A record the broker did not take, as both task transports refuse it (task_client.py):
the gateway's HTTP answer (gateway/problems.py) and the Kafka client's TaskClientError
(kafka_client.py) alike.

- 503 ``broker_unavailable``, retry after 5 s: the broker did not acknowledge in time (an
  outage, a partition without a leader, a flush that timed out). Retrying with the same
  task id or Idempotency-Key cannot submit the task twice.
- 500 ``broker_refused``: the broker refused the record for good (no write access to the
  topic, a record over its ``max.message.bytes``, a fatal producer error). A client told to
  retry would retry for ever; an operator must fix the cause the message names.
"""

from __future__ import annotations

from confluent_kafka import KafkaException

from agentstream.retry.classify import ErrorClass, classify, deciding_error
from agentstream.task_client import TaskClientError

RETRY_AFTER_S = 5.0
UNAVAILABLE = "broker_unavailable"
REFUSED = "broker_refused"


def broker_refusal(exc: BaseException) -> TaskClientError:
    """The refusal of a request whose record the broker did not take (``exc``: a
    CheckpointError or SubmitError, with the broker's error as its cause when it named one)."""
    if isinstance(deciding_error(exc), KafkaException) and classify(exc) is ErrorClass.PERMANENT:
        return TaskClientError(500, REFUSED, f"The broker refused the record ({exc}); retrying will not help. An "
                                             "operator must fix the cause named here (e.g. write access to the topic, "
                                             "or the topic's max.message.bytes).")
    return TaskClientError(503, UNAVAILABLE, f"The broker did not take the record ({exc}); retry with the same task id "
                                             "or Idempotency-Key, which cannot submit the task twice.", RETRY_AFTER_S)
