"""The gateway's answer to a record the broker did not take: 503 with Retry-After when
waiting may help (an outage: the write timed out, no leader, a topic not known yet), 500
when the broker refused it for good, which a client told to retry would retry for ever
(gateway/problems.py, broker_refusal.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from confluent_kafka import KafkaError
from fastapi import FastAPI

from agentstream.gateway import problems
from agentstream.runtime.delivery import not_acknowledged
from agentstream.runtime.errors import CheckpointError


def _answer(code: int | None) -> httpx.Response:
    """What a request answers whose record was refused with the delivery report ``code``
    (None: a flush that timed out, which names no broker error)."""
    app = FastAPI()
    problems.install(app)

    @app.post("/tasks")
    async def submit() -> None:
        if code is None:
            raise CheckpointError("the approval decision was not acknowledged within 30 s")
        raise not_acknowledged(KafkaError(code, "refused"), SimpleNamespace(topic=lambda: "tasks", partition=lambda: 0))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return await client.post("/tasks")

    return asyncio.run(call())


@pytest.mark.parametrize("code", [KafkaError._MSG_TIMED_OUT, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                  None])
def test_a_record_not_acknowledged_in_an_outage_is_a_503_to_retry(code: int | None) -> None:
    answer = _answer(code)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json()["code"] == "broker_unavailable"


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED])
def test_a_record_refused_for_good_is_a_500_that_names_the_cause_and_asks_no_retry(code: int) -> None:
    answer = _answer(code)
    assert answer.status_code == 500 and "Retry-After" not in answer.headers
    body = answer.json()
    assert body["code"] == "broker_refused" and KafkaError(code).name() in body["message"]
    assert "refused the record for good" in body["message"]
