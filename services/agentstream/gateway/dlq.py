"""``GET /v1/dlq``, ``GET /v1/dlq/{id}`` and ``POST /v1/dlq/{id}/replay`` (operator): the
dead letters of the caller's tenant over HTTP. Reading, showing and replaying are
``agentstream dlq``'s own (retry/dlq_ops.py); this module only decides whose a letter is.

A dead letter carries no tenant of its own, but the event it holds does (a TaskSubmitted,
a routed task, a result all have ``tenant_id``); when that event does not decode, the
task id names the tenant through the view. A letter neither way tells is nobody's over
HTTP (a poison record, a foreign producer's bytes): `agentstream dlq`, which needs access
to the broker, is the tool for those, so no tenant ever sees another's data.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from agentstream.gateway.api_models import DeadLetterDetail, DeadLetterReplayed, DeadLetterSummary, Problem
from agentstream.gateway.auth import Operator
from agentstream.gateway.context import Gateway, gateway_of
from agentstream.gateway.problems import ApiError
from agentstream.gateway.view_rules import not_found
from agentstream.retry.dead_letter import read_original
from agentstream.retry.dlq_ops import DeadLetterQueue, DlqError, format_dead_letter
from agentstream.tenancy import ACCEPTED, DLQ_REPLAY, Principal

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 429, 503)}
LetterId = Annotated[str, Path(min_length=1, max_length=400, description="A dead letter's id (GET /v1/dlq lists them).")]
SUMMARY_FIELDS = ("id", "dead_lettered_at", "stage", "error_class", "error_type", "error_message", "attempts",
                  "task_id", "session_id", "source_topic", "source_partition", "source_offset", "value_truncated")


def tenant_of(gateway: Gateway, letter: dict[str, Any]) -> str | None:
    """The tenant whose event the letter holds, else its task's tenant in the view, else None."""
    decoded = read_original(letter["value"], gateway.config.schemas)
    if decoded is not None and isinstance(decoded[1].get("tenant_id"), str):
        return str(decoded[1]["tenant_id"])
    view = gateway.task(letter["task_id"]) if letter["task_id"] else None
    return view.get("tenant_id") if view else None


def _queue(gateway: Gateway) -> DeadLetterQueue:
    config = gateway.config
    return DeadLetterQueue(config.bootstrap, config.topology.topic("dlq"), config.schemas)


async def _tenant_letters(gateway: Gateway, principal: Principal) -> list[dict[str, Any]]:
    letters = await asyncio.to_thread(_queue(gateway).letters)
    return [letter for letter in letters if tenant_of(gateway, letter) == principal.tenant_id]


async def _owned_letter(gateway: Gateway, principal: Principal, letter_id: str) -> dict[str, Any]:
    for letter in await _tenant_letters(gateway, principal):
        if letter["id"] == letter_id:
            return letter
    raise not_found("dead letter", letter_id)


def summary(letter: dict[str, Any]) -> dict[str, Any]:
    return {name: letter[name] for name in SUMMARY_FIELDS}


@router.get("/v1/dlq", response_model=list[DeadLetterSummary], responses=_ERRORS,
            summary="Your tenant's dead letters, oldest first (operator)")
async def list_dead_letters(request: Request, principal: Operator) -> list[dict[str, Any]]:
    return [summary(letter) for letter in await _tenant_letters(gateway_of(request), principal)]


@router.get("/v1/dlq/{letter_id}", response_model=DeadLetterDetail, responses=_ERRORS,
            summary="One dead letter with its event decoded, as `agentstream dlq show` prints it (operator)")
async def show_dead_letter(letter_id: LetterId, request: Request, principal: Operator) -> dict[str, Any]:
    gateway = gateway_of(request)
    letter = await _owned_letter(gateway, principal, letter_id)
    return {**summary(letter), "text": format_dead_letter(letter, gateway.config.schemas)}


@router.post("/v1/dlq/{letter_id}/replay", response_model=DeadLetterReplayed, responses=_ERRORS,
             summary="Send a dead letter's event back to its source topic (operator)")
async def replay_dead_letter(letter_id: LetterId, request: Request, principal: Operator) -> DeadLetterReplayed:
    gateway = gateway_of(request)
    letter = await _owned_letter(gateway, principal, letter_id)
    try:
        [(_, topic, partition)] = await asyncio.to_thread(_queue(gateway).replay, [letter])
    except DlqError as exc:
        # A kept-in-part value can never be replayed (409); anything else is the broker's (503).
        status, code = (409, "not_replayable") if letter["value_truncated"] else (503, "replay_failed")
        raise ApiError(status, code, str(exc)) from None
    gateway.audit.record(principal, DLQ_REPLAY, letter_id, ACCEPTED, detail=f"{topic}[{partition}]")
    return DeadLetterReplayed(id=letter_id, topic=topic, partition=partition)
