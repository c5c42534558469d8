"""The runtime imports no app: no module under services/agentstream imports examples/ or
a demo module, or names a tool of the example apps (they live in their folders)."""

from __future__ import annotations

import ast
from pathlib import Path

from agentstream.tools.loader import load_tools
from agentstream.topology import load_topology
from tests import support_desk

SERVICES = Path(__file__).resolve().parents[2] / "services" / "agentstream"
EXAMPLES = support_desk.APP.parent
FORBIDDEN_MODULES = ("examples", "tools", "agentstream.tools.demo", "agentstream.demo_tools")


def _modules() -> list[Path]:
    return sorted(SERVICES.rglob("*.py"))


def _app_names() -> set[str]:
    """Every tool of every example app: the names the runtime must never spell."""
    names: set[str] = set()
    for topology_file in EXAMPLES.glob("*/topology.yaml"):
        topology = load_topology(topology_file)
        names.update(load_tools(topology.tools_modules, topology.app_dir()).names())
    return names


def _imports(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def _identifiers(tree: ast.AST) -> set[str]:
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {alias.asname or alias.name for node in ast.walk(tree)
              if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    return names


def test_the_example_apps_define_the_tools_this_test_looks_for() -> None:
    # Guards the guard: with no names to look for, the test below could not fail.
    assert {"lookup_invoice", "search_kb", "find_clause"} <= _app_names()
    assert len(_modules()) > 50


def test_no_module_under_services_imports_an_app_or_names_its_tools() -> None:
    app_names = _app_names()
    offenders: list[str] = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(SERVICES.parent)
        offenders += [f"{where} imports {name}" for name in _imports(tree)
                      if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_MODULES)]
        offenders += [f"{where} names the app tool {name}" for name in sorted(_identifiers(tree) & app_names)]
    assert offenders == [], "services/ must not depend on an app (apps live in examples/):\n" + "\n".join(offenders)
