"""Which version a session's tasks go to: a stable hash of the session id against the weight.

Pure, so every router replica (and a restarted one) puts a session on the same version,
and each of a session's tasks on the one version its first went to while the weight
stands. The bucket does not depend on the weight: raising it only adds sessions to the
candidate, lowering it only moves sessions back to live (a rollback to 0 moves them all).
"""

from __future__ import annotations

import hashlib

_BUCKET_BYTES = 8  # 64 bits: far finer than any weight anyone sets
_SCALE = float(1 << (8 * _BUCKET_BYTES))


def session_bucket(agent_type: str, session_id: str) -> float:
    """The session's place in [0, 1) for ``agent_type``. SHA-256 rather than Python's
    ``hash``: that one is salted per process, so two routers would disagree. The agent
    type is in the input so a session's draws for two agent types are independent."""
    digest = hashlib.sha256(f"{agent_type}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:_BUCKET_BYTES], "big") / _SCALE


def takes_candidate(agent_type: str, session_id: str, weight: float) -> bool:
    """Whether the session's tasks for ``agent_type`` go to the candidate at ``weight``."""
    return weight > 0 and session_bucket(agent_type, session_id) < weight
