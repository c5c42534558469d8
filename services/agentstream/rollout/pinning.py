"""A routed task stays on the version it was first sent to: the version is pinned in the
session's open entry when the task is let go, and every later send reads the pin.

Why: the router sends a session's open task again after a rebalance (a crash may have
lost the routed records while the session's record survived). Choosing the version then
from the weight of the moment would, after a weight change, send the task to the other
version too; the two groups keep separate checkpoints and dedupe tables, so both would
run it. The pin is written with the record, before the routed records are sent, so a
re-send goes where the first send went. A revision goes back to the version that ran the
task by the specialist result's ``variant`` (topology.version_topic), not by the pin.

Pure: the router (router/app.py) calls these on the entry before writing the record.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import Any

from agentstream.rollout.config import CANARY, LIVE, VARIANT_SUFFIX
from agentstream.rollout.split import takes_candidate

VERSIONS = "versions"  # the open entry's field: {agent_type: "candidate" | "live"}, canary types only
CANDIDATE = VARIANT_SUFFIX[CANARY]


def pin(decided: MutableMapping[str, Any], canaries: Collection[str], weight: Callable[[str], float]) -> None:
    """Record, in place, which version each canary type of ``decided``'s route gets, from
    the weights now. An entry pinned already keeps its pins; an entry whose route is not
    decided yet (a router model decides it later) is pinned once it is."""
    route = decided.get("route")
    if route is None or VERSIONS in decided:
        return
    session_id = decided["task"]["session_id"]
    decided[VERSIONS] = {
        agent_type: CANDIDATE if takes_candidate(agent_type, session_id, weight(agent_type)) else LIVE
        for agent_type in route if agent_type in canaries
    }


def pinned_variant(decided: Mapping[str, Any], agent_type: str) -> str | None:
    """The variant ``agent_type``'s copy of the task goes to: "candidate" when pinned so,
    else None (live). An entry without pins was let go while the router had no canary
    (e.g. before the candidate was added to the topology): it went to live, so it goes
    there again."""
    return CANDIDATE if (decided.get(VERSIONS) or {}).get(agent_type) == CANDIDATE else None
