"""Counters a processor keeps about itself."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ProcessorStats:
    processed: int = 0
    failed: int = 0
    checkpoints: int = 0
    restored_records: int = 0
    expired: int = 0  # table entries deleted for their age (runtime/expiry.py)
    last_checkpoint_at: float = 0.0
    tier_pauses: int = 0  # retry-tier partitions paused at their end (runtime/idle_partitions.py)
    quiet_pauses: int = 0  # other inputs paused at their end after a quiet spell (ditto)
    partition_resumes: int = 0  # ... either resumed: a record sent to one, or its end passed the pause
    failures_by_type: dict[str, int] = field(default_factory=dict)
