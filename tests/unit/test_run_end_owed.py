"""A finished run's transcript or result that the broker did not acknowledge in time (a
partition without a leader for the producer's whole message.timeout.ms) is sent again
beside the partition, its head kept meanwhile; the task goes to no retry tier, whose copy
would call every model again (specialist/run_end.py). Before it is sent again, what is
owed goes into the run's head, so a new owner after a rebalance sends it and ends the run
instead of resuming it. A result the broker refuses for good still fails the task into the
retry chain; such a transcript is left out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from agentstream.retry.headers import ATTEMPT, REPLAY
from agentstream.runtime import MessageContext
from agentstream.runtime.delivery import not_acknowledged
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.lifecycle import MAX_REDELIVERIES, TaskLifecycle
from agentstream.specialist.loop import AgentOutcome
from agentstream.specialist.run_end import OWED, answer_landed, owed_result
from agentstream.transcripts.record import TRANSCRIPT
from tests.unit import test_run_end as ends

RUN = ends.RUN


def _refusal(topic: str, code: int) -> CheckpointError:
    """The error a delivery report of ``code`` for a write to ``topic`` gives (runtime/delivery.py)."""
    return not_acknowledged(KafkaError(code, "refused"), SimpleNamespace(topic=lambda: topic, partition=lambda: 0))


class _Agent(ends._Agent):
    def __init__(self) -> None:
        self.runs = 0

    async def run(self, task: dict[str, Any], run: Any) -> Any:
        self.runs += 1
        return await super().run(task, run)


def _worker(
    refusals: dict[str, list[CheckpointError]], store: ends._Store | None = None,
) -> tuple[TaskLifecycle, ends._Processor, _Agent, list[str]]:
    """A worker whose acknowledged writes to a topic (or, under "checkpoints", its end
    write; under "owe", the write of what its end owes into its head) fail with the errors
    listed for it, one per write, first to last."""
    lifecycle, processor = ends._worker(store if store is not None else ends._Store())
    agent = _Agent()
    lifecycle.agent = agent  # type: ignore[assignment]
    tiers: list[str] = []

    async def settled(session: str) -> None:
        processor.trips.append(("settled", session))

    lifecycle.retries = SimpleNamespace(failed=lambda *args: tiers.append("failed") or "dead",  # type: ignore[assignment]
                                        settled=settled)
    processor.assigned_partitions = lambda: {0}  # type: ignore[attr-defined]
    send_acked, persist, persist_all = processor.send_acked, processor.persist, processor.persist_all

    async def sent_or_refused(topic: str, value: bytes, key: str, headers: object = None) -> int:
        if refusals.get(topic):
            processor.trips.append(("refused", topic))
            raise refusals[topic].pop(0)
        return await send_acked(topic, value, key, headers)

    async def written_or_refused(table: object, items: list[tuple[str, Any]], partition: int) -> None:
        if refusals.get("checkpoints") and items[0][0] == ckpt.done_key(RUN):  # the end write
            processor.trips.append(("refused", "checkpoints"))
            raise refusals["checkpoints"].pop(0)
        await persist_all(table, items, partition)

    async def owed_or_refused(table: object, key: str, value: Any, partition: int | None = None) -> None:
        if refusals.get("owe") and key == ckpt.head_key(RUN) and OWED in value:
            processor.trips.append(("refused", "owe"))
            raise refusals["owe"].pop(0)
        await persist(table, key, value, partition)

    async def no_wait(seconds: float) -> None:
        return None

    processor.send_acked = sent_or_refused  # type: ignore[method-assign]
    processor.persist = owed_or_refused  # type: ignore[method-assign]
    processor.persist_all = written_or_refused  # type: ignore[method-assign]
    lifecycle.ended_later._sleep = no_wait
    return lifecycle, processor, agent, tiers


def _run(refusals: dict[str, list[CheckpointError]], *, attempt: int = 0) -> tuple[ends._Processor, _Agent, list[str], set[str]]:
    """Route the task (``attempt`` > 0: a retry tier's copy) and run it to its end; return what
    the store held once the run's own work was over (before any retry beside the
    partition), and then run those retries."""
    lifecycle, processor, agent, tiers = _worker(refusals)
    headers = ((ATTEMPT, str(attempt).encode()),) if attempt else ()

    async def main() -> set[str]:
        await lifecycle.on_routed(dict(ends.TASK), MessageContext("in", 0, 7, b"s", headers, 0))
        await processor.spawned.pop(0)
        left = {key.decode() for key in processor.store.data}
        while processor.spawned:
            await processor.spawned.pop(0)
        return left

    left = asyncio.run(main())
    return processor, agent, tiers, left


def _sends(processor: ends._Processor) -> list[tuple[str, str]]:
    return [(kind, topic) for kind, topic in processor.trips if kind in ("send_acked", "refused")]


def test_a_result_not_acknowledged_in_time_is_sent_again_beside_the_partition_and_the_task_is_not_run_again() -> None:
    processor, agent, tiers, left = _run({"supervisor": [_refusal("supervisor", KafkaError._MSG_TIMED_OUT)]})
    assert tiers == [], "the task went to a retry tier: its copy would call every model again"
    assert agent.runs == 1
    assert ckpt.head_key(RUN) in left and ckpt.done_key(RUN) not in left, "the head stays until the result is out"
    assert _sends(processor) == [("send_acked", "transcripts"), ("refused", "supervisor"), ("send_acked", "supervisor")]
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}


def test_a_retried_run_lets_its_session_go_only_once_its_resent_result_is_out() -> None:
    """A run back from a retry tier settles its session (its parked tasks go) after its
    result, not while the result is still owed."""
    processor, agent, tiers, _ = _run({"supervisor": [_refusal("supervisor", KafkaError._MSG_TIMED_OUT)]}, attempt=1)
    assert tiers == [] and agent.runs == 1
    trips = [trip for trip in processor.trips if trip[0] in ("send_acked", "refused", "settled")]
    assert trips == [("send_acked", "transcripts"), ("refused", "supervisor"), ("send_acked", "supervisor"), ("settled", "s")]


def test_a_transcript_not_acknowledged_in_time_is_sent_again_before_the_result() -> None:
    processor, agent, tiers, left = _run({"transcripts": [_refusal("transcripts", KafkaError.NOT_LEADER_FOR_PARTITION)]})
    assert tiers == [] and agent.runs == 1
    assert ckpt.head_key(RUN) in left
    assert _sends(processor) == [("refused", "transcripts"), ("send_acked", "transcripts"), ("send_acked", "supervisor")]
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}


def test_a_resent_result_is_not_sent_a_third_time_when_the_end_write_after_it_is_refused() -> None:
    timed_out = _refusal("checkpoints", KafkaError._MSG_TIMED_OUT)
    processor, agent, tiers, _ = _run({"supervisor": [_refusal("supervisor", KafkaError._MSG_TIMED_OUT)],
                                       "checkpoints": [timed_out]})
    assert tiers == [] and agent.runs == 1
    assert [topic for kind, topic in _sends(processor) if kind == "send_acked"] == ["transcripts", "supervisor"]
    assert ("refused", "checkpoints") in processor.trips
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}


def test_a_result_the_broker_refuses_for_good_fails_the_task_into_the_retry_chain() -> None:
    processor, agent, tiers, _ = _run({"supervisor": [_refusal("supervisor", KafkaError.MSG_SIZE_TOO_LARGE)]})
    assert tiers == ["failed"], "no retry would pass: the chain decides (a tier, or the DLQ with a FAILED result)"
    assert agent.runs == 1 and _sends(processor)[:2] == [("send_acked", "transcripts"), ("refused", "supervisor")]
    assert processor.sent["SpecialistResult"]["status"] == "FAILED", "the dead-lettered task's FAILED result went instead"


def test_a_transcript_the_broker_refuses_for_good_is_left_out_and_the_result_goes() -> None:
    processor, agent, tiers, _ = _run({"transcripts": [_refusal("transcripts", KafkaError.MSG_SIZE_TOO_LARGE)]})
    assert tiers == [] and agent.runs == 1
    assert _sends(processor) == [("refused", "transcripts"), ("send_acked", "supervisor")]
    assert processor.sent["SpecialistResult"]["status"] == "COMPLETED"
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}


class _DeadAgent(_Agent):
    """Records its reply, then finds every model unavailable: with no tier left the task is
    dead-lettered with a FAILED result (TaskLifecycle._fail)."""

    async def run(self, task: dict[str, Any], run: Any) -> Any:
        self.runs += 1
        if 0 not in run.chain.models:
            await run.record(lambda seq: ckpt.model_step(0, ends.REPLY, run.epoch, seq, timing=ckpt.Timing(1, 2)))
        return AgentOutcome("FAILED", None, ("MODEL_UNAVAILABLE", "every model is down"), [], {}, 1)


def _owner_lost_after_owing(
    refusals: dict[str, list[CheckpointError]], agent: _Agent, headers: tuple[tuple[str, bytes], ...] = (),
) -> tuple[ends._Processor, ends._Store]:
    """Run the task on an owner whose end is sent again beside the partition once and
    refused again; then the partition goes (its spawned work cancelled, as a revoke does).
    Return that owner's processor and the store its successor restores."""
    lifecycle, processor, _, _ = _worker(refusals)
    lifecycle.agent = agent  # type: ignore[assignment]
    naps = 0

    async def revoked_at_the_second_wait(seconds: float) -> None:
        nonlocal naps
        naps += 1
        if naps > 1:
            raise asyncio.CancelledError  # the revoke cancels the partition's spawned work

    lifecycle.ended_later._sleep = revoked_at_the_second_wait

    async def main() -> None:
        await lifecycle.on_routed(dict(ends.TASK), MessageContext("in", 0, 7, b"s", headers, 0))
        while processor.spawned:
            with contextlib.suppress(asyncio.CancelledError):
                await processor.spawned.pop(0)

    asyncio.run(main())
    return processor, processor.store  # type: ignore[return-value]


def _successor(store: ends._Store) -> tuple[ends._Processor, _Agent]:
    """A new owner of the partition, on the store its restore rebuilt: it resumes what it finds."""
    lifecycle, processor, agent, _ = _worker({}, store)

    async def main() -> None:
        await lifecycle.resume_in_flight([0])
        while processor.spawned:
            await processor.spawned.pop(0)

    asyncio.run(main())
    return processor, agent


def _timeouts(topic: str, count: int) -> list[CheckpointError]:
    return [_refusal(topic, KafkaError._MSG_TIMED_OUT) for _ in range(count)]


def test_a_new_owner_sends_the_result_its_predecessor_owed_and_runs_nothing() -> None:
    first, store = _owner_lost_after_owing({"supervisor": _timeouts("supervisor", 2)}, _Agent())
    as_first_encoded = json.dumps(first.sent["SpecialistResult"]).encode()
    owing = store.value(ckpt.head_key(RUN))[OWED]
    assert owed_result(owing) == as_first_encoded and owing["transcript"] is False
    processor, agent = _successor(store)
    assert agent.runs == 0, "a new owner resumed a run whose answer was recorded: its models would be called again"
    assert _sends(processor) == [("send_acked", "supervisor")]
    assert processor.sent_values["supervisor"] == [(as_first_encoded, None)], "the result as first encoded, byte for byte"
    assert "SpecialistResult" not in processor.sent, "nothing encoded again"
    assert set(store.data) == {ckpt.done_key(RUN).encode()}, "ended: the done marker, every record tombstoned"


def test_a_transcript_owed_too_goes_before_the_result_made_from_the_owed_one() -> None:
    first, store = _owner_lost_after_owing({"transcripts": _timeouts("transcripts", 2)}, _Agent())
    assert store.value(ckpt.head_key(RUN))[OWED]["transcript"] is True
    processor, agent = _successor(store)
    assert agent.runs == 0
    assert _sends(processor) == [("send_acked", "transcripts"), ("send_acked", "supervisor")]
    made, again = ({k: v for k, v in sent[TRANSCRIPT].items() if k != "recorded_at"} for sent in (first.sent, processor.sent))
    assert again == made, "the same transcript as the first owner made (but when)"
    assert set(store.data) == {ckpt.done_key(RUN).encode()}


def test_a_retried_or_replayed_runs_owed_result_keeps_its_marker_and_settles_its_session_once() -> None:
    replay = ((ATTEMPT, b"1"), (REPLAY, b"dlq-7"))
    first, store = _owner_lost_after_owing({"supervisor": _timeouts("supervisor", 2)}, _Agent(), replay)
    assert ("settled", "s") not in first.trips, "not settled while the result was owed"
    processor, agent = _successor(store)
    assert agent.runs == 0
    assert [headers for _, headers in processor.sent_values["supervisor"]] == [[(REPLAY, b"dlq-7")]]
    assert [trip for trip in processor.trips if trip[0] == "settled"] == [("settled", "s")]


def test_an_owed_result_is_sent_however_many_owners_in_a_row_took_the_run_over() -> None:
    """The redelivery limit counts owners that died at the same step of a running task; a
    run whose result is owed has no step left to die at."""
    _, store = _owner_lost_after_owing({"supervisor": _timeouts("supervisor", 2)}, _Agent())
    head = store.value(ckpt.head_key(RUN))
    at = head["epochs"][-1][1] + 2  # past every step of the run
    store.put(ckpt.head_key(RUN), {**head, "epochs": [*head["epochs"], *([e, at] for e in range(1, MAX_REDELIVERIES + 2))]})
    processor, agent = _successor(store)
    assert agent.runs == 0
    assert [json.loads(value)["status"] for value, _ in processor.sent_values["supervisor"]] == ["COMPLETED"]


def test_a_dead_lettered_runs_owed_failed_result_is_sent_without_running_it_again() -> None:
    """The FAILED result of a task the chain dead-lettered, owed when the partition moved:
    the new owner sends it; before, it resumed the run and called its models again."""
    first, store = _owner_lost_after_owing({"supervisor": _timeouts("supervisor", 2)}, _DeadAgent())
    assert first.sent["SpecialistResult"]["status"] == "FAILED"
    processor, agent = _successor(store)
    assert agent.runs == 0
    assert processor.sent_values["supervisor"] == [(json.dumps(first.sent["SpecialistResult"]).encode(), None)]
    assert set(store.data) == {ckpt.done_key(RUN).encode()}


def test_a_refused_owe_write_holds_back_no_result() -> None:
    """What is owed goes into the head best effort: the result goes out all the same (a
    new owner would then resume the run from its head, as before)."""
    processor, agent, tiers, _ = _run({"supervisor": _timeouts("supervisor", 1), "owe": _timeouts("checkpoints", 1)})
    assert tiers == [] and agent.runs == 1
    assert [trip for trip in processor.trips if trip[0] in ("send_acked", "refused")] == [
        ("send_acked", "transcripts"), ("refused", "supervisor"), ("refused", "owe"), ("send_acked", "supervisor")]
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}


def test_a_run_ended_before_its_head_went_is_not_sent_again_though_its_end_was_owed() -> None:
    """A kill inside the end write (its done marker landed, not the tombstones): the done
    marker decides (_end_again): the result was out before it."""
    _, store = _owner_lost_after_owing({"supervisor": _timeouts("supervisor", 2)}, _Agent())
    store.put(ckpt.done_key(RUN), 1)
    processor, agent = _successor(store)
    assert agent.runs == 0 and _sends(processor) == []
    assert set(store.data) == {ckpt.done_key(RUN).encode()}


async def _fails(error: Exception) -> None:
    raise error


async def _lands() -> None:
    return None


def test_an_answer_that_was_not_recorded_decides_though_its_transcript_timed_out() -> None:
    """The answer's own refusal fails the run (its answer would be made again), whatever
    became of the transcript sent beside it."""
    answer = CheckpointError("write of the answer was not acknowledged: refused")
    timed_out = _refusal("transcripts", KafkaError._MSG_TIMED_OUT)
    with pytest.raises(CheckpointError) as raised:
        asyncio.run(answer_landed(_fails(answer), _fails(timed_out)))
    assert raised.value is answer


def test_a_transcript_that_timed_out_beside_a_landed_answer_is_owed() -> None:
    timed_out = _refusal("transcripts", KafkaError._MSG_TIMED_OUT)
    assert asyncio.run(answer_landed(_lands(), _fails(timed_out))) is timed_out
    assert asyncio.run(answer_landed(_lands(), _lands())) is None
    assert asyncio.run(answer_landed(_lands(), None)) is None
    with pytest.raises(KeyError):  # not the broker's: a bug is raised, not sent again
        asyncio.run(answer_landed(_lands(), _fails(KeyError("task_id"))))
