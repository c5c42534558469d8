"""``agentstream.Client`` (sync) and ``AsyncClient`` (asyncio): the gateway client's shape
(task_client.py: submit, task, result, events, approvals, approve / deny / edit, cancel)
over Kafka itself, for services that already run next to the cluster. Code written against
``TaskClient`` runs on this or on ``GatewayClient`` unchanged.

What it is built of: ``Submitter`` (client.py) sends the TaskSubmitted; a group-less view
of the pipeline's topics (client_view.py, the gateway's own reader and store) answers state,
results, events and pending approvals; ``ApprovalTopics.decide`` (approvals/ops.py) sends
decisions and ``send_cancel`` (cancellation/) cancels. The refusals are the gateway's
(gateway/view_rules.py), with its statuses and codes.

**No tenant auth.** Kafka has no notion of agentstream's tenants: ``tenant_id`` is whatever
the caller says, and it scopes what this client shows and sends (another tenant's task is a
404, as over HTTP) but guards nothing — whoever can read and write the topics can act for
any tenant. Guard the topics with Kafka ACLs, or give untrusted callers the gateway. Like
every task sent straight to Kafka, the router still enforces the tenant's daily budget and
cap of running tasks (a REJECTED result, not a 429); there is no request rate limit and
no audit record of the client's actions.

**Idempotency.** A key maps to the task id exactly as the gateway maps it
(``k-`` + sha256(tenant, key), gateway/ids.py), so a key used on either transport is the
same task. A key whose task the view already holds sends nothing; two clients racing on
one key within the view's lag may both send, and the router's dedupe drops the second.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import KafkaException
from pydantic import ValidationError

from agentstream.approvals.ops import ApprovalTopics
from agentstream.approvals.records import APPROVE, DENY, EDIT
from agentstream.broker import find_bootstrap
from agentstream.broker_refusal import broker_refusal
from agentstream.cancellation import cancel_record, send_cancel
from agentstream.client import SubmitError, Submitter
from agentstream.client_view import ClientView
from agentstream.events import now_ms
from agentstream.gateway import task_view, view_rules
from agentstream.gateway.api_models import ApprovalDecided, CancelAccepted, PendingApproval, TaskRequest, TaskStatus
from agentstream.gateway.ids import event_id, keyed_task_id, parse_last_event_id, random_task_id, result_id, session_of
from agentstream.gateway.stream_gate import ResultGate
from agentstream.gateway.view_store import APPROVALS, approval_key
from agentstream.runtime.errors import CheckpointError
from agentstream.serde import SchemaSet
from agentstream.settings import WorkerSettings, state_dir_from_env
from agentstream.task_client import PROGRESS, RESULT, StreamEvent, TaskClientError
from agentstream.topology import Topology, load_topology

WAKE_S = 1.0  # events(): how often a waiting iterator looks whether it was closed
T = TypeVar("T")



@contextmanager
def _refused_by_broker() -> Iterator[None]:
    """A record the broker did not take is the gateway's refusal here too (broker_refusal.py)."""
    try:
        yield
    except (SubmitError, CheckpointError, KafkaException, BufferError) as exc:  # a produce() refused at once too
        raise broker_refusal(exc) from exc

class Client:
    """The pipeline of ``topology`` on the broker at ``bootstrap``, as tenant ``tenant_id``;
    approvals and cancels are sent in the name of ``subject`` (default: the OS user)."""

    def __init__(self, bootstrap: str, topology: Topology, *, tenant_id: str = "default", subject: str | None = None,
                 schemas: SchemaSet | None = None, state_dir: Path | None = None, ready_timeout: float = 120.0) -> None:
        self._schemas = schemas or SchemaSet.load()
        self._topology, self._bootstrap = topology, bootstrap
        self.tenant_id, self.subject = tenant_id, subject or getpass.getuser()
        self._ready_timeout = ready_timeout
        self._submitter = Submitter(bootstrap, topology, self._schemas)  # checks the tasks topic exists
        self._desk = ApprovalTopics(bootstrap, topology, self._schemas)
        self._view = ClientView(bootstrap, topology, self._schemas, state_dir)
        self._closed = False

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """The broker, topology and prefix the ``agentstream`` commands use
        (KAFKA_BOOTSTRAP_SERVERS or ``agentstream dev``'s, AGENTSTREAM_TOPOLOGY, AGENTSTREAM_PREFIX)."""
        state = state_dir_from_env()
        settings = WorkerSettings.from_env(bootstrap=find_bootstrap(state).bootstrap, state_dir=state)
        topology = load_topology(settings.topology_path, prefix=settings.prefix)
        return cls(settings.bootstrap, topology, **{"state_dir": state / "client", **options})

    def _ready_view(self) -> ClientView:
        if self._closed:
            raise RuntimeError("Cannot use the client, as it has been closed.")
        self._view.ready(self._ready_timeout)
        return self._view

    def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
               metadata: dict[str, str] | None = None, budget_usd: float | None = None,
               idempotency_key: str | None = None) -> str:
        body = _valid_request(text, session_id, agent, metadata, budget_usd)
        view_rules.check_agent(agent, self._topology.specialist_types)
        task_id = keyed_task_id(self.tenant_id, idempotency_key) if idempotency_key else random_task_id()
        session = session_of(task_id, session_id)
        if idempotency_key and self._repeated(task_id, session):
            return task_id
        task = view_rules.new_submission(body.input, session, self.tenant_id, task_id, agent, body.metadata, budget_usd)
        with _refused_by_broker():
            delivery = self._submitter.submit(task)
            self._submitter.flush(deliveries=[delivery])  # its own: AsyncClient submits from several threads
        self._view.remember(task_view.on_submitted(None, task))
        return task_id

    def _repeated(self, task_id: str, session_id: str) -> bool:
        """Whether the key's task was sent before (409 if for another session, as the gateway)."""
        earlier = self._ready_view().task(task_id)
        if earlier is None:
            return False
        view_rules.check_same_session(earlier, session_id)
        return True

    def _owned(self, task_id: str) -> dict[str, Any]:
        return dict(view_rules.owned(self._ready_view().task(task_id), self.tenant_id, task_id))

    def task(self, task_id: str) -> dict[str, Any]:
        return _public(self._owned(task_id))

    def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The task once it has a result (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        seen = self._view.generation
        while True:
            found = self._owned(task_id)
            if found.get("result") is not None:
                return _public(found)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Task {task_id!r} has no result after {timeout:.0f} s (state {found['state']}).")
            seen = self._view.wait(seen, max(0.0, deadline - time.monotonic()))

    def events(self, task_id: str, after: str | None = None) -> Iterator[StreamEvent]:
        """The task's progress after event ``after``, then its result; ends with the result
        (the gateway's SSE stream, gateway/sse.py, event for event)."""
        self._owned(task_id)
        try:
            start = parse_last_event_id(after)
        except ValueError as exc:
            raise TaskClientError(400, "bad_last_event_id", str(exc)) from None
        return self._stream(task_id, start.offset) if not start.done else iter(())

    def _stream(self, task_id: str, offset: int) -> Iterator[StreamEvent]:
        view, seen = self._view, self._view.generation
        gate = ResultGate(view.reader, view_rules.RESULT_GRACE_S)
        while not self._closed:
            look = gate.look(view.store, task_id, offset)
            for offset, event in look.events:
                yield StreamEvent(event_id(offset), PROGRESS, event)
            if look.result is not None:
                yield StreamEvent(result_id(look.result["result"]["offset"]), RESULT, task_view.public(look.result))
                return
            if look.full:
                continue
            seen = view.wait(seen, view_rules.RESULT_GRACE_S / 4 if gate.result_seen else WAKE_S)

    def approvals(self) -> list[dict[str, Any]]:
        view = self._ready_view()
        found = view_rules.pending((entry for _, entry in view.store.scan(APPROVALS)), view.task, self.tenant_id, now_ms())
        return [PendingApproval.model_validate(request).model_dump() for request in found]

    def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]:
        return self._decide(approval_id, APPROVE, reason)

    def deny(self, approval_id: str, reason: str) -> dict[str, Any]:
        return self._decide(approval_id, DENY, reason)

    def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]:
        return self._decide(approval_id, EDIT, reason, arguments)

    def _decide(self, approval_id: str, decision: str, reason: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        view = self._ready_view()
        wanted = view_rules.decidable(view.store.get(approval_key(approval_id)), view.task, self.tenant_id,
                                      approval_id, now_ms())
        view_rules.check_decision(decision, arguments)
        with _refused_by_broker():
            record = self._desk.decide(approval_id, decision, self.subject, reason, arguments, request=wanted)
        return ApprovalDecided(approval_id=approval_id, task_id=record["task_id"], decision=record["decision"],
                               who=record["who"]).model_dump()

    def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        view = self._owned(task_id)
        view_rules.cancelable(view, task_id)
        record = cancel_record(task_id, view["session_id"], self.tenant_id, self.subject, reason)
        with _refused_by_broker():
            send_cancel(self._bootstrap, self._topology, self._schemas, record)
        return CancelAccepted(task_id=task_id, requested_by=self.subject).model_dump()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._view.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _valid_request(text: str, session_id: str | None, agent: str | None, metadata: dict[str, str] | None,
                   budget_usd: float | None) -> TaskRequest:
    """The gateway's checks of a submission (sizes, session id, budget): 422 as over HTTP."""
    try:
        return TaskRequest(input=text, session_id=session_id, agent=agent, metadata=metadata or {},
                           budget_usd=budget_usd)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise TaskClientError(422, "invalid_request", f"Invalid request: {where}: {first.get('msg', 'invalid')}.") from None


def _public(view: dict[str, Any]) -> dict[str, Any]:
    """The task as ``GET /v1/tasks/{id}`` answers it (its response model applied)."""
    return TaskStatus.model_validate(task_view.public(view)).model_dump()


class AsyncClient:
    """Client for asyncio: the same methods, awaited (each runs in a worker thread, since
    confluent-kafka and RocksDB calls block); ``events`` is an async iterator."""

    def __init__(self, bootstrap: str, topology: Topology, **options: Any) -> None:
        self._client = Client(bootstrap, topology, **options)

    @classmethod
    def from_env(cls, **options: Any) -> AsyncClient:
        made = cls.__new__(cls)
        made._client = Client.from_env(**options)
        return made

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    async def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
                     metadata: dict[str, str] | None = None, budget_usd: float | None = None,
                     idempotency_key: str | None = None) -> str:
        return await self._run(self._client.submit, text, session_id=session_id, agent=agent, metadata=metadata,
                               budget_usd=budget_usd, idempotency_key=idempotency_key)

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self._run(self._client.task, task_id)

    async def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return await self._run(self._client.result, task_id, timeout)

    async def events(self, task_id: str, after: str | None = None) -> AsyncIterator[StreamEvent]:
        stream = await self._run(self._client.events, task_id, after)
        while (event := await self._run(next, stream, None)) is not None:
            yield event

    async def approvals(self) -> list[dict[str, Any]]:
        return await self._run(self._client.approvals)

    async def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]:
        return await self._run(self._client.approve, approval_id, reason)

    async def deny(self, approval_id: str, reason: str) -> dict[str, Any]:
        return await self._run(self._client.deny, approval_id, reason)

    async def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]:
        return await self._run(self._client.edit, approval_id, arguments, reason)

    async def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        return await self._run(self._client.cancel, task_id, reason)

    async def aclose(self) -> None:
        await self._run(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
