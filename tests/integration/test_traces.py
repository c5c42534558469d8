"""Traces and logs across real worker processes: router, two specialists and the
supervisor export over OTLP/HTTP to a real receiver in the test, which decodes the
protobuf. One task is one trace with the right parent links; the workers' JSON log lines
carry the record's fields and never the API key in their environment."""

from __future__ import annotations

import json
import secrets
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from agentstream.client import new_task
from agentstream.settings import LOG_FORMAT_ENV, LOG_LEVEL_ENV
from agentstream.telemetry.redact import REDACTED

from .cli import cli_env, run
from .gateway_harness import GatewayProcess, TenantsFile
from .harness import wait_for
from .otlp_receiver import OtlpReceiver, Span
from .test_durable import DurableStack

API_KEY = f"sk-test-{uuid.uuid4().hex}"
WORKERS = {"router": ["router"], "billing": ["specialist", "--type", "billing"],
           "technical": ["specialist", "--type", "technical"], "supervisor": ["supervisor"]}


def _tasks() -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    asks = [("billing", "Please check invoice INV-1001 for me"), ("billing", "Is invoice INV-1002 paid?"),
            ("technical", "The API returns error 500 on login")]
    tasks = [new_task(text, f"s-{run}-{i}", "acme", task_id=f"tr-{run}-{i}", requested_agent=agent)
             for i, (agent, text) in enumerate(asks)]
    # A task id holding the key: every log line of its handling carries it (the task_id
    # field), so a redaction that failed would show it.
    tasks.append(new_task("Please check invoice INV-1003", f"s-{run}-k", "acme", task_id=f"tr-{run}-{API_KEY}",
                          requested_agent="billing"))
    return tasks


def _by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return traces


def _one(spans: list[Span], name: str, kind: str) -> Span:
    found = [s for s in spans if s.name == name and s.kind == kind]
    # Each one's parent is named too: a second send's parent tells which path sent it again.
    by_id = {s.span_id: s for s in spans}
    parents = [(s.service, getattr(by_id.get(s.parent_id), "name", s.parent_id)) for s in found]
    assert len(found) == 1, f"{kind} {name}: {len(found)} (their parents: {parents}) in {sorted((s.service, s.name) for s in spans)}"
    return found[0]


def _task_trace(receiver: OtlpReceiver, tasks_topic: str, session: str) -> str | None:
    """The trace the router started for the task of ``session`` (its tasks record's CONSUMER span)."""
    for span in list(receiver.spans):
        if span.name == f"process {tasks_topic}" and span.attributes.get("messaging.kafka.message.key") == session:
            return span.trace_id
    return None


def test_one_task_is_one_trace_across_the_workers_and_the_logs_are_json_without_secrets(
    bootstrap: str, tmp_path: Path,
) -> None:
    with OtlpReceiver() as receiver:
        # DEBUG: a routine task's lines are DEBUG (telemetry/logs.py, task_line_level).
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
               LOG_FORMAT_ENV: "json", LOG_LEVEL_ENV: "DEBUG", "OPENAI_API_KEY": API_KEY}
        stack = DurableStack(bootstrap, tmp_path, latency="0", env=env)
        topic = stack.topology.topic
        tasks = _tasks()
        try:
            stack.start_all(WORKERS)
            stack.submit(tasks)
            stack.results({t["task_id"] for t in tasks}, timeout=120)
            # The router reads each result back (its session gate): that span ends the task's trace.
            wait_for(lambda: all(_task_trace(receiver, topic("tasks"), t["session_id"]) for t in tasks)
                     and sum(s.name == f"process {topic('results')}" for s in receiver.spans) >= len(tasks),
                     60, "every task's spans to reach the receiver")
        finally:
            codes = stack.stop_all()
        assert all(code == 0 for code in codes.values()), codes

    traces = _by_trace(receiver.spans)
    trace_of = {t["task_id"]: _task_trace(receiver, topic("tasks"), t["session_id"]) for t in tasks}
    assert len(set(trace_of.values())) == len(tasks), f"distinct tasks share a trace: {trace_of}"
    for task in tasks:
        spans = traces[str(trace_of[task["task_id"]])]
        _check_task_trace(spans, task["requested_agent"], topic)
    _check_logs(stack)


def _check_task_trace(spans: list[Span], agent: str, topic: Any) -> None:
    """router → specialist → supervisor → results (read back by the router), each CONSUMER
    span the child of the PRODUCER span that sent its record; model and tool spans inside."""
    specialist_topic = f"{topic('tasks').rsplit('.tasks.v1', 1)[0]}.specialist.{agent}.v1"
    routed = _one(spans, f"process {topic('tasks')}", "CONSUMER")
    assert routed.parent_id == "" and routed.service == "agentstream-router", "the task's record starts its trace"
    assert routed.attributes["messaging.system"] == "kafka"
    assert routed.attributes["messaging.consumer.group.name"].endswith("router")
    hops = [(specialist_topic, "agentstream-router", f"agentstream-{agent}"),
            (topic("supervisor"), f"agentstream-{agent}", "agentstream-supervisor"),
            (topic("results"), "agentstream-supervisor", "agentstream-router")]
    for hop_topic, sender, receiver in hops:
        sent = _one(spans, f"send {hop_topic}", "PRODUCER")
        got = _one(spans, f"process {hop_topic}", "CONSUMER")
        assert (sent.service, got.service) == (sender, receiver), (hop_topic, sent.service, got.service)
        assert got.parent_id == sent.span_id, f"{hop_topic}: the consumer's parent is the producer that sent it"
        assert sent.attributes["messaging.destination.name"] == hop_topic == got.attributes["messaging.destination.name"]
        assert isinstance(got.attributes["messaging.kafka.offset"], int)
        assert got.attributes["messaging.destination.partition.id"].isdigit()
    consumed = _one(spans, f"process {specialist_topic}", "CONSUMER")
    agent_span = _one(spans, f"invoke_agent {agent}", "INTERNAL")
    assert agent_span.parent_id == consumed.span_id and agent_span.attributes["gen_ai.agent.name"] == agent
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert chats and all(s.kind == "CLIENT" and s.parent_id == agent_span.span_id for s in chats)
    for chat in chats:
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.name == f"chat {chat.attributes['gen_ai.request.model']}"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0 and chat.attributes["gen_ai.usage.output_tokens"] > 0
    tools = [s for s in spans if s.name.startswith("execute_tool ")]
    assert tools, f"the scripted {agent} specialist calls a tool for these tasks"
    for used in tools:
        assert used.name == f"execute_tool {used.attributes['gen_ai.tool.name']}"
        assert used.parent_id == agent_span.span_id and used.attributes["gen_ai.operation.name"] == "execute_tool"
    assert {s.service for s in spans} == {"agentstream-router", f"agentstream-{agent}", "agentstream-supervisor"}


def _check_logs(stack: DurableStack) -> None:
    """JSON lines with the record's fields, and the key in every worker's environment
    (and in one task's id) in none of them."""
    leaks = {name: [line for line in w.lines if API_KEY in line] for name, w in stack.workers.items()}
    assert not any(leaks.values()), f"the API key reached a log: {leaks}"
    billing = [json.loads(line) for line in stack.workers["billing"].lines if line.startswith("{")]
    assert billing, stack.workers["billing"].tail()
    # Our own lines: at DEBUG a library may log inside a task's context and outside its span.
    handled = [line for line in billing if "task_id" in line and line["logger"].startswith("agentstream")]
    assert handled, "log lines inside a handler carry the task's fields"
    for line in handled:
        assert {"time", "level", "logger", "worker", "session_id", "message", "trace_id"} <= set(line), line
        assert line["worker"] == "billing" and line["tenant_id"] == "acme"
    assert any(line["task_id"].endswith(REDACTED) for line in handled), "the key in a task id was replaced"
    assert any("step" in line and "record" in line for line in handled), "the loop's lines carry its step and record"
    finished = [line for line in handled if " COMPLETED by billing (epoch 0: " in line["message"]]
    assert finished and all(line["level"] == "DEBUG" for line in finished), "a routine task's line is DEBUG"
    published = [json.loads(line) for line in stack.workers["supervisor"].lines if " COMPLETED via " in line]
    assert published and all(line["level"] == "DEBUG" for line in published), "and so is its routine result's"


def test_a_task_resumed_after_its_specialist_was_killed_continues_its_trace(bootstrap: str, tmp_path: Path) -> None:
    """The checkpoint head keeps the task's traceparent: the new owner's loop and everything
    after it are in the trace the router started, under the killed owner's CONSUMER span."""
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        stack = DurableStack(bootstrap, tmp_path, latency="1.5", env=env)
        topic = stack.topology.topic
        task = _tasks()[0]
        specialist = f"process {topic('tasks').rsplit('.tasks.v1', 1)[0]}.specialist.billing.v1"
        try:
            stack.start_all({"router": ["router"], "billing-a": ["specialist", "--type", "billing"],
                             "supervisor": ["supervisor"]})
            stack.submit([task])
            # Its record handled (the CONSUMER span exported) and its first model call under way: kill.
            wait_for(lambda: any(s.name == specialist for s in receiver.spans) and stack.calls(), 60,
                     "the specialist to start the task")
            stack.workers["billing-a"].kill()
            stack.workers["billing-a"].wait(10)
            stack.start("billing-b", "specialist", "--type", "billing").wait_for_line(r"resuming task", 60)
            stack.results({task["task_id"]}, timeout=120)
            # A resumed run's line stays INFO (the default level here): what follows a crash is worth a line.
            stack.workers["billing-b"].wait_for_line(rf" INFO .*: task {task['task_id']} COMPLETED by billing \(epoch 1: ", 30)
            wait_for(lambda: any(s.name == f"process {topic('results')}" for s in receiver.spans), 60,
                     "the router's span of the result")
        finally:
            stack.stop_all()
    trace = _task_trace(receiver, topic("tasks"), task["session_id"])
    spans = _by_trace(receiver.spans)[str(trace)]
    # The killed owner's span of the routed record, and the new owner's if the record's
    # offset was not committed yet (it finds the task accepted and leaves it to the resume).
    consumed = [s for s in spans if s.name == specialist]
    routed = _one(spans, f"send {specialist.removeprefix('process ')}", "PRODUCER")
    assert consumed and all(s.parent_id == routed.span_id for s in consumed)
    # Only the new owner's loop ended (a killed process exports nothing it had open).
    resumed = _one(spans, "invoke_agent billing", "INTERNAL")
    assert resumed.parent_id in {s.span_id for s in consumed}, "the new owner's loop continues the task's trace"
    assert _one(spans, f"send {topic('supervisor')}", "PRODUCER").parent_id == resumed.parent_id, "and so does its result"
    assert _one(spans, f"process {topic('results')}", "CONSUMER").service == "agentstream-router"


def test_a_task_sent_through_the_gateway_or_the_cli_joins_the_senders_trace(bootstrap: str, tmp_path: Path) -> None:
    """The gateway and ``agentstream submit`` send the task's record with a traceparent: the
    router's span of it is the child of their PRODUCER span, and an HTTP caller's own
    ``traceparent`` makes the task part of the caller's trace."""
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    run_id = uuid.uuid4().hex[:6]
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        stack = DurableStack(bootstrap, tmp_path, latency="0", env=env)
        tasks_topic = stack.topology.topic("tasks")
        tenants = TenantsFile.write(tmp_path / "tenants.yaml", {"acme": {}})
        gateway: GatewayProcess | None = None
        try:
            stack.start_all({"router": ["router"], "billing": ["specialist", "--type", "billing"],
                             "supervisor": ["supervisor"]})
            gateway = GatewayProcess({**cli_env(), **stack.env("gateway")}, tenants.path)
            with gateway.client() as http:
                accepted = http.post("/v1/tasks", json={"input": "Is invoice INV-1001 paid?", "agent": "billing",
                                                        "session_id": f"s-{run_id}-http"},
                                     headers={**tenants.headers("acme"), "traceparent": f"00-{caller_trace}-{caller_span}-01"})
            assert accepted.status_code == 202, accepted.text
            sent = run("submit", "Is invoice INV-1002 paid?", "--session", f"s-{run_id}-cli", "--tenant", "acme",
                       "--agent", "billing", env={**cli_env(), **stack.env("submit")})
            assert sent.returncode == 0, sent.stderr
            stack.results({accepted.json()["task_id"], sent.stdout.strip()}, timeout=120)
            wait_for(lambda: all(_task_trace(receiver, tasks_topic, f"s-{run_id}-{way}") for way in ("http", "cli")),
                     60, "the router's spans of both tasks")
        finally:
            if gateway is not None:
                gateway.stop()
            stack.stop_all()
    by_id = {span.span_id: span for span in receiver.spans}
    for way, service in (("http", "agentstream-gateway"), ("cli", "agentstream-submit")):
        routed = next(s for s in receiver.spans if s.name == f"process {tasks_topic}"
                      and s.attributes.get("messaging.kafka.message.key") == f"s-{run_id}-{way}")
        producer = by_id.get(routed.parent_id)
        assert producer is not None, f"{way}: the router's span has no exported parent ({routed.parent_id!r})"
        assert (producer.name, producer.kind, producer.service) == (f"send {tasks_topic}", "PRODUCER", service)
        if way == "http":
            assert routed.trace_id == caller_trace and producer.parent_id == caller_span, "the caller's trace goes on"
        else:
            assert producer.parent_id == "", "the command's record starts the task's trace"
