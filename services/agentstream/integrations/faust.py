"""faust-streaming integration: an Avro codec and records for our events.

Existing faust apps can consume ``agents.results.v1`` and produce ``agents.tasks.v1``
in the wire format of the contract (Avro single-object encoding, see
``agentstream.serde``) without writing any Avro code::

    from agentstream.integrations.faust import AvroEventCodec, TaskResultRecord

    results = app.topic(
        topology.topic("results"),
        key_type=str,
        value_type=TaskResultRecord,  # or leave it out to get plain dicts
        value_serializer=AvroEventCodec("TaskResult"),
    )

or, by name, after one explicit ``register_codecs()`` call at start-up:
``value_serializer="agentstream.TaskResult"``. Importing this module registers nothing.

Values are Avro's physical types: timestamps are ``int`` epoch milliseconds, enums
are their symbol as ``str``. Decoding failures raise the typed errors of
``agentstream.serde`` (faust wraps them in its ``ValueDecodeError``, with ours as the
cause).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, List, Optional  # noqa: UP035 - faust Records resolve these at runtime

try:
    from faust import Record
    from faust.serializers import codecs as faust_codecs
    from faust.types.codecs import CodecT
    from faust.types.models import ModelT
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        f"agentstream.integrations.faust needs faust-streaming ({exc}); "
        "install it with: pip install 'agentstream[faust]'",
        name=exc.name,
    ) from exc

from agentstream.serde import EncodeError, SchemaSet

__all__ = [
    "CODEC_PREFIX",
    "AvroEventCodec",
    "TaskErrorRecord",
    "TaskResultRecord",
    "TaskSubmittedRecord",
    "SupervisorReviewRecord",
    "UsageRecord",
    "codec_name",
    "register_codecs",
]

# Codec names in faust's registry are "<prefix><schema name>", e.g. "agentstream.TaskResult".
CODEC_PREFIX = "agentstream."
# The key faust adds to a Record's representation to name its class (include_metadata).
_FAUST_METADATA_KEY = "__faust"


def codec_name(schema_name: str) -> str:
    """The name ``register_codecs`` gives the codec of ``schema_name``."""
    return CODEC_PREFIX + schema_name


class AvroEventCodec(faust_codecs.Codec):
    """A faust codec writing and reading one of our schemas in single-object encoding.

    ``dumps`` takes a dict or a faust Record; ``loads`` returns a dict (faust turns it
    into the topic's ``value_type`` Record when one is set). Bytes written with another
    schema raise ``WrongSchemaError``; bytes that are not Avro raise ``NotAvroError``.
    """

    def __init__(
        self,
        schema_name: str,
        schemas: SchemaSet | None = None,
        *,
        children: tuple[CodecT, ...] | None = None,
    ) -> None:
        schemas = schemas if schemas is not None else SchemaSet.load()
        schemas.fingerprint(schema_name)  # an unknown name fails here, not at the first message
        # faust's Codec.clone() rebuilds a codec from these keyword arguments.
        super().__init__(children=children, schema_name=schema_name, schemas=schemas)
        self.schema_name = schema_name
        self.schemas = schemas

    def _dumps(self, obj: Any) -> bytes:
        record = _plain(obj)
        if not isinstance(record, Mapping):
            raise EncodeError(
                f"Cannot encode a {type(obj).__name__} as {self.schema_name}: "
                "pass a dict or a faust Record with the schema's fields."
            )
        return self.schemas.encode(self.schema_name, record)

    def _loads(self, s: bytes) -> Any:
        return self.schemas.decode_as(self.schema_name, s)

    def __repr__(self) -> str:
        return f"AvroEventCodec({self.schema_name!r})" + "".join(f" | {child!r}" for child in self.children)


def register_codecs(schemas: SchemaSet | None = None) -> dict[str, AvroEventCodec]:
    """Register one codec per schema in faust's registry, as ``agentstream.<Schema>``.

    Call it once at start-up, before faust serializes anything by codec name. Returns
    the codecs by registered name. Calling it again replaces the earlier codecs.
    """
    schemas = schemas if schemas is not None else SchemaSet.load()
    registered = {codec_name(name): AvroEventCodec(name, schemas) for name in schemas.names}
    for name, codec in registered.items():
        faust_codecs.register(name, codec)
    return registered


def _plain(value: Any) -> Any:
    """``value`` with faust Records turned into dicts, all the way down.

    ``Record.asdict()`` is shallow (nested Records stay objects) and faust adds its
    ``__faust`` class tag to a Record's representation; Avro wants neither.
    """
    if isinstance(value, ModelT):
        value = value.asdict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if k != _FAUST_METADATA_KEY}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- Records mirroring schemas/*.avsc (a unit test keeps the field names in step) -------
# include_metadata=False: no "__faust" tag in the representation. Optional/Dict/List
# rather than newer syntax, because faust inspects the annotations at class creation.


class UsageRecord(Record, include_metadata=False, namespace="agentstream.v1.Usage"):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    tool_calls: int = 0
    retries: int = 0


class TaskErrorRecord(Record, include_metadata=False, namespace="agentstream.v1.TaskError"):
    code: str
    message: str


class SupervisorReviewRecord(Record, include_metadata=False, namespace="agentstream.v1.SupervisorReview"):
    verdict: str  # publish or escalate (revise from writers before revisions were carried out)
    feedback: str = ""
    confidence: float = 0.0
    model: str = ""
    revisions: int = 0  # times the task was sent back to a specialist before this verdict


class TaskSubmittedRecord(Record, include_metadata=False, namespace="agentstream.v1.TaskSubmitted"):
    task_id: str
    session_id: str
    tenant_id: str
    input: str
    submitted_at: int  # epoch milliseconds
    requested_agent: Optional[str] = None  # noqa: UP045
    metadata: Optional[Dict[str, str]] = None  # noqa: UP006, UP045 - None becomes a fresh {}
    budget_usd: Optional[float] = None  # noqa: UP045

    def __post_init__(self) -> None:
        # A {} default would be one dict shared by every instance.
        if self.metadata is None:
            self.metadata = {}


class TaskResultRecord(Record, include_metadata=False, namespace="agentstream.v1.TaskResult"):
    task_id: str
    session_id: str
    tenant_id: str
    status: str  # COMPLETED, FAILED, REJECTED, EXPIRED or CANCELED
    agents: List[str]  # noqa: UP006
    usage: UsageRecord
    behavior_versions: Dict[str, str]  # noqa: UP006
    completed_at: int  # epoch milliseconds
    output: Optional[str] = None  # noqa: UP045
    error: Optional[TaskErrorRecord] = None  # noqa: UP045
    submitted_at: Optional[int] = None  # noqa: UP045 - epoch milliseconds
    tier: Optional[str] = None  # noqa: UP045
    models: Dict[str, str] = {}  # noqa: UP006, RUF012
    review: Optional[SupervisorReviewRecord] = None  # noqa: UP045 - set when a supervisor model reviewed
