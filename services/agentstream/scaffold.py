"""``agentstream new agent NAME``: a new specialist in an app folder, ready to run.

It adds three things and touches nothing else:
- an entry under ``agents:`` of the app's ``topology.yaml`` (its own group and input
  topic from the ``specialist.{type}`` template, the usual tables, an allowlist naming
  the example tool, the prompt file, a ScriptedModel rule calling the example tool) and a
  routing rule and description for it;
- ``tools_<name>.py``: one example ``@tool`` to replace with real ones;
- ``prompts/<name>.md``: the system prompt.

The topology gets new lines only (yaml_lines.py): every line it had stays as it was, its
comments, anchors and wrapping too (PyYAML would drop every comment of a file people read;
a ruamel.yaml round trip keeps them but rewrites the rest in its own style).
The result is loaded and checked like any topology before anything is written; nothing
is written if a file already exists or the check fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from agentstream import yaml_lines
from agentstream.errors import ConfigurationError
from agentstream.router.decide import Rules
from agentstream.topology import APP_TOPOLOGY_FILE, Topology, parse_topology

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


@dataclass(frozen=True)
class NewAgent:
    """What ``add_agent`` wrote, for the command to print."""

    topology_path: Path
    tools_path: Path
    prompt_path: Path
    tool_name: str
    # Other agent types whose routing rules match the new agent's name: a task naming it
    # goes to them as well (the rules fan out), which the command points out.
    also_routed: tuple[str, ...] = ()


def add_agent(app_dir: Path, name: str) -> NewAgent:
    """Add specialist ``name`` to the app in ``app_dir`` (see the module docstring)."""
    _check_name(name)
    topology_path = app_dir / APP_TOPOLOGY_FILE
    if not topology_path.is_file():
        raise ConfigurationError(f"No topology.yaml in {app_dir}; pass the app folder with --app DIR.")
    tools_path, prompt_path = app_dir / f"tools_{name}.py", app_dir / "prompts" / f"{name}.md"
    for path in (tools_path, prompt_path):
        if path.exists():
            raise ConfigurationError(f"{path} exists already; remove it or choose another agent name.")
    tool_name = f"{name}_lookup"
    text = with_agent(topology_path.read_text(encoding="utf-8"), name, tools_path.name, tool_name)
    topology = parse_topology(yaml_text=text, source=topology_path)  # refuses before anything is written
    prompt_path.parent.mkdir(parents=True, exist_ok=True)
    tools_path.write_text(_TOOLS_TEMPLATE.format(name=name, tool=tool_name), encoding="utf-8")
    prompt_path.write_text(_PROMPT_TEMPLATE.format(name=name), encoding="utf-8")
    topology_path.write_text(text, encoding="utf-8")
    return NewAgent(topology_path, tools_path, prompt_path, tool_name, routed_with(topology, name))


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigurationError(
            f"Agent name {name!r} is not usable: use lower-case letters, digits and _ (a letter first, "
            "at most 31 characters), e.g. 'refunds'; it becomes part of topic and group names."
        )


def with_agent(topology_text: str, name: str, tools_file: str, tool_name: str) -> str:
    """The topology's text with specialist ``name`` added: new lines at the end of
    ``agents:``, of the router's ``routing.rules`` and ``routing.descriptions``; every line
    it had stays as it was (yaml_lines.py)."""
    document = yaml_lines.load(topology_text)
    agents = document.get("agents") if isinstance(document, dict) else None
    if not isinstance(agents, dict):
        raise ConfigurationError("The topology has no `agents:` mapping to add the agent to.")
    if name in agents:
        raise ConfigurationError(f"The topology has an agent {name!r} already; choose another name.")
    lines = topology_text.splitlines()
    entry = [f"# added by `agentstream new agent {name}`", *yaml_lines.render({name: _entry(agents, name, tools_file, tool_name)})]
    inserts = [yaml_lines.insert_after_last_entry(lines, agents, entry, "`agents:`")]
    router = next((a for a in agents.values() if isinstance(a, dict) and a.get("kind") == "router"), None)
    routing = router.get("routing") if router is not None else None
    if isinstance(routing, dict):  # a router without one is refused by the check anyway
        rule = yaml_lines.render({name: _flow([re.escape(name)])})
        if "rules" in routing:
            inserts.append(yaml_lines.insert_after_last_entry(lines, routing["rules"], rule, "`routing.rules`"))
        else:
            nested = ["rules:", *(f"  {line}" for line in rule)]
            inserts.append(yaml_lines.insert_after_last_entry(lines, routing, nested, "`routing`"))
        if "descriptions" in routing:
            described = yaml_lines.render({name: f"what the {name} agent handles (edit this line)"})
            inserts.append(yaml_lines.insert_after_last_entry(lines, routing["descriptions"], described,
                                                              "`routing.descriptions`"))
    return yaml_lines.with_inserted(topology_text, inserts)


def routed_with(topology: Topology, name: str) -> tuple[str, ...]:
    """The other agent types a task that names ``name`` is routed to by the rules."""
    routing = topology.agent("router").routing
    if routing is None:
        return ()
    return tuple(t for t in Rules.from_settings(routing).route(name, None, topology.specialist_types) if t != name)


def _entry(agents: Any, name: str, tools_file: str, tool_name: str) -> CommentedMap:
    specialist = next((a for a in agents.values() if isinstance(a, dict) and a.get("kind") == "specialist"), None)
    entry = CommentedMap()
    entry["kind"] = "specialist"
    entry["group"] = f"specialist.{name}"
    entry["input"] = f"specialist.{name}"
    entry["tables"] = _flow(["checkpoints", "retrying", "parked"])
    entry["tools"] = _flow([tool_name])
    entry["tools_modules"] = _flow([tools_file])
    entry["max_steps"] = 6
    entry["model"] = _model_of(specialist, name, tool_name)
    return entry


def _model_of(specialist: Any, name: str, tool_name: str) -> CommentedMap:
    """The new agent's model settings: the first specialist's models, else scripted, and
    a rule making the offline ScriptedModel call the example tool with the task's text."""
    model = CommentedMap()
    models = specialist.get("model", {}).get("models") if isinstance(specialist, dict) else None
    copied = CommentedMap(models if models else {"standard": "scripted:default"})  # a copy: no YAML alias
    copied.fa.set_flow_style()
    model["models"] = copied
    model["system_prompt_file"] = f"prompts/{name}.md"
    rule = CommentedMap({"call": tool_name, "argument": "query"})
    rule.fa.set_flow_style()
    model["scripted"] = CommentedSeq([rule])
    return model


def _flow(items: list[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()  # [a, b] on one line, like the rest of the file
    return seq


_TOOLS_TEMPLATE = '''"""The {name} agent's tools: plain typed functions, no Kafka code.

The topology names this file in the agent's `tools_modules`; its `tools` list is the
allowlist of what the model may call. Replace the example with real tools.
"""

from __future__ import annotations

from agentstream.tools import tool


@tool
def {tool}(query: str) -> str:
    """Look something up for the {name} agent (an example: replace it).

    Args:
        query: What to look up.
    """
    return f"No {name} records match {{query!r}} yet: this tool is an example."
'''

_PROMPT_TEMPLATE = """You are the {name} agent. Look facts up with your tools before you answer,
quote what they returned, and say plainly what you could not verify.
"""
