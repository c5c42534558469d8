"""The ``agentstream rollout`` actions: set-weight, report and watch."""

from __future__ import annotations

import argparse
import getpass
import logging
from collections.abc import Callable

from agentstream.errors import ConfigurationError
from agentstream.rollout.control import check_canary, control_record, read_controls, send_control
from agentstream.rollout.report import build_report, candidate_types, format_report, read_window
from agentstream.rollout.watch import Watcher
from agentstream.serde import SchemaSet
from agentstream.topology import Topology

log = logging.getLogger(__name__)


def run_command(args: argparse.Namespace, bootstrap: str, topology: Topology) -> int:
    schemas = SchemaSet.load()
    if args.action == "set-weight":
        check_canary(topology, args.agent)
        previous = read_controls(bootstrap, topology, schemas).get(args.agent)  # its last rollback is kept
        record = control_record(args.agent, args.weight, args.reason, args.who or getpass.getuser(), previous=previous)
        send_control(bootstrap, topology, schemas, record)
        print(f"{args.agent}: canary weight {args.weight:g} (every router applies it as it reads the rollout topic)")
        return 0
    types = candidate_types(topology)
    if args.agent is not None and args.agent not in types:
        raise ConfigurationError(f"{args.agent!r} has no candidate in the topology; types with one: {types or 'none'}.")
    records = read_window(bootstrap, topology, schemas, args.window)
    controls = read_controls(bootstrap, topology, schemas) if "rollout" in topology.topics else {}
    reports = [build_report(topology, t, records, controls) for t in ([args.agent] if args.agent else types)]
    print(format_report(reports, args.window))
    return 0


def run_watch(args: argparse.Namespace, bootstrap: str, topology: Topology, stopping: Callable[[], bool]) -> int:
    watcher = Watcher(bootstrap, topology, SchemaSet.load(), args.window)
    if not watcher.types:
        raise ConfigurationError("No specialist in the topology declares a canary candidate; nothing to watch.")
    watcher.run(args.interval, stopping)
    log.info("rollout watch stopped")
    return 0
