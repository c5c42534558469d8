"""Cancellation of a task (README "Cancellation"): the TaskCancel record on the
``control`` topic, the helper that produces it, and the stop the agent loop raises.

Who acts on a cancel: the router cancels a task still queued behind its session's open
task (or not routed yet) and publishes its CANCELED result; a specialist stops a running
loop at its next step boundary, or drops a wait for approval, and reports the cancel to
the supervisor, which publishes the one CANCELED result.
"""

from agentstream.cancellation.ops import CancelRefused, cancel_task, find_task, send_cancel
from agentstream.cancellation.records import CANCELED, TaskCanceled, cancel_error, cancel_record, cancel_text, is_canceled

__all__ = [
    "CANCELED", "CancelRefused", "TaskCanceled", "cancel_error", "cancel_record", "cancel_task", "cancel_text",
    "find_task", "is_canceled", "send_cancel",
]
