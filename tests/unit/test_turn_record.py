"""A model turn's tool results in checkpoint records: read-only results share one record,
a side-effecting result is durable the moment its call returns, and records written
before results were merged (one per call) still resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.models.base import Message, ModelResponse, ToolCall, Usage
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.app import build_agent
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools, landed_at_exit
from agentstream.specialist.loop import StepNotRecorded, run_agent
from agentstream.tools.registry import ToolRegistry, ToolResult, tool
from tests import support_desk

TASK = {"task_id": "task-t", "session_id": "s", "input": "refund INV-1 and look it up"}


def test_a_tool_record_with_more_holds_one_result_per_call_and_its_first_reads_as_before() -> None:
    timing = ckpt.Timing(1_000, 5)
    more = [ckpt.Finished(0, ToolResult("lookup", True, "a"), timing),
            ckpt.Finished(2, ToolResult("kb", False, "Error: x"))]
    record = ckpt.tool_step(3, 1, ToolResult("refund", True, "done"), 0, 7, timing=timing, more=more)
    single = ckpt.tool_step(3, 1, ToolResult("refund", True, "done"), 0, 7, timing=timing)
    assert ckpt.MORE not in single, "a result alone is written as before merging existed"
    first, *others = ckpt.step_entries(record)
    assert first == single, "the first result is where code without `more` reads it"
    assert others == [
        {"epoch": 0, "seq": 7, "kind": "tool", "step": 3, "index": 0, "name": "lookup", "ok": True, "content": "a",
         "at": 1_000, "latency_ms": 5},
        {"epoch": 0, "seq": 7, "kind": "tool", "step": 3, "index": 2, "name": "kb", "ok": False, "content": "Error: x"},
    ]


def test_rebuild_indexes_every_result_of_a_merged_record_by_step_and_call() -> None:
    more = [ckpt.Finished(0, ToolResult("lookup", True, "a"))]
    records = [
        ckpt.model_step(0, ModelResponse(None, (), Usage(1, 1), "m"), 0, 0),
        ckpt.tool_step(0, 1, ToolResult("refund", True, "done"), 0, 1, more=more),
    ]
    chain = ckpt.rebuild([[0, 0]], records)
    assert chain.length == 2, "one record, one sequence number"
    assert {key: ckpt.tool_result_of(entry) for key, entry in chain.tools.items()} == {
        (0, 1): ToolResult("refund", True, "done"), (0, 0): ToolResult("lookup", True, "a"),
    }


class _Turn:
    """Asks for ``calls`` (name, arguments) in its first turn, then answers."""

    model_id = "fake:turn"

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls
        self.made = 0

    async def complete(self, messages: list[Message], tools: Any) -> ModelResponse:
        self.made += 1
        if messages[-1].role == "tool":
            return ModelResponse("done: " + ", ".join(m.content or "" for m in messages if m.role == "tool"), (),
                                 Usage(1, 1), self.model_id)
        return ModelResponse(None, tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(self.calls)), Usage(1, 1),
                             self.model_id)


class _Log:
    """The checkpoint records a run wrote; ``landed`` is set whenever one lands."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.landed = asyncio.Event()

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value
        self.landed.set()

    def tool_names(self) -> list[list[str]]:
        """The results' tool names, per tool record in write order."""
        return [[e["name"] for e in ckpt.step_entries(v)] for v in self.records.values() if v["kind"] == "tool"]


class _Tools:
    """A refund (side effects) and a lookup (none) that count their calls; the lookup
    waits for ``release`` while it is set."""

    def __init__(self) -> None:
        self.refunds = 0
        self.lookups = 0
        self.release: asyncio.Event | None = None

        @tool(side_effects=True)
        async def refund(invoice_id: str) -> str:
            """Refund an invoice."""
            self.refunds += 1
            return f"refunded {invoice_id}"

        @tool
        async def lookup(invoice_id: str) -> str:
            """Look an invoice up."""
            self.lookups += 1
            if self.release is not None:
                await self.release.wait()
            return f"{invoice_id} is paid"

        self.registry = ToolRegistry([refund, lookup])


Calls = list[tuple[str, dict[str, Any]]]


async def _run(tools: _Tools, log: _Log, epoch: int, chain: ckpt.Chain, calls: Calls) -> str | None:
    run = DurableRun(TASK["task_id"], epoch, chain, log.persist)
    outcome = await run_agent(TASK, "billing", DurableModel(_Turn(calls), run), DurableTools(tools.registry, run),
                              ["refund", "lookup"])
    return outcome.output


def _resumed_chain(log: _Log) -> ckpt.Chain:
    return ckpt.rebuild([[0, 0], [1, len(log.records)]], list(log.records.values()))


def test_read_only_results_of_a_turn_share_one_record_and_a_side_effecting_one_takes_them_along() -> None:
    both_lookups = [("lookup", {"invoice_id": "INV-1"}), ("lookup", {"invoice_id": "INV-2"})]
    lookup_then_refund = [("lookup", {"invoice_id": "INV-1"}), ("refund", {"invoice_id": "INV-1"})]

    async def scenario() -> tuple[list[list[str]], list[list[str]]]:
        first, second = _Log(), _Log()
        await _run(_Tools(), first, 0, ckpt.Chain(), both_lookups)
        await _run(_Tools(), second, 0, ckpt.Chain(), lookup_then_refund)
        return first.tool_names(), second.tool_names()

    read_only, mixed = asyncio.run(scenario())
    assert read_only == [["lookup", "lookup"]]
    # The lookup returns first (no await inside before the refund's): it rides with the refund.
    assert mixed == [["refund", "lookup"]]


def test_a_kill_after_a_side_effecting_call_returned_never_runs_it_again() -> None:
    """The refund returns while the turn's lookup still runs: its record must be durable
    then, so a worker killed at that moment leaves a resumable run that does not refund twice."""
    calls = [("refund", {"invoice_id": "INV-1"}), ("lookup", {"invoice_id": "INV-1"})]

    async def scenario() -> tuple[_Tools, _Log, str | None]:
        tools, log = _Tools(), _Log()
        tools.release = asyncio.Event()  # the lookup hangs until the "kill"
        loop = asyncio.create_task(_run(tools, log, 0, ckpt.Chain(), calls))
        while not log.tool_names():  # the model's record lands first, the refund's after it
            log.landed.clear()
            await log.landed.wait()
        loop.cancel()  # kill -9: the worker writes nothing more
        await asyncio.gather(loop, return_exceptions=True)
        assert tools.lookups == 1 and tools.refunds == 1, "killed while the lookup was in flight"
        tools.release = None
        output = await _run(tools, log, 1, _resumed_chain(log), calls)
        return tools, log, output

    tools, log, output = asyncio.run(scenario())
    assert tools.refunds == 1, "the refund that returned before the kill was not run again"
    assert tools.lookups == 2, "the lookup in flight ran again"
    assert output == "done: refunded INV-1, INV-1 is paid"


def test_a_checkpoint_written_one_record_per_tool_result_still_resumes_without_calling_a_tool() -> None:
    """Records as the code before merged turns wrote them (a worker upgraded mid-task)."""
    tool_calls = [{"id": "c0", "name": "refund", "arguments": {"invoice_id": "INV-1"}},
                  {"id": "c1", "name": "lookup", "arguments": {"invoice_id": "INV-1"}}]
    old_records = [
        {"epoch": 0, "seq": 0, "kind": "model", "step": 0, "text": None, "tool_calls": tool_calls,
         "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0}, "model": "fake:turn"},
        {"epoch": 0, "seq": 1, "kind": "tool", "step": 0, "index": 1, "name": "lookup", "ok": True,
         "content": "INV-1 is paid", "at": 1, "latency_ms": 0},
        {"epoch": 0, "seq": 2, "kind": "tool", "step": 0, "index": 0, "name": "refund", "ok": True,
         "content": "refunded INV-1", "at": 1, "latency_ms": 0},
    ]

    async def scenario() -> tuple[_Tools, str | None]:
        tools, log = _Tools(), _Log()
        chain = ckpt.rebuild([[0, 0], [1, 3]], old_records)
        calls = [(c["name"], c["arguments"]) for c in tool_calls]
        return tools, await _run(tools, log, 1, chain, calls)

    tools, output = asyncio.run(scenario())
    assert (tools.refunds, tools.lookups) == (0, 0), "both results were replayed"
    assert output == "done: refunded INV-1, INV-1 is paid"


class _Slow(_Log):
    """A log whose tool records land only once ``open`` is set (the broker's acknowledgement
    still on its way), or are refused when ``refuse`` is set; ``order`` lists landings."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.refuse = False
        self.order: list[str] = []

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        if value["kind"] == "tool":
            await self.open.wait()
            if self.refuse:
                raise RuntimeError("write to checkpoints[0] was not acknowledged")
        self.order.append(value["kind"])
        await super().persist(key, value)


class _Watching(_Turn):
    """A _Turn that notes, at each call, whether a tool record had landed, and opens the
    log's gate on its second call (what the broker's acknowledgement would do meanwhile)."""

    def __init__(self, calls: Calls, log: _Slow) -> None:
        super().__init__(calls)
        self.log = log
        self.tool_record_landed_at_call: list[bool] = []

    async def complete(self, messages: list[Message], tools: Any) -> ModelResponse:
        self.tool_record_landed_at_call.append(bool(self.log.tool_names()))
        if self.made == 1:
            self.log.open.set()
        return await super().complete(messages, tools)


def _watched_run(log: _Slow, calls: Calls, max_steps: int = 8) -> tuple[DurableRun, _Watching, Any]:
    run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), log.persist)
    model = _Watching(calls, log)
    loop = run_agent(TASK, "billing", DurableModel(model, run), DurableTools(_Tools().registry, run), ["refund", "lookup"],
                     max_steps)
    return run, model, loop


def test_the_next_model_call_does_not_wait_for_a_read_only_turns_record_and_its_own_record_lands_after_it() -> None:
    async def scenario() -> tuple[_Watching, _Slow, str | None]:
        log = _Slow()
        run, model, loop = _watched_run(log, [("lookup", {"invoice_id": "INV-1"}), ("lookup", {"invoice_id": "INV-2"})])
        # Bounded: a loop that waited for the turn's record would wait for ever (the gate
        # opens on the second model call).
        outcome = await asyncio.wait_for(landed_at_exit(run, loop), 10)
        return model, log, outcome.output

    model, log, output = asyncio.run(scenario())
    assert model.tool_record_landed_at_call == [False, False], "the second call began before the turn's record landed"
    assert log.order == ["model", "tool", "model"], "the second reply's record waited for the turn's"
    assert [v["seq"] for v in log.records.values()] == [0, 1, 2]
    assert output == "done: INV-1 is paid, INV-2 is paid"


def test_a_side_effecting_turn_is_still_recorded_before_the_next_model_call() -> None:
    async def scenario() -> _Watching:
        log = _Slow()
        log.open.set()
        run, model, loop = _watched_run(log, [("refund", {"invoice_id": "INV-1"})])
        await landed_at_exit(run, loop)
        return model

    assert asyncio.run(scenario()).tool_record_landed_at_call == [False, True]


def test_a_refused_read_only_record_fails_the_run_at_its_next_wait() -> None:
    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        log = _Slow()
        log.refuse = True
        run, _, loop = _watched_run(log, [("lookup", {"invoice_id": "INV-1"})])
        with pytest.raises(StepNotRecorded) as refused:
            await asyncio.wait_for(landed_at_exit(run, loop), 10)  # bounded, as in the test above
        return str(refused.value), list(log.records.values())

    error, landed = asyncio.run(scenario())
    assert error.startswith("Step 1 of task task-t could not be checkpointed: write to checkpoints")
    # The second reply's record was produced before the refusal was known: a resume's
    # chain stops at the missing step 1 and never takes it.
    assert [record["seq"] for record in landed] == [0, 2]
    assert ckpt.rebuild([[0, 0]], landed).length == 1


def test_a_run_that_stops_right_after_a_read_only_turn_returns_once_its_record_landed() -> None:
    """max_steps 1: the loop ends after the turn, with no record after it to wait."""

    async def scenario() -> tuple[list[list[str]], str | None]:
        log = _Slow()
        log.open.set()
        run, _, loop = _watched_run(log, [("lookup", {"invoice_id": "INV-1"})], max_steps=1)
        outcome = await landed_at_exit(run, loop)
        return log.tool_names(), outcome.output

    tool_records, output = asyncio.run(scenario())
    assert tool_records == [["lookup"]]
    assert output is not None and output.startswith("(incomplete) Stopped after 1 model turns")


def test_a_kill_before_a_read_only_turns_record_landed_repeats_only_the_lookups_and_the_call_in_flight() -> None:
    calls = [("lookup", {"invoice_id": "INV-1"})]

    async def scenario() -> tuple[_Tools, _Log, int, str | None]:
        tools, log = _Tools(), _Slow()  # the lookup's record never lands before the kill
        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), log.persist)
        model = _Turn(calls)
        in_flight = asyncio.Event()
        answer = asyncio.Event()  # never set: the second model call hangs until the kill

        async def complete(messages: list[Message], schemas: Any) -> ModelResponse:
            if model.made == 1:
                in_flight.set()
                await answer.wait()
            return await _Turn.complete(model, messages, schemas)

        model.complete = complete  # type: ignore[method-assign]
        loop = asyncio.create_task(run_agent(TASK, "billing", DurableModel(model, run), DurableTools(tools.registry, run),
                                             ["refund", "lookup"]))
        await asyncio.wait_for(in_flight.wait(), 10)  # bounded: a loop waiting for the record never gets there
        loop.cancel()  # kill -9 during the second model call
        await asyncio.gather(loop, return_exceptions=True)
        assert list(log.records) == [ckpt.step_key(TASK["task_id"], 0, 0)], "only the first reply landed"
        resumed = _Log()
        resumed.records = dict(log.records)
        again = _Turn(calls)
        run = DurableRun(TASK["task_id"], 1, _resumed_chain(resumed), resumed.persist)
        outcome = await run_agent(TASK, "billing", DurableModel(again, run), DurableTools(tools.registry, run),
                                  ["refund", "lookup"])
        return tools, resumed, again.made, outcome.output

    tools, log, made, output = asyncio.run(scenario())
    assert tools.lookups == 2, "the turn's lookup ran again"
    assert made == 1, "the first reply was replayed; only the call that was in flight was made again"
    assert output == "done: INV-1 is paid"
    assert log.tool_names() == [["lookup"]]


def test_a_loop_stopping_for_a_drain_waits_for_a_read_only_turns_record_first() -> None:
    """The partition is handed over once the loop stops: no write of the run may still be
    on its way then (a late one would outlive the next owner's tombstones)."""

    async def scenario() -> tuple[bool, list[list[str]]]:
        log, tools, model = _Slow(), _Tools(), _Turn([("lookup", {"invoice_id": "INV-1"})])
        drain_checked = asyncio.Event()

        def draining() -> bool:  # the worker starts draining once the turn's tools have run
            if tools.lookups == 0:
                return False
            drain_checked.set()
            return True

        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), log.persist, draining=draining)
        loop = asyncio.create_task(landed_at_exit(run, run_agent(
            TASK, "billing", DurableModel(model, run), DurableTools(tools.registry, run), ["refund", "lookup"])))
        await asyncio.wait_for(drain_checked.wait(), 10)  # bounded: a loop waiting for the record never drains
        stopped_before_the_record_landed = loop.done()
        log.open.set()  # the broker acknowledges the turn's record
        with pytest.raises(asyncio.CancelledError):
            await loop
        return stopped_before_the_record_landed, log.tool_names()

    stopped_early, tool_records = asyncio.run(scenario())
    assert not stopped_early, "the loop waited at its drain for the record on its way"
    assert tool_records == [["lookup"]]


def test_a_refusal_that_lands_as_its_waiter_is_cancelled_is_still_reported_to_the_next_waiter() -> None:
    """The run's wall-clock limit may cancel a record waiting for the one before it in the
    very step that one was refused: the refusal must not be dropped with the waiter."""

    async def scenario() -> None:
        refuse = asyncio.Event()

        async def persist(key: str, value: dict[str, Any]) -> None:
            await refuse.wait()
            raise RuntimeError("write to checkpoints[0] was not acknowledged")

        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), persist)
        await run.record(lambda seq: {"seq": seq}, wait=False)
        waiter = asyncio.create_task(run.landed())
        await asyncio.sleep(0)  # the waiter starts and waits for the write
        landing = run._on_its_way[-1]
        assert landing is not None
        # Cancelled right after the write failed, before the waiter could see it.
        landing.add_done_callback(lambda _: waiter.cancel())
        refuse.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert landing.done(), "the write had failed when its waiter was cancelled"
        await run.landed()

    with pytest.raises(StepNotRecorded, match="Step 0 of task task-t could not be checkpointed"):
        asyncio.run(scenario())


def test_a_record_is_produced_while_the_one_before_it_lands_and_returns_once_both_have() -> None:
    """Records of one run go to one partition in sequence order and land in it; a record
    waits for the ones before it to land, not to be produced (bench/RESULTS.md, session 17)."""

    async def scenario(refuse_first: bool) -> tuple[list[int], bool, BaseException | None]:
        produced: list[int] = []
        first_lands = asyncio.Event()

        async def persist(key: str, value: dict[str, Any]) -> None:
            produced.append(value["seq"])
            if value["seq"] == 0:
                await first_lands.wait()
                if refuse_first:
                    raise RuntimeError("write to checkpoints[0] was not acknowledged")

        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), persist)
        await run.record(lambda seq: {"seq": seq}, wait=False)
        second = asyncio.create_task(run.record(lambda seq: {"seq": seq}))
        await asyncio.wait_for(_produced(produced, 2), 5)  # bounded: a second record waiting for the first never comes
        returned_before_the_first_landed = second.done()
        first_lands.set()
        outcome = (await asyncio.gather(second, return_exceptions=True))[0]
        return produced, returned_before_the_first_landed, outcome if isinstance(outcome, BaseException) else None

    produced, early, error = asyncio.run(scenario(refuse_first=False))
    assert produced == [0, 1] and not early and error is None
    produced, early, error = asyncio.run(scenario(refuse_first=True))
    assert produced == [0, 1] and not early
    assert isinstance(error, StepNotRecorded) and str(error).startswith("Step 0 of task task-t could not be checkpointed")


async def _produced(produced: list[int], count: int) -> None:
    while len(produced) < count:
        await asyncio.sleep(0)


class _HeldReply(_Log):
    """A log whose first model reply lands only once ``open`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        if value["kind"] == "model" and value["step"] == 0:
            await self.open.wait()
        await super().persist(key, value)


def test_a_reply_of_read_only_calls_lands_before_its_calls_run() -> None:
    """Even when every call reads only, in the worker's own agent (build_agent: the support
    desk's billing turn asks for lookup_invoice and search_kb). A reply whose record had not
    landed would be asked again after a kill, and may then ask for other calls under the same
    idempotency keys (``<task>:<step>:<index>``: one key would name two calls); and the loop
    would go on to further model calls with nothing landed, each repeated after a kill
    (session 34 tried it: bench/RESULTS.md)."""
    agent = build_agent("billing", support_desk.topology(), model=support_desk.scripted_model("billing"))
    task = {**TASK, "input": "I was charged twice for invoice INV-1002 on order 5002.", "tier": None}
    log = _HeldReply()
    produced: list[str] = []  # the kinds of the records the run wrote, in order

    async def persist(key: str, value: dict[str, Any]) -> None:
        produced.append(value["kind"])
        await log.persist(key, value)

    async def scenario() -> tuple[list[str], str]:
        run = DurableRun(TASK["task_id"], 0, ckpt.Chain(), persist)
        loop = asyncio.create_task(landed_at_exit(run, agent.run(task, run)))
        for _ in range(50):  # turns of the event loop: the run goes as far as it may while the reply is on its way
            await asyncio.sleep(0)
        before = list(produced)
        log.open.set()  # the broker acknowledges the reply
        outcome = await asyncio.wait_for(loop, 10)
        return before, outcome.status

    before, status = asyncio.run(scenario())
    assert before == ["model"], "no tool ran (its record is the turn's) before the reply landed"
    assert status == "COMPLETED"
    assert [v["kind"] for v in log.records.values()] == ["model", "tool", "model"]
