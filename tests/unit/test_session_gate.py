"""The router's session gate: one task of a session at a time, the rest wait in order,
and each finished task becomes a turn of the session's memory."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

from agentstream.topology import SessionSettings
from agentstream.router.own_results import OwnResults, answer_entries, answer_key, dedupe_written_at, own_answer
from agentstream.runtime import Processor, Table
from agentstream.runtime.context import in_partition
from agentstream.serde import SchemaSet
from agentstream.router.session_gate import (
    ENDED_KEPT, EARLY_KEPT, RECORD_MAX_BYTES, Admission, Arrival, admit, answered_before, arrive, close_answered,
    holds, idle_since, missed, new_record, open_task, record_bytes, settle, taken,
)


def _limits(waiting: int = 10, turns: int = 10) -> SessionSettings:
    return SessionSettings(max_waiting=waiting, remember_turns=turns)


def _decided(task_id: str, text: str = "question") -> dict[str, Any]:
    return {"task": {"task_id": task_id, "session_id": "s", "input": f"{text} {task_id}"}, "route": ["billing"], "tier": "standard"}


def _result(task_id: str, status: str = "COMPLETED", output: str | None = "answer") -> dict[str, Any]:
    return {"task_id": task_id, "session_id": "s", "status": status, "output": output, "agents": ["billing"]}


def test_an_idle_session_lets_a_task_go_and_later_ones_wait_in_order() -> None:
    record = new_record()
    assert admit(record, _decided("t1"), _limits(waiting=10), 1, None) is Admission.GO
    assert admit(record, _decided("t2"), _limits(waiting=10), 2, None) is Admission.WAIT
    assert admit(record, _decided("t3"), _limits(waiting=10), 3, None) is Admission.WAIT
    assert open_task(record) == "t1"
    assert [w["task"]["task_id"] for w in record["waiting"]] == ["t2", "t3"]


def test_the_open_tasks_result_becomes_a_turn_and_opens_the_next() -> None:
    record = new_record()
    for task_id in ("t1", "t2", "t3"):
        admit(record, _decided(task_id), _limits(waiting=10), 1, None)
    following = settle(record, _result("t1", output="refunded INV-1002"), _limits(turns=10), 5)
    assert following is not None and following["task"]["task_id"] == "t2"
    assert open_task(record) == "t2"
    assert record["turns"] == [
        {"task_id": "t1", "input": "question t1", "output": "refunded INV-1002", "status": "COMPLETED", "agents": ["billing"]}
    ]
    assert settle(record, _result("t2"), _limits(turns=10), 6)["task"]["task_id"] == "t3"  # type: ignore[index]
    assert settle(record, _result("t3"), _limits(turns=10), 7) is None
    assert open_task(record) is None
    assert [t["task_id"] for t in record["turns"]] == ["t1", "t2", "t3"]


def test_a_result_for_a_waiting_task_closes_it_in_place() -> None:
    record = new_record()
    for task_id in ("t1", "t2", "t3"):
        admit(record, _decided(task_id), _limits(), 1, None)
    assert settle(record, _result("t2"), _limits(), 9) is None  # routed by an earlier owner
    assert open_task(record) == "t1" and [w["task"]["task_id"] for w in record["waiting"]] == ["t3"]
    assert [t["task_id"] for t in record["turns"]] == ["t2"]
    assert settle(record, _result("t2"), _limits(), 10) is None  # a repeat changes nothing
    assert [t["task_id"] for t in record["turns"]] == ["t2"] and not record["early"]


def test_a_result_before_its_task_answers_it_when_it_comes() -> None:
    # After a crash the new owner may read the result before re-reading the task.
    record = new_record()
    assert settle(record, _result("t1", output="refunded"), _limits(), 5) is None
    assert admit(record, _decided("t1"), _limits(), 6, None) is Admission.ANSWERED
    assert open_task(record) is None and not record["early"]
    assert record["turns"] == [
        {"task_id": "t1", "input": "question t1", "output": "refunded", "status": "COMPLETED", "agents": ["billing"]}
    ]
    assert admit(record, _decided("t2"), _limits(), 7, None) is Admission.GO  # the session is free


def test_early_results_are_bounded() -> None:
    record = new_record()
    for i in range(60):
        settle(record, _result(f"x{i}"), _limits(), i)
    assert list(record["early"]) == [f"x{i}" for i in range(10, 60)]


def test_a_full_session_refuses_without_losing_the_waiting_ones() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(waiting=2), 1, None)
    admit(record, _decided("t2"), _limits(waiting=2), 1, None)
    admit(record, _decided("t3"), _limits(waiting=2), 1, None)
    assert admit(record, _decided("t4"), _limits(waiting=2), 1, None) is Admission.FULL
    assert [w["task"]["task_id"] for w in record["waiting"]] == ["t2", "t3"]


def test_memory_keeps_the_latest_turns_only() -> None:
    record = new_record()
    for i in range(5):
        admit(record, _decided(f"t{i}"), _limits(waiting=10), i, None)
        settle(record, _result(f"t{i}"), _limits(turns=3), i)
    assert [t["task_id"] for t in record["turns"]] == ["t2", "t3", "t4"]


def test_only_an_idle_session_may_expire() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(waiting=10), 100, None)
    assert idle_since(record) is None
    settle(record, _result("t1"), _limits(turns=10), 200)
    assert idle_since(record) == 200
    assert idle_since("not a record") is None


def test_a_task_already_open_or_waiting_is_known_and_only_its_mark_is_taken() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(waiting=10), 1, None)
    admit(record, _decided("t2"), _limits(waiting=10), 2, None)
    before = {**record, "through": None, "at": None}
    assert admit(record, _decided("t1"), _limits(waiting=10), 3, None) is Admission.KNOWN
    assert admit(record, _decided("t2"), _limits(waiting=10), 4, None) is Admission.KNOWN
    assert {**record, "through": None, "at": None} == before  # queue and memory unchanged
    # A crash kept the record and lost t1's mark: re-read, t1 got mark 4 (here 3 and 4),
    # and a later copy with that mark is a repeat, not a task to run again.
    assert not missed(record, 4)


def test_a_task_record_the_session_took_is_taken_when_read_again_and_a_later_one_is_not() -> None:
    # t1's record is at offset 7 of the tasks topic; t1 ended. A crash kept the session's
    # record and lost t1's mark: read again (offset 7), perhaps after its result, it is
    # taken and not opened again. The same id at a later offset (a client re-using it after
    # its mark expired, an operator's replay) is a new record: not taken.
    record = new_record()
    admit(record, _decided("t1"), _limits(), 100, 7)
    assert taken(record, "t1", 7)  # open
    settle(record, _result("t1"), _limits(), 150)
    assert taken(record, "t1", 7)  # ended, among the turns
    assert not taken(record, "t1", 8) and not taken(record, "t1", None)  # a later record, a tier's copy
    assert not taken(record, "t9", 3)  # not held: a recreated topic's offsets start again
    assert not taken(None, "t1", 7)


def test_a_replay_is_routed_even_when_its_own_dead_letter_result_came_first() -> None:
    record = new_record()
    settle(record, _result("t1", status="FAILED"), _limits(), 5)  # the router dead-lettered t1: kept as early
    assert admit(record, _decided("t1"), _limits(), 10, 3, replay=True) is Admission.GO


def test_a_replay_whose_completed_result_came_first_is_answered_not_routed_again() -> None:
    # The replay ran and completed; a crash lost the record's update; the new owner read
    # its result before the replay's record: routed again, the specialists would drop it.
    record = new_record()
    settle(record, _result("t1"), _limits(), 5)
    assert admit(record, _decided("t1"), _limits(), 10, 3, replay=True) is Admission.ANSWERED


def test_the_record_keeps_the_largest_offset_it_took() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(), 1, 7)
    admit(record, _decided("t2"), _limits(), 2, 3)  # a parked record released late, say
    admit(record, _decided("t3"), _limits(), 3, None)  # a retry tier's copy
    assert record["through_offset"] == 7 and taken(record, "t2", 3) and not taken(record, "t3", 8)


def test_a_mark_without_the_records_update_is_a_missed_task() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(waiting=10), 100, None)
    durable = {**record, "waiting": list(record["waiting"])}  # what the changelog holds
    admit(record, _decided("t2"), _limits(waiting=10), 101, None)  # lost in a crash: only t2's mark reached the broker
    assert missed(durable, 101)  # the record never took t2: admit it again
    assert not missed(record, 101) and not missed(record, 100)  # a true repeat
    assert missed(None, 5)  # the session's first record was lost too


def _marks(start: int) -> Callable[[], int]:
    """A router's fresh marks from ``start`` on, as its ``mark`` gives them."""
    return itertools.count(start).__next__


def test_a_new_task_gets_a_fresh_mark_and_its_repeat_is_one() -> None:
    record, fresh = new_record(), _marks(100)
    arrival = arrive(None, None, fresh)
    assert arrival == Arrival(100, recovering=False, new_mark=True)
    admit(record, _decided("t1"), _limits(), arrival.mark, None)
    assert arrive(record, arrival.mark, fresh) is None


def test_every_task_of_a_session_whose_record_a_crash_lost_is_admitted_again_in_order() -> None:
    # Three tasks of a session got marks 10, 11, 12 and their dedupe entries reached the
    # changelog; the session's record did not. The new owner re-reads them in order, its
    # own marks far later: each is recovered under its first mark, none passes for a repeat.
    fresh, record = _marks(5_000), None
    admissions = []
    for task_id, first_mark in (("t1", 10), ("t2", 11), ("t3", 12)):
        arrival = arrive(record, first_mark, fresh)
        assert arrival is not None and arrival.recovering, f"{task_id} was taken for a repeat and would never run"
        record = record or new_record()
        admissions.append(admit(record, _decided(task_id), _limits(), arrival.mark, None))
    assert record is not None
    assert admissions == [Admission.GO, Admission.WAIT, Admission.WAIT]
    assert [open_task(record)] + [w["task"]["task_id"] for w in record["waiting"]] == ["t1", "t2", "t3"]
    assert all(arrive(record, first_mark, fresh) is None for first_mark in (10, 11, 12))  # now true repeats


def test_a_dedupe_entry_without_a_mark_is_recovered_under_a_fresh_one_only_without_a_record() -> None:
    assert arrive(None, True, _marks(7)) == Arrival(7, recovering=True, new_mark=True)
    record = new_record()
    admit(record, _decided("t1"), _limits(), 5, None)
    assert arrive(record, True, _marks(7)) is None  # the session's record has it: an old repeat


def test_a_lost_task_behind_a_restored_record_keeps_its_mark() -> None:
    # The record reached the changelog with t1 (mark 10); t2 and t3 (11, 12) did not.
    record = new_record()
    admit(record, _decided("t1"), _limits(), 10, None)
    fresh = _marks(5_000)
    assert arrive(record, 10, fresh) is None
    for task_id, first_mark in (("t2", 11), ("t3", 12)):
        arrival = arrive(record, first_mark, fresh)
        assert arrival == Arrival(first_mark, recovering=True, new_mark=False), task_id
        assert admit(record, _decided(task_id), _limits(), arrival.mark, None) is Admission.WAIT


def test_a_replay_is_no_repeat_and_keeps_its_own_mark_when_a_crash_lost_the_record_of_it() -> None:
    record = new_record()
    admit(record, _decided("t0"), _limits(), 10, None)
    settle(record, _result("t0", status="FAILED"), _limits(), 11)
    fresh = _marks(20)
    # The record took t0's mark: a replay is admitted under a new mark, written.
    assert arrive(record, 10, fresh, replay=True) == Arrival(20, recovering=False, new_mark=True)
    # Its mark (30) reached the dedupe table and the record's update did not: re-read after
    # the crash, it keeps 30, so t1 (31), lost with it, is not taken for a repeat.
    assert arrive(record, 30, fresh, replay=True) == Arrival(30, recovering=False, new_mark=False)
    admit(record, _decided("t0"), _limits(), 30, None)
    assert arrive(record, 31, fresh) == Arrival(31, recovering=True, new_mark=False)


def test_a_refusal_counts_as_taken() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(waiting=1), 1, None)
    admit(record, _decided("t2"), _limits(waiting=1), 2, None)
    assert admit(record, _decided("t3"), _limits(waiting=1), 3, None) is Admission.FULL
    assert not missed(record, 3)  # its repeat is not admitted after the refusal


def test_a_session_record_never_outgrows_a_kafka_message() -> None:
    # 30 kB tasks: the waiting list reaches the byte bound long before max_waiting.
    record = new_record()
    big = "x" * 30_000
    outcomes = [admit(record, {**_decided(f"t{i}"), "task": {"task_id": f"t{i}", "session_id": "s", "input": big}}, _limits(waiting=100), i, None)
                for i in range(40)]
    assert outcomes[0] is Admission.GO and Admission.OVERSIZE in outcomes
    first_refused = outcomes.index(Admission.OVERSIZE)
    assert all(o is Admission.WAIT for o in outcomes[1:first_refused])
    assert record_bytes(record) <= RECORD_MAX_BYTES
    assert len(record["waiting"]) == first_refused - 1  # a refused task left nothing behind


def test_early_results_and_old_turns_give_way_before_the_record_outgrows_a_message() -> None:
    record = new_record()
    wide = "\U0001F600" * 4_000  # 12 bytes each as JSON escapes: each clipped answer ~48 kB
    for i in range(EARLY_KEPT):
        settle(record, _result(f"e{i}", output=wide), _limits(), i)
    assert record_bytes(record) <= RECORD_MAX_BYTES
    assert 0 < len(record["early"]) < EARLY_KEPT and f"e{EARLY_KEPT - 1}" in record["early"]  # the newest kept


def test_the_measured_size_is_the_size_the_sessions_table_stores() -> None:
    from agentstream.runtime.table import Table

    record = new_record()
    record["turns"] = [{"input": "Rückerstattung für Rechnung INV-1001 — bitte", "output": "erledigt ✓"}]
    assert record_bytes(record) == len(Table("sessions", changelog_topic="x").encode_value(record))


def test_without_remembered_turns_the_last_ended_task_ids_are_kept_for_a_re_read() -> None:
    # remember_turns 0: no memory, but a task re-read after a crash must still be known as ended.
    record = new_record()
    for i in range(ENDED_KEPT + 2):
        admit(record, _decided(f"t{i}"), _limits(turns=0), i, i)
        settle(record, _result(f"t{i}"), _limits(turns=0), 100 + i)
    assert record["turns"] == []
    assert record["ended"] == [f"t{i}" for i in range(2, ENDED_KEPT + 2)]  # the latest, bounded
    assert taken(record, f"t{ENDED_KEPT + 1}", ENDED_KEPT + 1) and not taken(record, "t0", 0)
    settle(record, _result("t5"), _limits(turns=0), 500)  # a repeat of its result: not kept as early
    assert "t5" not in record["early"]


def test_with_a_full_memory_no_ended_ids_are_kept_beside_the_turns() -> None:
    record = new_record()
    for i in range(12):
        admit(record, _decided(f"t{i}"), _limits(turns=10), i, i)
        settle(record, _result(f"t{i}"), _limits(turns=10), 100 + i)
    assert len(record["turns"]) == 10 and record.get("ended", []) == []  # the turns know the latest ten


def test_an_ended_task_id_is_kept_once() -> None:
    record = new_record()
    for task_id, seen in (("t0", 1), ("t1", 2), ("t1", 3)):  # t1 ends twice (a replay, say)
        admit(record, _decided(task_id), _limits(turns=0), seen, seen, replay=True)
        settle(record, _result(task_id), _limits(turns=0), 10 + seen)
    assert record["ended"] == ["t0", "t1"]


def test_a_replay_read_again_after_a_crash_is_a_repeat_once_its_record_took_it() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(), 10, 4)
    settle(record, _result("t1"), _limits(), 11)
    arrival = arrive(record, 10, _marks(20), replay=True, offset=9)  # the replay's record, offset 9
    assert arrival == Arrival(20, recovering=False, new_mark=True)
    admit(record, _decided("t1"), _limits(), arrival.mark, 9, replay=True)
    assert arrive(record, 20, _marks(30), replay=True, offset=9) is None  # read again: a repeat
    assert arrive(record, 20, _marks(30), replay=True, offset=12) is not None  # replayed again later: runs


def _own(task_id: str, status: str, message: str) -> dict[str, Any]:
    """The head of a result the router published itself (no agents), as own_results reads it back."""
    return {"task_id": task_id, "session_id": "s", "status": status, "output": None,
            "error": {"code": "CANCELED" if status == "CANCELED" else "SESSION_BUSY", "message": message}, "agents": []}


def test_the_routers_own_results_are_told_from_the_supervisors() -> None:
    assert own_answer(_own("t1", "REJECTED", "full"))
    assert own_answer(_own("t1", "CANCELED", "canceled by ops: late"))
    assert not own_answer(_result("t1", status="CANCELED", output=None))  # the supervisor's names its specialists
    assert not own_answer(_result("t1"))
    assert not own_answer({**_own("t1", "FAILED", "dead-lettered")})  # a dead-lettering's, not a decision


def test_a_refused_task_answered_before_a_restart_is_passed_not_held() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(), 1, 10)
    answered_before(record, _decided("t2")["task"], _own("t2", "REJECTED", "full"), _limits(), 2, 11)
    assert open_task(record) == "t1" and record["waiting"] == [] and [t["task_id"] for t in record["turns"]] == []
    assert not missed(record, 2)  # a later copy is a repeat
    assert taken(record, "t1", 10) and not taken(record, "t2", 11)  # passed, as a refusal leaves it: not held


def test_a_canceled_task_answered_before_a_restart_is_remembered_as_canceled_here() -> None:
    record = new_record()
    admit(record, _decided("t1"), _limits(), 1, 10)
    record["canceled"] = {"t2": {"requested_by": "ops", "reason": "late"}}  # its cancel, read again first
    answered_before(record, _decided("t2")["task"], _own("t2", "CANCELED", "canceled by ops: late"), _limits(), 2, 11)
    assert record["canceled"] == {}
    assert record["turns"] == [{"task_id": "t2", "input": "question t2", "output": "canceled by ops: late",
                                "status": "CANCELED", "agents": []}]
    assert open_task(record) == "t1" and record["waiting"] == []


def test_an_open_task_answered_before_a_restart_closes_and_the_next_opens() -> None:
    record = new_record()
    for seen, task_id in enumerate(("t1", "t2"), start=1):
        admit(record, _decided(task_id), _limits(), seen, None)
    close_answered(record, _own("t1", "CANCELED", "canceled by ops: late"), _limits())
    assert open_task(record) == "t2" and record["waiting"] == []
    turns = [(t["task_id"], t["status"], t["output"]) for t in record["turns"]]
    assert turns == [("t1", "CANCELED", "canceled by ops: late")]
    close_answered(record, _own("t2", "CANCELED", "canceled by ops: gone"), _limits())
    assert record["open"] is None and [t["task_id"] for t in record["turns"]] == ["t1", "t2"]


def test_answers_read_back_share_the_dedupe_table_with_the_marks_and_expire_with_them() -> None:
    assert dedupe_written_at(1_700_000_000_000) == 1_700_000_000_000  # a mark is its own write time
    assert dedupe_written_at({"answer": _own("t1", "REJECTED", "full"), "at": 5}) == 5
    assert dedupe_written_at({"answer": {}}) is None  # no time: stamped now by the expiry walk
    assert answer_key(_task("t1")) != "t1" and not answer_key(_task("t1")).isprintable()  # no usable task id is the key


def _task(task_id: str, session_id: str = "s", **fields: Any) -> dict[str, Any]:
    """What answer_key reads of a task (or of its result's head)."""
    return {"task_id": task_id, "session_id": session_id, "tenant_id": "acme", "submitted_at": 5, **fields}


def test_a_usable_id_is_its_answers_key_whatever_its_session() -> None:
    assert answer_key(_task("t1", "s1")) == answer_key(_task("t1", "s2", submitted_at=6))


def test_an_unusable_task_id_is_keyed_by_a_digest_of_what_its_result_repeats() -> None:
    huge = "x" * 70_000 + "\x01"
    key = answer_key(_task(huge))
    assert len(key) < 100 and huge not in key  # a key the table takes, whatever the id's size
    assert key == answer_key(_task(huge))
    assert key.startswith(answer_key(_task("t1")).removesuffix("t1"))  # under the answers' prefix (may_hold)
    for other in (_task(huge, "s2"), _task(huge, tenant_id="other"), _task(huge, submitted_at=6)):
        assert answer_key(other) != key  # another submission with the same id: not its answer
    assert answer_key(_task("a\x01", "bs")) != answer_key(_task("a\x01b", "s"))  # where one id ends is kept
    assert answer_key(_task("   ")) not in {answer_key(_task(usable)) for usable in ("t1", "a")}


def test_answers_to_copies_of_one_submission_with_an_unusable_id_are_counted_not_kept_whole() -> None:
    heads = [{**_own("   ", "REJECTED", "missing or empty task_id"), **_task("   ")} for _ in range(2)]
    heads += [{**_own("t\x011", "REJECTED", "task_id holds a control character"), **_task("t\x011")},
              _own("t1", "REJECTED", "full"), _own("t1", "REJECTED", "full again")]
    entries = answer_entries(heads, 7)
    blank = entries[answer_key(heads[0])]
    assert blank == {"answer": {"status": "REJECTED", "error": heads[0]["error"]}, "at": 7, "count": 2}
    assert entries[answer_key(heads[2])]["count"] == 1
    usable = entries[answer_key(_task("t1"))]
    assert usable["answer"]["error"] == heads[4]["error"] and "count" not in usable  # one task: its latest answer
    assert len(entries) == 3


class _Partition:
    def may_hold(self, prefix: bytes) -> bool:
        return True


class _Dedupe(dict[str, Any]):
    """A dedupe table's stand-in: a dict with the partition view OwnResults asks."""

    def partition(self, partition: int) -> _Partition:
        return _Partition()


def test_each_copy_read_again_takes_one_answer_and_then_none_is_left() -> None:
    dedupe = _Dedupe()
    own = OwnResults(cast(Processor, None), cast(SchemaSet, None), "results", "tasks", cast(Table, dedupe))
    blank = _task("   ")
    dedupe.update(answer_entries([{**_own("   ", "REJECTED", "missing or empty task_id"), **blank}] * 2, 7))
    with in_partition("tasks", 0):
        for _ in range(2):
            answer = own.answer(blank)
            assert answer is not None and answer["status"] == "REJECTED" and answer["task_id"] == "   "
            own.forget(blank)
        assert own.answer(blank) is None and dedupe == {}  # a third copy is decided anew
        dedupe.update(answer_entries([_own("t1", "REJECTED", "full")], 7))
        assert own.answer(_task("t1", "another session")) is None  # a usable id's answer is its session's
        assert own.answer(_task("t1")) is not None
        own.forget(_task("t1"))
        assert dedupe == {}


def test_a_task_answered_before_and_read_back_first_leaves_no_early_result() -> None:
    record = new_record()
    settle(record, _own("t2", "CANCELED", "canceled by ops: late"), _limits(), 3)  # its own CANCELED, read back first
    assert "t2" in record["early"]
    answered_before(record, _decided("t2")["task"], _own("t2", "CANCELED", "canceled by ops: late"), _limits(), 4, 12)
    assert record["early"] == {} and [t["task_id"] for t in record["turns"]] == ["t2"]


def test_holds_says_open_or_waiting() -> None:
    record = new_record()
    for seen, task_id in enumerate(("t1", "t2"), start=1):
        admit(record, _decided(task_id), _limits(), seen, None)
    assert holds(record, "t1") and holds(record, "t2") and not holds(record, "t3") and not holds(None, "t1")
