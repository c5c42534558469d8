"""The stream-processor runtime: confluent-kafka consumers, RocksDB tables with
compacted changelogs, and a commit order that never covers an unacknowledged write."""

from __future__ import annotations

from agentstream.runtime.context import MessageContext
from agentstream.runtime.delivery_pump import new_serving_loop
from agentstream.runtime.errors import CheckpointError, HandlerError, ProcessorError
from agentstream.runtime.lag import PartitionLag, consumer_lag
from agentstream.runtime.processor import Processor
from agentstream.runtime.table import Table

__all__ = [
    "CheckpointError",
    "HandlerError",
    "MessageContext",
    "PartitionLag",
    "Processor",
    "ProcessorError",
    "Table",
    "consumer_lag",
    "new_serving_loop",
]
