"""Tools from the modules a topology names: registered, checked against allowlists, and
every mistake named with its fix."""

from __future__ import annotations

import pytest

from agentstream.errors import ConfigurationError
from agentstream.tools.loader import check_allowlist, load_tools
from tests.support_desk import APP

DEMO = "tools.py"  # the support-desk example's tools module, a file of its app folder


def test_every_tool_of_a_named_module_is_registered() -> None:
    registry = load_tools([DEMO], APP)
    assert sorted(registry.names()) == ["lookup_account", "lookup_invoice", "lookup_order", "refund_invoice", "search_kb"]


def test_a_module_that_does_not_import_is_named_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"Cannot import tools module 'no_such_tools_module'.*\.py file of the app folder"):
        load_tools(["no_such_tools_module"], None)


def test_a_module_without_tools_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"'json' defines no tool; decorate its functions"):
        load_tools(["json"], None)


def test_a_tool_defined_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"'lookup_invoice' is defined in both 'tools.py' and 'tools.py'"):
        load_tools([DEMO, DEMO], APP)


def test_an_allowlist_naming_a_missing_tool_stops_the_worker() -> None:
    registry = load_tools([DEMO], APP)
    check_allowlist("billing", ["lookup_invoice"], registry, [DEMO])
    with pytest.raises(ConfigurationError, match=r"Agent 'billing' allows tools \['refund'\] that the tools modules"):
        check_allowlist("billing", ["lookup_invoice", "refund"], registry, [DEMO])
    with pytest.raises(ConfigurationError, match=r"no tools module \(tools_modules is empty\)"):
        check_allowlist("billing", ["refund"], load_tools([], None), [])
