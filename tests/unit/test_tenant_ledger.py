"""The tenant ledger's accounting (tenancy/ledger.py) and the admission rule (admission.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agentstream.tenancy import TENANT_BUDGET_SPENT, TENANT_BUSY, TENANT_UNKNOWN, Tenant, TenantLedger, TenantLimits, refusal, utc_day
from agentstream.tenancy.ledger import DAY_MS, DONE_KEPT_MS, countable

NOON = 20_000 * DAY_MS + DAY_MS // 2  # a UTC noon


class DictStore:
    """The ledger's store in memory (the worker's is a RocksDB PartitionStore)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))


def task(task_id: str, tenant: str = "acme", at: int = NOON) -> dict[str, Any]:
    return {"task_id": task_id, "tenant_id": tenant, "submitted_at": at, "session_id": "s"}


def result(task_id: str, cost: float, tenant: str = "acme", at: int = NOON) -> dict[str, Any]:
    return {"task_id": task_id, "tenant_id": tenant, "completed_at": at, "usage": {"cost_usd": cost}}


def test_a_task_is_in_flight_until_its_result_which_adds_its_cost_to_its_day() -> None:
    ledger = TenantLedger(DictStore())
    ledger.submitted(task("t1"))
    ledger.submitted(task("t1"))  # a repeat counts once
    ledger.submitted(task("t2", tenant="globex"))
    assert (ledger.in_flight("acme"), ledger.in_flight("globex")) == (1, 1)
    ledger.answered(result("t1", 0.25))
    ledger.answered(result("t1", 0.25))  # a repeated result is not counted twice
    assert ledger.in_flight("acme") == 0
    assert ledger.spent("acme", utc_day(NOON)) == 0.25
    assert ledger.spent("acme", utc_day(NOON) + 1) == 0.0  # a new UTC day starts at nothing
    assert ledger.spent("globex", utc_day(NOON)) == 0.0


def test_a_result_read_before_its_task_keeps_the_task_from_opening() -> None:
    ledger = TenantLedger(DictStore())
    ledger.answered(result("t1", 0.1))
    ledger.submitted(task("t1"))
    assert ledger.in_flight("acme") == 0
    assert ledger.spent("acme", utc_day(NOON)) == 0.1


def test_a_new_ledger_over_the_same_store_has_the_same_figures() -> None:
    store = DictStore()
    ledger = TenantLedger(store)
    ledger.submitted(task("t1"))
    ledger.submitted(task("t2"))
    ledger.answered(result("t2", 1.5))
    again = TenantLedger(store)
    assert again.in_flight("acme") == 1
    assert again.spent("acme", utc_day(NOON)) == 1.5
    again.answered(result("t2", 1.5))
    assert again.spent("acme", utc_day(NOON)) == 1.5


def test_prune_forgets_old_marks_and_days() -> None:
    store = DictStore()
    ledger = TenantLedger(store)
    ledger.answered(result("old", 2.0, at=NOON - 3 * DAY_MS))
    ledger.answered(result("new", 1.0))
    assert ledger.prune_days(NOON + DAY_MS) == 1  # the spend of a day before yesterday; today's and yesterday's stay
    assert ledger.spent("acme", utc_day(NOON - 3 * DAY_MS)) == 0.0
    assert ledger.spent("acme", utc_day(NOON)) == 1.0
    assert ledger.prune_marks(NOON - 3 * DAY_MS + DONE_KEPT_MS) == 0
    assert ledger.prune_marks(NOON - 3 * DAY_MS + DONE_KEPT_MS + 1) == 1  # the mark of "old"
    assert store.get(b"done/old") is None and store.get(b"done/new") is not None
    assert TenantLedger(store).spent("acme", utc_day(NOON - 3 * DAY_MS)) == 0.0


def test_in_flight_before_orders_tasks_by_submission() -> None:
    ledger = TenantLedger(DictStore())
    for task_id, at in (("a", NOON), ("b", NOON + 1), ("c", NOON + 1)):
        ledger.submitted(task(task_id, at=at))
    assert [ledger.in_flight_before("acme", task(t, at=at)) for t, at in (("a", NOON), ("b", NOON + 1), ("c", NOON + 1))] == [0, 1, 2]


class Lookup:
    def __init__(self, *tenants: Tenant) -> None:
        self.tenants = {tenant.id: tenant for tenant in tenants}

    def get(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)


def test_refusals_name_the_tenant_and_the_limit() -> None:
    tenants = Lookup(Tenant("acme", TenantLimits(daily_cost_usd=1.0, max_running_tasks=2)), Tenant("free", TenantLimits()))
    ledger = TenantLedger(DictStore())
    assert refusal(tenants, ledger, task("t1"), NOON) is None
    unknown = refusal(tenants, ledger, task("t1", tenant="initech"), NOON)
    assert unknown is not None and unknown.code == TENANT_UNKNOWN and "'initech' is not in the tenants file" in unknown.reason
    for task_id in ("t1", "t2", "t3"):
        ledger.submitted(task(task_id, at=NOON + int(task_id[1])))
    assert refusal(tenants, ledger, task("t2", at=NOON + 2), NOON) is None  # one before it in flight: under the cap
    busy = refusal(tenants, ledger, task("t3", at=NOON + 3), NOON)
    assert busy is not None and busy.code == TENANT_BUSY and "has 2 tasks in flight, its cap is 2" in busy.reason
    ledger.answered(result("t1", 0.6))
    ledger.answered(result("t2", 0.4))
    spent = refusal(tenants, ledger, task("t4", at=NOON + 4), NOON)
    assert spent is not None and spent.code == TENANT_BUDGET_SPENT
    assert "spent $1.0000 today (UTC), its daily budget is $1.00" in spent.reason
    assert refusal(tenants, ledger, task("t4", at=NOON + 4), NOON + DAY_MS) is None  # the next UTC day
    assert refusal(tenants, ledger, task("x", tenant="free"), NOON) is None


def test_only_printable_ids_are_counted() -> None:
    assert countable(task("t1"))
    assert not countable(task("t1", tenant=""))
    assert not countable(task("t\x1f1"))
    assert not countable({"task_id": "t1", "tenant_id": None})
