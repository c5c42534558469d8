"""Tool schemas from type hints, argument validation, failures as results, concurrency, demo tools."""

from __future__ import annotations

import asyncio
import json
import threading
import types
from typing import Literal, Optional

import pytest

from agentstream.errors import ToolDefinitionError
from agentstream.tools import ToolRegistry, ToolResult, tool
from tests import support_desk

# The support-desk example's tools, from its tools.py as the specialists load it.
_APP_TOOLS = support_desk.tools_module()
lookup_account, lookup_invoice, lookup_order, search_kb = (
    _APP_TOOLS.lookup_account, _APP_TOOLS.lookup_invoice, _APP_TOOLS.lookup_order, _APP_TOOLS.search_kb
)


@tool
def find_customer(
    name: str,
    limit: int = 5,
    region: Optional[str] = None,  # noqa: UP045 - the typing.Optional spelling is what is tested
    tags: list[str] | None = None,
    active: bool = True,
    tier: Literal["free", "pro"] = "pro",
    score: float = 0.5,
) -> dict[str, object]:
    """Find customers by name.

    Longer notes for humans.

    Args:
        name: Part of the customer's name.
        limit: How many customers
            to return at most.
    """
    return {"name": name, "limit": limit, "region": region, "tags": tags, "active": active}


def _call(registry: ToolRegistry, name: str, arguments: object, timeout_s: float = 5.0) -> ToolResult:
    return asyncio.run(registry.call(name, arguments, timeout_s))


def test_schema_comes_from_type_hints_and_docstring() -> None:
    assert find_customer.schema() == {
        "name": "find_customer",
        "description": "Find customers by name. Longer notes for humans.",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Part of the customer's name."},
                "limit": {"type": "integer", "description": "How many customers to return at most."},
                "region": {"type": ["string", "null"]},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "active": {"type": "boolean"},
                "tier": {"type": "string", "enum": ["free", "pro"]},
                "score": {"type": "number"},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    }


def test_a_decorated_function_stays_callable() -> None:
    assert find_customer("Ann")["limit"] == 5
    assert lookup_order("5001")["total"] == 49.0


def test_decorator_with_options() -> None:
    @tool(name="ping_tool", description="Answers pong.")
    async def ping() -> str:
        return "pong"

    assert ping.schema()["name"] == "ping_tool"
    assert ping.is_async
    assert _call(ToolRegistry([ping]), "ping_tool", {}) == ToolResult("ping_tool", True, "pong")


def test_unsupported_definitions_are_refused_with_a_reason() -> None:
    def no_hint(x) -> str:  # type: ignore[no-untyped-def]
        """Doc."""
        return ""

    def bad_type(options: dict[str, str]) -> str:
        """Doc."""
        return ""

    def no_doc(x: str) -> str:
        return x

    def star(*names: str) -> str:
        """Doc."""
        return ""

    with pytest.raises(ToolDefinitionError, match="'x' of tool 'no_hint' has no type hint"):
        tool(no_hint)
    with pytest.raises(ToolDefinitionError, match="'options' of tool 'bad_type' has unsupported type"):
        tool(bad_type)
    with pytest.raises(ToolDefinitionError, match="no description"):
        tool(no_doc)
    with pytest.raises(ToolDefinitionError, match="'names'"):
        tool(star)


@pytest.mark.parametrize("name", ["lookup,refund", "kb.search", "größe", "<lambda>", "x" * 65])
def test_a_name_providers_would_refuse_is_refused_with_the_rule(name: str) -> None:
    def fine(x: str) -> str:
        """Doc."""
        return x

    with pytest.raises(ToolDefinitionError, match=r"1-64 ASCII letters, digits, '_' or '-'.*@tool\(name=\.\.\.\)"):
        tool(name=name)(fine)
    assert tool(name="x" * 64)(fine).name == "x" * 64


def test_duplicate_names_are_refused() -> None:
    registry = ToolRegistry([find_customer])
    with pytest.raises(ToolDefinitionError, match="already registered"):
        registry.register(find_customer)


def test_registry_decorator_registers_plain_functions() -> None:
    registry = ToolRegistry()

    @registry.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert "add" in registry and len(registry) == 1
    assert _call(registry, "add", {"a": 2, "b": "3"}) == ToolResult("add", True, "5")


def test_schemas_follow_the_allowlist_sorted_by_name() -> None:
    registry = support_desk.registry()
    assert [s["name"] for s in registry.schemas()] == ["lookup_account", "lookup_invoice", "lookup_order", "refund_invoice", "search_kb"]
    assert [s["name"] for s in registry.schemas(["search_kb", "lookup_order"])] == ["lookup_order", "search_kb"]
    with pytest.raises(ToolDefinitionError, match=r"\['refund_everything'\]"):
        registry.schemas(["search_kb", "refund_everything"])
    for allowlist in support_desk.allowlists().values():
        registry.schemas(allowlist)


def test_valid_arguments_reach_the_function_and_results_are_json() -> None:
    result = _call(ToolRegistry([find_customer]), "find_customer", {"name": "Ann", "tags": ["vip"], "limit": "2"})
    assert result.ok
    assert json.loads(result.content) == {"name": "Ann", "limit": 2, "region": None, "tags": ["vip"], "active": True}


def test_a_number_is_accepted_for_a_string_id() -> None:
    result = _call(support_desk.registry(), "lookup_order", {"order_id": 5002})
    assert result.ok and json.loads(result.content)["invoice_id"] == "INV-1002"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "name: field required"),
        ({"name": "Ann", "limit": "many"}, "limit: Input should be a valid integer"),
        ({"name": "Ann", "tier": "gold"}, "tier: Input should be 'free' or 'pro'"),
        ({"name": "Ann", "colour": "red"}, "unexpected argument 'colour'"),
        ('{"name": "Ann"}', "arguments must be a JSON object, got str"),
    ],
)
def test_invalid_arguments_become_an_error_result(arguments: object, expected: str) -> None:
    result = _call(ToolRegistry([find_customer]), "find_customer", arguments)
    assert not result.ok
    assert result.content.startswith("Error: invalid arguments for find_customer:")
    assert expected in result.content
    assert "Expected arguments: name (string, required), limit (integer)" in result.content


def test_every_problem_is_named_unexpected_then_missing_then_invalid() -> None:
    found = ToolRegistry([find_customer]).get("find_customer")
    assert found is not None
    _, problem = found.validate({"limit": "many", "colour": "red", "tier": "gold", "size": 3})
    assert problem is not None
    assert [part.split(":")[0] for part in problem.split("; ")] == [
        "unexpected argument 'colour'", "unexpected argument 'size'", "name", "limit", "tier"]
    # Any mapping is an object, not only a dict.
    assert found.validate(types.MappingProxyType({"name": "Ann", "limit": "2"})) == ({"name": "Ann", "limit": 2}, None)


def test_a_registry_that_adopts_another_holds_its_tools_and_registers_on_its_own() -> None:
    inner = support_desk.registry()
    view = ToolRegistry()
    view.adopt(inner)  # what the per-task durable view does
    assert view.names() == inner.names() and view.schemas() == inner.schemas()
    assert view.get("search_kb") is inner.get("search_kb")

    @tool
    def extra(note: str) -> str:
        """Only on the view."""
        return note

    view.register(extra)
    assert "extra" in view and "extra" not in inner


def test_an_exception_in_a_tool_becomes_an_error_result() -> None:
    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"cannot handle {reason}")

    result = _call(ToolRegistry([explode]), "explode", {"reason": "Mondays"})
    assert result == ToolResult("explode", False, "Error: tool explode failed: ValueError: cannot handle Mondays")


def test_a_slow_tool_times_out() -> None:
    @tool
    async def hang() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "unreachable"

    result = _call(ToolRegistry([hang]), "hang", {}, timeout_s=0.01)
    assert result == ToolResult("hang", False, "Error: tool hang timed out after 0.01 s.")


def test_a_tools_own_timeout_replaces_the_callers_limit_both_ways() -> None:
    @tool(timeout_s=0.01)
    async def hang() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "unreachable"

    @tool(timeout_s=30)
    async def slow_api() -> str:
        """Answers after longer than the caller's limit."""
        await asyncio.sleep(0.1)
        return "answered"

    # Its own, shorter limit ends it; the message names that limit, not the caller's.
    assert _call(ToolRegistry([hang]), "hang", {}, timeout_s=30) == ToolResult(
        "hang", False, "Error: tool hang timed out after 0.01 s.")
    # Its own, longer limit lets it answer past the caller's 10 ms.
    assert _call(ToolRegistry([slow_api]), "slow_api", {}, timeout_s=0.01) == ToolResult("slow_api", True, "answered")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), 10**400, 86_401, "30", True])
def test_a_timeout_that_is_not_a_positive_finite_number_of_seconds_is_refused(bad: object) -> None:
    with pytest.raises(ToolDefinitionError, match=r"timeout_s=.* is not a positive, finite number of seconds"):
        tool(name="lookup", timeout_s=bad, description="A lookup.")(lambda: "x")  # type: ignore[arg-type]


def test_an_inline_tool_with_a_timeout_is_refused_as_one_that_could_not_hold() -> None:
    def lookup() -> str:
        """A lookup in memory."""
        return "x"

    with pytest.raises(ToolDefinitionError, match="no timeout can interrupt it.*Drop inline=True"):
        tool(inline=True, timeout_s=5)(lookup)


def test_a_timeout_error_raised_by_the_tool_is_a_failure_not_our_timeout() -> None:
    @tool
    async def upstream() -> str:
        """Calls a slow upstream."""
        raise TimeoutError("upstream took too long")

    result = _call(ToolRegistry([upstream]), "upstream", {}, timeout_s=30)
    assert result.content == "Error: tool upstream failed: TimeoutError: upstream took too long"


def test_an_unknown_tool_is_an_error_result_naming_the_available_ones() -> None:
    result = _call(support_desk.registry(), "refund_everything", {})
    assert not result.ok
    assert "unknown tool 'refund_everything'" in result.content
    assert "'search_kb'" in result.content


def test_long_results_are_truncated() -> None:
    @tool
    def chatty() -> str:
        """Talks a lot."""
        return "x" * 100

    result = _call(ToolRegistry([chatty], max_result_chars=10), "chatty", {})
    assert result.content == "x" * 10 + "... [truncated, 100 characters in all]"


def test_async_tools_of_one_turn_run_concurrently() -> None:
    # Each tool waits until the other has started: run one after the other, the first
    # would wait for ever (and time out), so two ok results prove they overlapped.
    events: list[str] = []

    async def scenario() -> list[ToolResult]:
        flags = {"a": asyncio.Event(), "b": asyncio.Event()}

        @tool
        async def wait_for_peer(me: str, peer: str) -> str:
            """Rendezvous with a peer call."""
            events.append(f"start {me}")
            flags[me].set()
            await flags[peer].wait()
            events.append(f"end {me}")
            return me

        registry = ToolRegistry([wait_for_peer])
        calls = [("wait_for_peer", {"me": "a", "peer": "b"}), ("wait_for_peer", {"me": "b", "peer": "a"})]
        return await registry.call_many(calls, timeout_s=5)

    results = asyncio.run(scenario())
    assert [(r.ok, r.content) for r in results] == [(True, "a"), (True, "b")]
    assert events[:2] == ["start a", "start b"]
    assert sorted(events[2:]) == ["end a", "end b"]


def test_sync_tools_run_in_threads_and_overlap() -> None:
    # A barrier of two only opens when both calls are inside the function at once.
    barrier = threading.Barrier(2, timeout=5)

    @tool
    def blocking(label: str) -> str:
        """A blocking call."""
        barrier.wait()
        return label

    registry = ToolRegistry([blocking])
    results = asyncio.run(registry.call_many([("blocking", {"label": "x"}), ("blocking", {"label": "y"})], 10))
    assert [(r.ok, r.content) for r in results] == [(True, "x"), (True, "y")]


def test_an_inline_tool_runs_on_the_event_loops_thread_and_its_failure_is_a_result() -> None:
    threads: list[int] = []

    @tool(inline=True)
    def lookup(key: str) -> dict[str, str]:
        """A lookup in memory."""
        threads.append(threading.get_ident())
        if key == "bad":
            raise KeyError(key)
        return {"key": key}

    async def scenario() -> tuple[int, list[ToolResult]]:
        registry = ToolRegistry([lookup])
        results = await registry.call_many([("lookup", {"key": "a"}), ("lookup", {"key": "bad"})], 10)
        return threading.get_ident(), results

    loop_thread, results = asyncio.run(scenario())
    assert threads == [loop_thread, loop_thread]
    assert results == [ToolResult("lookup", True, '{"key": "a"}'),
                       ToolResult("lookup", False, "Error: tool lookup failed: KeyError: 'bad'")]


def test_inline_is_refused_for_an_async_tool_with_the_fix() -> None:
    async def fetch(url: str) -> str:
        """Fetches a page."""
        return url

    with pytest.raises(ToolDefinitionError, match=r"'fetch' is async; inline=True is for sync functions.*Drop inline=True"):
        tool(inline=True)(fetch)


def test_the_support_desk_lookups_are_inline_and_the_refund_is_not() -> None:
    registry = support_desk.registry()
    inline = {name: getattr(registry.get(name), "inline", None) for name in registry.names()}
    assert inline == {"lookup_account": True, "lookup_invoice": True, "lookup_order": True,
                      "refund_invoice": False, "search_kb": True}


def test_the_support_desk_app_reads_its_own_data_file() -> None:
    data = _APP_TOOLS.load_support_data()
    assert len(data["kb_articles"]) >= 8
    assert {"accounts", "orders", "invoices"} <= data.keys()


def test_demo_lookups() -> None:
    invoice = lookup_invoice(" INV-1002 ")
    assert isinstance(invoice, dict) and invoice["amount_paid"] == 2 * invoice["amount_due"]
    assert lookup_invoice("INV-9999") == "No invoice with id 'INV-9999' was found."
    order = lookup_order("#5001")
    assert isinstance(order, dict) and order["invoice_id"] == "INV-1001"
    account = lookup_account("Aisha.Rahman@Example.NET")
    assert isinstance(account, dict) and account["status"] == "locked"
    assert "No account" in str(lookup_account("nobody@example.com"))


def test_demo_lookups_return_copies() -> None:
    invoice = lookup_invoice("INV-1001")
    assert isinstance(invoice, dict)
    invoice["charges"].clear()
    assert lookup_invoice("INV-1001")["charges"]


def test_knowledge_base_search_ranks_by_relevance() -> None:
    found = search_kb("The app crashes on login after the update")
    assert found[0]["id"] == "KB-201"
    assert [a["id"] for a in search_kb("I was charged twice", category="billing")][:1] == ["KB-102"]
    assert all(a["id"].startswith("KB-3") for a in search_kb("password reset locked", category="account"))
    assert len(search_kb("invoice refund charged payment card", limit=1)) == 1
    assert search_kb("zebra xylophone") == []
