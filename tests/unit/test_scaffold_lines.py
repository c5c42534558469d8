"""`agentstream new agent` adds lines to the topology and changes none of its own
(scaffold.with_agent, yaml_lines.py): a ruamel round trip re-wrapped flow lists,
re-indented sequences, moved a comment after an anchor and dropped an anchor only a
commented example used. No I/O: the topology is text."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from agentstream.errors import ConfigurationError
from agentstream.scaffold import routed_with, with_agent
from agentstream.topology import parse_topology

TOPOLOGY = """\
prefix: docs
default_partitions: 3
replication_factor: 1
topics:
  tasks: {suffix: tasks.v1}
  specialist.{type}: {suffix: "specialist.{type}.v1"}
  supervisor: {suffix: supervisor.v1}
  results: {suffix: results.v1}
  task_events: {suffix: task-events.v1}
  control: {suffix: control.v1}
  dlq: {suffix: dlq.v1, per_session: false}
changelogs: {min.compaction.lag.ms: 0, max.compaction.lag.ms: 604800000, segment.ms: 3600000,
             delete.retention.ms: 604800000, min.cleanable.dirty.ratio: 0.25}
agents:
  router:
    kind: router
    group: router
    input: tasks
    tables: [dedupe, sessions, retrying, parked]
    routing:
      default: billing
      rules:
        billing: ['invoices?', 'refunds?',
                  'payments?']   # a flow list over two lines
      # a comment of what follows the rules
      descriptions:
        billing: invoices and refunds
  billing:
    kind: specialist
    group: specialist.billing
    input: specialist.billing
    tables: [checkpoints, retrying, parked]
    tools: [search_kb]
    max_steps: 4
    model: &billing_model      # the candidate below would merge it
      models: {standard: "scripted:default"}
      scripted:
        - {call: search_kb, argument: query}
    # candidate:
    #   model: {<<: *billing_model, system_prompt_file: prompts/v2.md}
  supervisor:
    kind: supervisor
    group: supervisor
    input: supervisor
    tables: [pending, dedupe, retrying, parked]
retry:
  delays_s: [5]
  max_attempts: 2

# the end of the file
"""


def _removed(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line.startswith("- ")]


def test_every_line_of_the_topology_stays_and_the_agent_routing_and_description_are_added() -> None:
    after = with_agent(TOPOLOGY, "shipping", "tools_shipping.py", "shipping_lookup")
    assert _removed(TOPOLOGY, after) == []
    assert "    model: &billing_model      # the candidate below would merge it" in after.splitlines()
    topology = parse_topology(yaml_text=after, source=Path("app/topology.yaml"))
    assert "shipping" in topology.specialist_types
    routing = topology.agent("router").routing
    assert routing is not None and "shipping" in routing.rules and "shipping" in routing.descriptions
    added = [line[2:] for line in difflib.ndiff(TOPOLOGY.splitlines(), after.splitlines()) if line.startswith("+ ")]
    assert added[:2] == ["        shipping: [shipping]", "        shipping: what the shipping agent handles (edit this line)"]
    assert added[2] == "  # added by `agentstream new agent shipping`" and added[3] == "  shipping:"
    assert '      models: {standard: "scripted:default"}' in added, "the first specialist's models, quoted as written"
    assert after.endswith("# the end of the file\n")


def test_a_name_another_agents_rule_matches_is_reported() -> None:
    after = with_agent(TOPOLOGY, "refunds", "tools_refunds.py", "refunds_lookup")
    assert routed_with(parse_topology(yaml_text=after, source=Path("app/topology.yaml")), "refunds") == ("billing",)
    other = with_agent(TOPOLOGY, "shipping", "tools_shipping.py", "shipping_lookup")
    assert routed_with(parse_topology(yaml_text=other, source=Path("app/topology.yaml")), "shipping") == ()


def test_a_routing_without_rules_gets_them() -> None:
    lines = [line for line in TOPOLOGY.splitlines() if "rules:" not in line and "invoices?" not in line
             and "payments?']" not in line]
    before = "\n".join(lines) + "\n"
    after = with_agent(before, "shipping", "tools_shipping.py", "shipping_lookup")
    assert _removed(before, after) == []
    routing = parse_topology(yaml_text=after, source=Path("app/topology.yaml")).agent("router").routing
    assert routing is not None and list(routing.rules) == ["shipping"]


def test_agents_in_flow_style_are_refused_with_the_fix() -> None:
    flow = "version: 1\nagents: {router: {kind: router}}\n"
    with pytest.raises(ConfigurationError, match=r"`agents:` is not a block-style mapping.*one per entry"):
        with_agent(flow, "shipping", "tools_shipping.py", "shipping_lookup")


def test_an_agent_of_that_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="has an agent 'billing' already"):
        with_agent(TOPOLOGY, "billing", "tools_billing.py", "billing_lookup")


def test_a_last_rule_written_as_a_block_list_at_its_keys_column_keeps_its_items() -> None:
    block = TOPOLOGY.replace("""        billing: ['invoices?', 'refunds?',
                  'payments?']   # a flow list over two lines
""", """        billing:
        - invoices?
        - refunds?
""")
    after = with_agent(block, "shipping", "tools_shipping.py", "shipping_lookup")
    assert _removed(block, after) == []
    routing = parse_topology(yaml_text=after, source=Path("app/topology.yaml")).agent("router").routing
    assert routing is not None and set(routing.rules) == {"billing", "shipping"}


def test_a_file_with_crlf_line_ends_keeps_them() -> None:
    crlf = TOPOLOGY.replace("\n", "\r\n")
    after = with_agent(crlf, "shipping", "tools_shipping.py", "shipping_lookup")
    assert after.count("\n") == after.count("\r\n") and _removed(crlf, after) == []
