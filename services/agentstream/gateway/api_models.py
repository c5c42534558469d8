"""The request and response bodies of the gateway's API: the OpenAPI document is generated
from these, so every field carries its limits and a description."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_INPUT_BYTES = 32_768  # the router's own limit (WorkerSettings.max_input_bytes): a longer input is REJECTED there
MAX_METADATA_ENTRIES = 32
MAX_METADATA_CHARS = 512  # per key and per value
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


MetadataText = Annotated[str, StringConstraints(max_length=MAX_METADATA_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt field is a 422, not ignored


class TaskRequest(_Body):
    input: str = Field(min_length=1, max_length=MAX_INPUT_BYTES, description="The task's text (at most 32 KiB as UTF-8).")
    session_id: str | None = Field(None, pattern=_ID_PATTERN,
                                   description="The session (tasks of one session run in order); default: one per task.")
    agent: str | None = Field(None, description="Skip classification: a specialist type of the topology.")
    metadata: dict[MetadataText, MetadataText] = Field(default_factory=dict, max_length=MAX_METADATA_ENTRIES,
                                     description="Free key/value pairs carried with the task.")
    budget_usd: float | None = Field(None, ge=0, le=1000, description="A cost cap for this task.")


    @field_validator("input")
    @classmethod
    def _fits_the_router(cls, value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > MAX_INPUT_BYTES:
            raise ValueError(f"is {size} bytes as UTF-8; the pipeline takes at most {MAX_INPUT_BYTES}")
        return value


class Links(BaseModel):
    self: str
    events: str
    cancel: str


class TaskAccepted(BaseModel):
    task_id: str
    session_id: str
    links: Links
    repeated: bool = Field(description="True when the Idempotency-Key named a task submitted before.")


class TaskResultBody(BaseModel):
    status: str
    output: str | None
    error: dict[str, str] | None
    agents: list[str]


class Timings(BaseModel):
    submitted_at: int | None
    routed_at: int | None
    first_event_at: int | None
    completed_at: int | None
    duration_ms: int | None


class TaskStatus(BaseModel):
    task_id: str
    session_id: str | None
    state: str = Field(description="SUBMITTED, QUEUED, RUNNING, WAITING_INPUT, ... or a terminal state.")
    route: list[str]
    requested_agent: str | None
    metadata: dict[str, str]
    events: int
    result: TaskResultBody | None
    usage: dict[str, Any] | None
    cost_usd: float
    timings: Timings


class ApprovalDecisionRequest(_Body):
    decision: Literal["approve", "deny", "edit"]
    arguments: dict[str, Any] | None = Field(None, description="edit: the arguments the tool runs with instead.")
    reason: str = Field("", max_length=2000, description="Why (the model reads a denial's reason).")


class ApprovalDecided(BaseModel):
    approval_id: str
    task_id: str
    decision: str
    who: str


class PendingApproval(BaseModel):
    approval_id: str
    task_id: str
    session_id: str
    agent_type: str
    tool: str
    arguments_json: str
    input: str
    answer_so_far: str | None
    tool_description: str
    requested_at: int
    deadline: int
    approvers: str


class CancelRequest(_Body):
    reason: str = Field("", max_length=2000, description="Why (kept in the cancel and the result's error).")


class CancelAccepted(BaseModel):
    task_id: str
    requested_by: str


class DeadLetterSummary(BaseModel):
    """A dead letter as `agentstream dlq list` shows it (retry/dlq_ops.py)."""

    id: str
    dead_lettered_at: int
    stage: str
    error_class: str
    error_type: str
    error_message: str
    attempts: int
    task_id: str | None
    session_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    value_truncated: bool


class DeadLetterDetail(DeadLetterSummary):
    text: str = Field(description="Everything the letter holds, its event decoded: `agentstream dlq show`'s text.")


class DeadLetterReplayed(BaseModel):
    id: str
    topic: str
    partition: int


class Problem(BaseModel):
    """Every error: a machine-readable ``code`` and a sentence saying what to do."""

    code: str
    message: str
