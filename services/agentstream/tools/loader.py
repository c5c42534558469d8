"""Tools from the user's own modules, named in the topology.

An app names its tools modules in the topology (``tools_modules`` at the top level for
every specialist, or on one agent type). Each entry is either a file of the app folder
(``tools.py``, a path relative to the topology file) or a dotted module name importable
from the app folder or the environment (``mycompany.support.tools``). Every ``@tool``
function defined at the top level of those modules is registered; the agent type's
``tools`` list is still the allowlist of what its model may call.

Imported once, at the worker's start-up, so a broken module stops the worker with the
reason instead of failing its first task.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from agentstream.errors import ConfigurationError
from agentstream.tools.registry import Tool, ToolRegistry


def load_tools(modules: Sequence[str], app_dir: Path | None) -> ToolRegistry:
    """A registry of every ``@tool`` of ``modules`` (see the module docstring)."""
    registry = ToolRegistry()
    origin: dict[str, str] = {}
    for entry in modules:
        found = tools_of(import_tools_module(entry, app_dir))
        if not found:
            raise ConfigurationError(
                f"Tools module {entry!r} defines no tool; decorate its functions with "
                "agentstream.tools.tool (from agentstream.tools import tool)."
            )
        for found_tool in found:
            if found_tool.name in origin:
                raise ConfigurationError(
                    f"Tool {found_tool.name!r} is defined in both {origin[found_tool.name]!r} and {entry!r}; "
                    "rename one (@tool(name=...)) or list only one of the modules."
                )
            origin[found_tool.name] = entry
            registry.register(found_tool)
    return registry


def check_allowlist(agent_type: str, allowlist: Iterable[str], registry: ToolRegistry, modules: Sequence[str]) -> None:
    """Every tool an agent type may call must exist, or the worker does not start."""
    missing = sorted(set(allowlist) - set(registry.names()))
    if missing:
        where = f"the tools modules {list(modules)}" if modules else "no tools module (tools_modules is empty)"
        raise ConfigurationError(
            f"Agent {agent_type!r} allows tools {missing} that {where} do not define; "
            f"defined are {sorted(registry.names())}. Fix the agent's `tools` list or add the "
            "module that defines them to `tools_modules` in the topology."
        )


def import_tools_module(entry: str, app_dir: Path | None) -> ModuleType:
    if entry.endswith(".py"):
        return _import_file(Path(entry) if app_dir is None else app_dir / entry)
    if app_dir is not None and str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))  # so an app's module and its siblings import by name
    try:
        return importlib.import_module(entry)
    except ImportError as exc:
        raise ConfigurationError(
            f"Cannot import tools module {entry!r}: {exc}. Name a module importable from the app "
            f"folder {app_dir} or the environment, or a .py file of the app folder."
        ) from exc


def tools_of(module: ModuleType) -> list[Tool]:
    """The tools a module defines at its top level, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, Tool)]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigurationError(f"Tools module file {path} does not exist; fix `tools_modules` in the topology.")
    # A name of its own per file, so two apps' tools.py never replace each other.
    name = f"agentstream_app_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"Cannot load tools module file {path}; is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigurationError(f"Tools module file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module
