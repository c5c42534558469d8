"""``/healthz`` (the process works: its view reader runs), ``/readyz`` (the view has caught
up with the topics, so answers are current) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from agentstream.gateway import metrics
from agentstream.gateway.context import gateway_of
from agentstream.settings import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH

router = APIRouter(include_in_schema=False)  # for kubelets and Prometheus, not API clients


def _answer(ok: bool, reason: str) -> PlainTextResponse:
    return PlainTextResponse(f"{'ok' if ok else 'failing'}: {reason}\n", status_code=200 if ok else 503)


@router.get(HEALTHZ_PATH)
async def healthz(request: Request) -> PlainTextResponse:
    reader = gateway_of(request).reader
    if reader.failure is not None or not reader.alive:
        return _answer(False, f"the view reader stopped ({reader.failure or 'no reason recorded'})")
    return _answer(True, "the view reader runs")


@router.get(READYZ_PATH)
async def readyz(request: Request) -> PlainTextResponse:
    gateway = gateway_of(request)
    records = gateway.reader.records
    if not gateway.ready:
        return _answer(False, f"the view and the tenant ledger are catching up with the topics ({records} records read)")
    return _answer(True, f"the view and the tenant ledger are current ({records} records read)")


@router.get(METRICS_PATH)
async def prometheus(request: Request) -> Response:
    metrics.view_records().set(gateway_of(request).reader.records)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
