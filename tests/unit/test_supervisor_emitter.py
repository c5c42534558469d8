"""Settling "emitting" markers (supervisor/emitter.py) without Kafka: a task whose result
the results topic has gets its STATE event again (a crash may have come before it left)
and its "sent" marker, no second result; one whose result is missing gets it sent, then
its STATE event, then its "sent" marker with the result's offset; the markers of the
tasks found published are written in one round trip. A result is found published by its
task id and ``completed_at``: a replayed task's earlier FAILED result does not count."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from agentstream.events import TASK_RESULT
from agentstream.serde import SchemaSet
from agentstream.supervisor.app import final_result
from agentstream.supervisor.emitter import EMITTING, SENT, ResultEmitter
from tests.unit.test_supervisor_review import _result

SCHEMAS = SchemaSet.load()
RESULTS_OFFSET = 41  # where the fake results topic puts a result sent to it


class _App:
    """The processor: the results topic holds ``published``; every write and send is logged in order."""

    def __init__(self, published: list[dict[str, Any]]) -> None:
        self.published = [SCHEMAS.encode(TASK_RESULT, r) for r in published]
        self.log: list[tuple[str, Any]] = []

    async def read_to_end(self, topic: str, partition: int, from_offset: int) -> list[tuple[None, bytes, int]]:
        return [(None, value, offset) for offset, value in enumerate(self.published) if offset >= from_offset]

    async def persist_all(self, table: Any, items: list[tuple[str, Any]], *, partition: int) -> None:
        self.log.append(("markers", [(key, value["state"], value.get("offset")) for key, value in items]))

    async def persist(self, table: Any, key: str, value: Any, *, partition: int) -> None:
        await self.persist_all(table, [(key, value)], partition=partition)

    async def send_acked(self, topic: str, value: bytes, key: str, *, partition: int) -> int:
        self.log.append(("result", SCHEMAS.decode_as(TASK_RESULT, value)["task_id"]))
        return RESULTS_OFFSET


def _emitter(app: _App) -> ResultEmitter:
    service = SimpleNamespace(
        processor=app, agent="supervisor", input_topic="supervisor", schemas=SCHEMAS,
        topology=SimpleNamespace(topic=lambda name: name), result=lambda final: app.log.append(("plain result", final["task_id"])),
        progress=lambda task, kind, state, detail="": app.log.append(("event", (task["task_id"], kind, state))))
    markers = SimpleNamespace(name="dedupe", stores={0: object()}, partition=lambda p: markers.stores[p])
    return ResultEmitter(service, markers, {})  # type: ignore[arg-type]


def _final(task_id: str) -> dict[str, Any]:
    results = [{**_result("billing", "Refunded."), "task_id": task_id, "route": ["billing"]}]
    return final_result(results, results)


def _marker(final: dict[str, Any]) -> dict[str, Any]:
    return {"state": EMITTING, "result": final, "results_from": 0, "replay": None}


def test_settling_sends_only_the_missing_results_and_marks_the_published_ones_in_one_write() -> None:
    out, missing, also_out = _final("t-out"), _final("t-missing"), _final("t-also-out")
    app = _App(published=[out, also_out])
    unsure = [_marker(out), _marker(missing), _marker(also_out)]
    asyncio.run(_emitter(app)._settle(unsure, 0))
    assert app.log == [
        # The published ones' terminal events, which a crash after the result's ack may have lost.
        ("event", ("t-out", "STATE", "COMPLETED")),
        ("event", ("t-also-out", "STATE", "COMPLETED")),
        ("markers", [("t-out", SENT, -1), ("t-also-out", SENT, -1)]),  # one round trip for both
        ("result", "t-missing"),  # the one result not on the topic, sent once
        ("event", ("t-missing", "STATE", "COMPLETED")),  # at once: streams wait for it only a grace period
        ("markers", [("t-missing", SENT, RESULTS_OFFSET)]),  # after its result is acknowledged
    ]


def test_a_marker_whose_result_is_on_the_topic_is_settled_without_sending_the_result_again() -> None:
    out = _final("t-out")
    app = _App(published=[out])
    asyncio.run(_emitter(app).settle(_marker(out), 0))
    assert app.log == [("event", ("t-out", "STATE", "COMPLETED")), ("markers", [("t-out", SENT, -1)])]


def test_a_replayed_task_whose_earlier_failed_result_is_on_the_topic_gets_its_own_result_sent() -> None:
    # The dead-lettering's FAILED result of the task, then the replay's marker (noting an
    # offset before it): that result is another one, so the replay's is sent, not skipped,
    # and no event claims the replay's COMPLETED before it is out.
    replayed = _final("t-replayed")
    dead_lettered = {**replayed, "status": "FAILED", "completed_at": replayed["completed_at"] - 60_000}
    app = _App(published=[dead_lettered])
    asyncio.run(_emitter(app).settle({**_marker(replayed), "replay": "r-1"}, 0))
    assert app.log == [
        ("result", "t-replayed"),
        ("event", ("t-replayed", "STATE", "COMPLETED")),
        ("markers", [("t-replayed", SENT, RESULTS_OFFSET)]),
    ]


class _EmittingApp(_App):
    def release(self) -> None:
        self.log.append(("released", None))


def _emitted_line(final: dict[str, Any], replay: str | None, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    app = _EmittingApp(published=[])
    ctx = SimpleNamespace(partition=0, where="supervisor.v1[0]@7")
    with caplog.at_level(logging.DEBUG, logger="agentstream.supervisor.emitter"):
        asyncio.run(_emitter(app)._emit(final["task_id"], final, ctx, replay, ready_at=0))  # type: ignore[arg-type]
    assert ("result", final["task_id"]) in app.log
    lines = [r for r in caplog.records if f"task {final['task_id']} " in r.getMessage() and " via " in r.getMessage()]
    assert len(lines) == 1, caplog.text
    return lines[0]


def test_a_routine_result_is_logged_at_debug_and_the_rest_at_info(caplog: pytest.LogCaptureFixture) -> None:
    routine = _final("t-routine")
    partial = {**_final("t-partial"), "error": {"code": "PARTIAL_FAILURE", "message": "account failed"}}
    failed = {**_final("t-failed"), "status": "FAILED"}
    assert _emitted_line(routine, None, caplog).levelno == logging.DEBUG
    assert _emitted_line(partial, None, caplog).levelno == logging.INFO  # COMPLETED in part: worth a line
    assert _emitted_line(failed, None, caplog).levelno == logging.INFO
    assert _emitted_line(_final("t-replayed"), "r-1", caplog).levelno == logging.INFO  # a dead letter replayed


# -- a dead-lettered task's FAILED result ---------------------------------------------------
class _Chain:
    """The retry chain's verdict: dead, with the FAILED result handed to ``publish`` when due."""

    def __init__(self) -> None:
        self.results: list[bool] = []

    def failed(self, raw: bytes, ctx: Any, exc: BaseException, attempt: int, *, result: bool, publish: Any) -> str:
        self.results.append(result)
        if result:
            publish({**_final(FAILED_TASK), "status": "FAILED", "error": {"code": "DEAD_LETTERED", "message": str(exc)}})
        return "dead"


class _Later:
    def __init__(self) -> None:
        self.works: list[Any] = []

    def later(self, work: Any, what: str, partition: int) -> None:
        self.works.append(work)


class _Markers(dict[str, Any]):
    """The markers table as the emitter reads it (writes go through the app: _App.persist_all)."""

    name = "dedupe"
    stores: ClassVar[dict[int, object]] = {0: object()}

    def partition(self, partition: int) -> object:
        return self.stores[partition]


FAILED_TASK = "t-1"  # the id test_supervisor_review's results carry
CTX = SimpleNamespace(partition=0, where="supervisor.v1[0]@7", headers=(), header=lambda name: None)


class _RefusingApp(_App):
    """Stores the markers it writes in ``stored``; refuses its first write of ``refuse``
    ("marker" or "result")."""

    def __init__(self, refuse: str = "") -> None:
        super().__init__(published=[])
        self.refuse = refuse
        self.stored: dict[str, Any] = {}

    async def persist_all(self, table: Any, items: list[tuple[str, Any]], *, partition: int) -> None:
        if self.refuse == "marker":
            self.refuse = ""
            raise RuntimeError("refused")
        await super().persist_all(table, items, partition=partition)
        self.stored.update(items)

    async def send_acked(self, topic: str, value: bytes, key: str, *, partition: int) -> int:
        if self.refuse == "result":
            self.refuse = ""
            raise RuntimeError("refused")
        return await super().send_acked(topic, value, key, partition=partition)


def _failing(app: _RefusingApp, marker: dict[str, Any] | None = None) -> tuple[ResultEmitter, _Chain, _Later]:
    """An emitter whose emission of the task of ``_result`` fails, with ``marker`` stored."""
    emitter = _emitter(app)
    app.stored = emitter.markers = _Markers({FAILED_TASK: marker} if marker else {})  # type: ignore[assignment]
    emitter.retries, emitter.retried = _Chain(), _Later()  # type: ignore[assignment]
    return emitter, emitter.retries, emitter.retried  # type: ignore[return-value]


def _fail(emitter: ResultEmitter, result: dict[str, Any], error: str) -> None:
    asyncio.run(emitter._fail(FAILED_TASK, [result], CTX, RuntimeError(error)))  # type: ignore[arg-type]


def test_a_dead_lettered_tasks_failed_result_goes_out_behind_its_marker() -> None:
    app = _RefusingApp()
    emitter, chain, _ = _failing(app)
    _fail(emitter, _result("billing"), "marker too big")
    assert chain.results == [True]
    assert app.log == [("markers", [(FAILED_TASK, EMITTING, None)]), ("result", FAILED_TASK),
                       ("event", (FAILED_TASK, "STATE", "FAILED")), ("markers", [(FAILED_TASK, SENT, RESULTS_OFFSET)])]
    assert not emitter.emitting and not emitter._in_flight


def test_a_failed_result_whose_marker_is_refused_is_sent_without_one() -> None:
    app = _RefusingApp(refuse="marker")
    emitter, _, _ = _failing(app)
    _fail(emitter, _result("billing"), "marker too big")
    assert app.log == [("plain result", FAILED_TASK)]
    assert not emitter.emitting and not emitter._in_flight


def test_a_failed_result_refused_after_its_marker_is_sent_again_in_the_background() -> None:
    async def scenario() -> _RefusingApp:
        app = _RefusingApp(refuse="result")
        emitter, _, later = _failing(app)
        await emitter._fail(FAILED_TASK, [_result("billing")], CTX, RuntimeError("marker too big"))  # type: ignore[arg-type]
        assert app.log == [("markers", [(FAILED_TASK, EMITTING, None)])] and len(later.works) == 1
        await later.works[0]()  # the background's try: the marker is still "emitting", the result not on the topic
        return app

    assert asyncio.run(scenario()).log[1:] == [
        ("result", FAILED_TASK), ("event", (FAILED_TASK, "STATE", "FAILED")), ("markers", [(FAILED_TASK, SENT, RESULTS_OFFSET)])]


def test_a_revising_task_dead_lettered_here_gets_its_failed_result_and_an_escalated_one_waits_for_its_human() -> None:
    revising = {"state": "revising", "request": {"agent_type": "billing", "revision": 1}, "results": [_result("billing")]}
    app = _RefusingApp()
    emitter, chain, _ = _failing(app, revising)
    _fail(emitter, {**_result("billing"), "revision": 1}, "review crashed")
    assert chain.results == [True] and ("result", FAILED_TASK) in app.log, "nothing else would ever decide the task"
    app = _RefusingApp()
    emitter, chain, _ = _failing(app, revising)
    _fail(emitter, _result("billing"), "revision request refused")  # its request never went out: no revision comes
    assert chain.results == [True] and ("result", FAILED_TASK) in app.log
    app = _RefusingApp()
    emitter, chain, _ = _failing(app, {**revising, "state": "escalated"})
    _fail(emitter, _result("billing"), "approval request refused")  # the human's decision (or its deadline) answers it
    assert chain.results == [False] and app.log == []
