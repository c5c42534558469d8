"""A model reply whose every tool call reads only runs its tools while its record lands; a
reply with a call that may act lands first. And what a kill -9 before such a reply
landed repeats: the reply (the call in flight, as the checkpoint sees it) and its
read-only calls, nothing that acts."""

from __future__ import annotations

import asyncio
from typing import Any

from agentstream.models.base import Message, ModelResponse
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.app import build_agent
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools, landed_at_exit
from agentstream.specialist.loop import run_agent
from tests import support_desk
from tests.unit.test_turn_record import TASK, Calls, _Log, _Tools, _Turn


class _InOrder(_Log):
    """One partition's records, landing in the order they were produced (an idempotent
    producer): the first reply's record lands only once ``open`` is set (the broker's
    acknowledgement still on its way), every record after it behind it.
    ``tool_calls_when_reply_landed``: (lookups, refunds) made by then."""

    def __init__(self, tools: _Tools) -> None:
        super().__init__()
        self.tools = tools
        self.open = asyncio.Event()
        self.tool_calls_when_reply_landed: tuple[int, int] | None = None
        self._last: asyncio.Future[None] | None = None

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        before, self._last = self._last, asyncio.get_running_loop().create_future()
        mine = self._last
        try:
            if value["kind"] == "model" and value["step"] == 0:
                await self.open.wait()
                self.tool_calls_when_reply_landed = (self.tools.lookups, self.tools.refunds)
            if before is not None:
                await before
            await super().persist(key, value)
        finally:
            mine.set_result(None)


class _Opening(_Turn):
    """A _Turn that opens the log on its second call (the broker's acknowledgement of the
    first reply arriving meanwhile): a loop that waited for that reply's record before its
    tools would never make the second call."""

    def __init__(self, calls: Calls, log: _InOrder) -> None:
        super().__init__(calls)
        self.log = log

    async def complete(self, messages: list[Message], tools: Any) -> ModelResponse:
        if self.made == 1:
            self.log.open.set()
        return await super().complete(messages, tools)


async def _run(model: _Turn, log: _InOrder, tools: _Tools) -> str | None:
    run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), log.persist)
    durable_tools = DurableTools(tools.registry, run)
    loop = run_agent(TASK, "billing", DurableModel(model, run, reads_only=durable_tools.reads_only), durable_tools,
                     ["refund", "lookup"])
    outcome = await asyncio.wait_for(landed_at_exit(run, loop), 10)  # bounded: a run waiting for ever fails here
    return outcome.output


def test_the_tools_of_a_reply_of_read_only_calls_run_while_its_record_lands() -> None:
    calls: Calls = [("lookup", {"invoice_id": "INV-1"}), ("lookup", {"invoice_id": "INV-2"})]

    async def scenario() -> tuple[_InOrder, str | None]:
        tools = _Tools()
        log = _InOrder(tools)
        return log, await _run(_Opening(calls, log), log, tools)

    log, output = asyncio.run(scenario())
    assert log.tool_calls_when_reply_landed == (2, 0), "both lookups ran before the reply's record landed"
    assert [(v["kind"], v["seq"]) for v in log.records.values()] == [("model", 0), ("tool", 1), ("model", 2)]
    assert output == "done: INV-1 is paid, INV-2 is paid"


def test_a_reply_with_a_call_that_may_act_lands_before_any_of_its_tools_run() -> None:
    calls: Calls = [("lookup", {"invoice_id": "INV-1"}), ("refund", {"invoice_id": "INV-1"})]

    async def scenario() -> tuple[_InOrder, _Tools, str | None]:
        tools = _Tools()
        log = _InOrder(tools)
        log.open.set()
        return log, tools, await _run(_Turn(calls), log, tools)

    log, tools, output = asyncio.run(scenario())
    assert log.tool_calls_when_reply_landed == (0, 0), "no call ran before the reply with a refund landed"
    assert (tools.lookups, tools.refunds) == (1, 1)
    assert output == "done: INV-1 is paid, refunded INV-1"


def test_a_kill_before_a_read_only_reply_landed_repeats_the_reply_and_its_lookups_only() -> None:
    calls: Calls = [("lookup", {"invoice_id": "INV-1"})]

    async def scenario() -> tuple[_Tools, int, list[str], str | None]:
        tools = _Tools()
        log = _InOrder(tools)  # never opened: the reply's record is still on its way at the kill
        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), log.persist)
        durable_tools = DurableTools(tools.registry, run)
        first = _Turn(calls)
        model = DurableModel(first, run, reads_only=durable_tools.reads_only)
        loop = asyncio.create_task(run_agent(TASK, "billing", model, durable_tools, ["refund", "lookup"]))
        while first.made < 2 and not loop.done():  # until the second model call: the lookup has run
            await asyncio.sleep(0)
        loop.cancel()  # kill -9
        await asyncio.gather(loop, return_exceptions=True)
        landed = list(log.records)
        resumed = _Log()
        again = _Turn(calls)
        run = DurableRun(TASK["task_id"], 1, ckpt.rebuild([[0, 0], [1, 0]], []), resumed.persist)
        outcome = await run_agent(TASK, "billing", DurableModel(again, run), DurableTools(tools.registry, run),
                                  ["refund", "lookup"])
        return tools, again.made, landed, outcome.output

    tools, made, landed, output = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert landed == [], "nothing of the run had landed at the kill"
    assert made == 2, "the reply that had not landed was asked again, with the answer after it"
    assert (tools.lookups, tools.refunds) == (2, 0), "only the read-only lookup ran again"
    assert output == "done: INV-1 is paid"


def test_the_specialist_agent_runs_a_read_only_turn_while_its_reply_lands() -> None:
    """The worker's agent (build_agent) gives its DurableModel the tools' reads_only: the
    support desk's billing turn (lookup_invoice, search_kb) is recorded before its reply lands."""
    agent = build_agent("billing", support_desk.topology(), model=support_desk.scripted_model("billing"))
    task = {**TASK, "input": "I was charged twice for invoice INV-1002 on order 5002.", "tier": None}
    log = _InOrder(_Tools())
    produced: list[tuple[str, list[str]]] = []  # each record's kind, and the kinds landed when it was produced

    async def persist(key: str, value: dict[str, Any]) -> None:
        produced.append((value["kind"], [v["kind"] for v in log.records.values()]))
        if value["kind"] == "tool":
            log.open.set()  # the broker acknowledges the reply once the turn's record is on its way
        await log.persist(key, value)

    async def scenario() -> str:
        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), persist)
        outcome = await asyncio.wait_for(landed_at_exit(run, agent.run(task, run)), 10)  # bounded, as above
        return outcome.status

    assert asyncio.run(scenario()) == "COMPLETED"
    assert produced[:2] == [("model", []), ("tool", [])], "the turn's record was produced before its reply landed"
    assert [v["kind"] for v in log.records.values()] == ["model", "tool", "model"]
