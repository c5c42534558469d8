"""The operator console (gateway/console/) end to end in a real headless Chromium (Debian's
``chromium``, driven by Playwright): the running gateway serves the pages, real worker
processes (router, billing, supervisor) run the tasks on the real broker. Log in, watch a
task wait for approval, approve it in the inbox, see the answer appear; a refused login;
the timeline resumed after its stream dropped; the dead letters of one's tenant shown and
replayed."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.events import TASK_SUBMITTED
from agentstream.gateway_client import GatewayClient
from agentstream.retry.classify import ErrorClass
from agentstream.retry.dead_letter import build_dead_letter, dead_letter_message
from agentstream.serde import SchemaSet

from .harness import wait_for
from .stream_cutter import StreamCutter
from .test_gateway import Running, bearer, running  # noqa: F401  (the module's gateway and workers)

# A task's answer waits on the model, the tool and the supervisor of a busy shared machine:
# the budget a result gets elsewhere in these tests (Running.finished), in milliseconds.
RESULT_MS = 90_000
PAGE_MS = 30_000  # a page's own change: one poll or one SSE event away, on a busy machine
SCHEMAS = SchemaSet.load()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "chromium is not on PATH: scripts/install-debian-packages.sh installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()  # a fresh sessionStorage: logged out
    context.set_default_timeout(PAGE_MS)
    expect.set_options(timeout=PAGE_MS)  # expect's own default (5 s) is too short on a busy machine
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, url: str, secret: str) -> None:
    page.goto(f"{url}/console/")
    page.fill("#credential", secret)
    page.click("#login-form button[type=submit]")


def test_the_gateway_serves_the_pages_with_a_content_security_policy(running: Running) -> None:  # noqa: F811
    page = running.http.get("/console", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:300]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = running.http.get("/console/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    sinks = re.findall(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write", script.text)
    assert sinks == [], sinks  # data is rendered as text only, never parsed as markup
    assert running.http.get("/console/nothing-here.js").status_code == 404


def test_a_wrong_key_and_a_submitters_key_are_refused_with_a_clear_message(running: Running, page: Page) -> None:  # noqa: F811
    log_in(page, running.gateway.url, "not-a-key-of-anyone")
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Login failed. Not logged in: the gateway did not accept the credential")
    expect(page.locator("#nav")).to_be_hidden()
    page.fill("#credential", running.tenants.keys[("acme", "submitter")])
    page.click("#login-form button[type=submit]")
    expect(notice).to_contain_text("Not allowed: this credential lacks the operator role")
    expect(page.locator("#login")).to_be_visible()


def test_an_operators_jwt_logs_in_and_is_sent_as_a_bearer_token(running: Running, page: Page) -> None:  # noqa: F811
    token = bearer("acme", ["operator"])["Authorization"].removeprefix("Bearer ")
    log_in(page, running.gateway.url, token)
    expect(page.locator("#who")).to_have_text("signed in with a token")
    task_id = running.submit("acme", "Please check invoice INV-1001 for me").json()["task_id"]
    expect(page.locator(f"[data-task-row='{task_id}']")).to_be_visible()
    page.get_by_role("link", name="Approvals").click()
    expect(page.get_by_text("Nothing waits for a decision.").or_(page.locator("[data-approval]").first)).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()  # every call the pages made was accepted


def test_a_task_waits_in_the_page_is_approved_in_the_inbox_and_its_answer_appears(
        running: Running, page: Page) -> None:  # noqa: F811
    markup = "<b id=injected>now</b>"
    log_in(page, running.gateway.url, running.tenants.keys[("acme", "operator")])
    expect(page.get_by_test_id("tasks")).to_be_visible()
    task_id = running.submit("acme", f"Please refund payment INV-1005 {markup}").json()["task_id"]
    row = page.locator(f"[data-task-row='{task_id}']")
    expect(row).to_contain_text("WAITING_INPUT")  # the open list shows the new task, then its wait

    row.get_by_role("link", name=task_id).click()
    expect(page.get_by_test_id("task-state")).to_have_text("WAITING_INPUT")
    expect(page.get_by_test_id("timeline")).to_contain_text("waiting for approval of refund_payment")

    page.get_by_role("link", name="Approvals").click()
    card = page.locator("[data-approval]", has=page.locator(f"[data-task='{task_id}']"))
    expect(card).to_contain_text("refund_payment")
    expect(card).to_contain_text('"invoice_id": "INV-1005"')
    expect(card).to_contain_text(markup)  # the input shown as text, never as markup
    expect(page.locator("#injected")).to_have_count(0)
    card.get_by_test_id("reason").fill("checked the invoice")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#notice")).to_contain_text("approve (by key:acme-operator)")
    expect(card).to_have_count(0)

    page.goto(f"{running.gateway.url}/console/#/tasks/{task_id}")
    expect(page.get_by_test_id("task-state")).to_have_text("COMPLETED", timeout=RESULT_MS)
    expect(page.get_by_test_id("task-answer")).not_to_be_empty()
    # The run's one TOOL_CALL event names every tool it used: the page lists each on its own line.
    tool_lines = page.get_by_test_id("task-tools").locator("li")
    expect(tool_lines.filter(has_text=re.compile(r"^TOOL_CALL: refund_payment$"))).to_have_count(1)
    expect(tool_lines.filter(has_text=re.compile(r"^TOOL_CALL: lookup_invoice$"))).to_have_count(1)
    assert f"{task_id}:0:0 refund INV-1005" in running.desk.ledger_lines()
    shown = running.task("acme", task_id).json()
    expect(page.get_by_test_id("task-answer")).to_have_text(shown["result"]["output"])


def test_the_inbox_denies_with_a_reason_and_runs_edited_arguments_checked_as_json(
        running: Running, page: Page) -> None:  # noqa: F811
    denied = running.submit("acme", "Please refund payment INV-1007").json()["task_id"]
    edited = running.submit("acme", "Please refund payment INV-1008").json()["task_id"]
    log_in(page, running.gateway.url, running.tenants.keys[("acme", "operator")])
    page.get_by_role("link", name="Approvals").click()
    notice = page.locator("#notice")

    deny = page.locator("[data-approval]", has=page.locator(f"[data-task='{denied}']"))
    deny.get_by_test_id("reason").fill("over the refund limit")
    deny.get_by_role("button", name="Deny").click()
    expect(notice).to_contain_text("deny (by key:acme-operator)")

    edit = page.locator("[data-approval]", has=page.locator(f"[data-task='{edited}']"))
    edit.get_by_role("button", name="Edit arguments").click()  # opens the editor, sends nothing
    arguments = edit.get_by_test_id("arguments")
    expect(arguments).to_have_value('{\n  "invoice_id": "INV-1008"\n}')
    arguments.fill('{"invoice_id": "INV-1009"')
    edit.get_by_role("button", name="Edit arguments").click()
    expect(notice).to_contain_text("The edited arguments are not JSON")
    expect(edit).to_have_count(1)  # nothing was decided
    arguments.fill('{"invoice_id": "INV-1009"}')
    edit.get_by_role("button", name="Edit arguments").click()
    expect(notice).to_contain_text("edit (by key:acme-operator)")
    expect(edit).to_have_count(0)

    answer = running.finished("acme", denied)["result"]["output"]
    assert "over the refund limit" in answer, answer
    assert running.finished("acme", edited)["state"] == "COMPLETED"
    lines = running.desk.ledger_lines()
    assert f"{edited}:0:0 refund INV-1009" in lines and not [line for line in lines if denied in line], lines


def test_the_timeline_resumes_after_its_stream_drops_and_neither_misses_nor_repeats_events(
        running: Running, page: Page) -> None:  # noqa: F811
    """The page's event stream is cut while the task waits; the task is approved and ends
    while the page cannot reach its stream; once it can, the page reconnects with
    Last-Event-ID and its timeline is the task's whole stream, each event once."""
    cutter = StreamCutter(running.gateway.port)  # the page's origin: a proxy that can drop its streams
    try:
        log_in(page, cutter.url, running.tenants.keys[("acme", "operator")])
        expect(page.get_by_test_id("tasks")).to_be_visible()
        task_id = running.submit("acme", "Please refund payment INV-1006").json()["task_id"]
        page.goto(f"{cutter.url}/console/#/tasks/{task_id}")
        expect(page.get_by_test_id("timeline")).to_contain_text("waiting for approval of refund_payment")
        rows = page.locator("[data-event-id]")
        before = rows.evaluate_all("rows => rows.map((row) => row.dataset.eventId)")

        cutter.cut()
        ops = running.tenants.headers("acme", "operator")
        pending = [a for a in running.http.get("/v1/approvals", headers=ops).json() if a["task_id"] == task_id]
        assert running.http.post(f"/v1/approvals/{pending[0]['approval_id']}", json={"decision": "approve"},
                                 headers=ops).status_code == 200
        assert running.finished("acme", task_id)["state"] == "COMPLETED"
        wait_for(lambda: len(cutter.event_requests) >= 2, 30, "the page trying to reconnect while cut off")
        expect(page.get_by_test_id("task-state")).to_have_text("WAITING_INPUT")  # it has heard nothing since
        cutter.mend()

        expect(page.get_by_test_id("task-state")).to_have_text("COMPLETED", timeout=RESULT_MS)
        with GatewayClient(running.gateway.url, api_key=running.tenants.keys[("acme", "submitter")]) as gateway:
            whole = [event.id for event in gateway.events(task_id) if event.kind == "progress"]
        shown = rows.evaluate_all("rows => rows.map((row) => row.dataset.eventId)")
        assert shown == whole, f"the timeline {shown} is not the stream {whole}"
        assert len(whole) > len(before) and shown[:len(before)] == before
        resumed = cutter.last_event_ids()
        assert resumed[0] is None and set(resumed[1:]) == {before[-1]}, resumed  # every retry resumed there
        expect(page.get_by_test_id("task-tools")).to_contain_text("TOOL_CALL: refund_payment")
    finally:
        cutter.close()


def dead_letter_of(running: Running, tenant: str) -> dict[str, Any]:  # noqa: F811
    """A dead letter of the router holding a billing task of ``tenant``, on the stack's DLQ."""
    task = new_task("Please check invoice INV-1002 for me", f"s-{uuid.uuid4().hex[:8]}", tenant,
                    requested_agent="billing")
    topology = running.desk.stack.topology
    letter = build_dead_letter(
        key=task["session_id"].encode(), value=SCHEMAS.encode(TASK_SUBMITTED, task), headers=None,
        topic=topology.topic("tasks"), partition=0, offset=None, stage="router",
        error=RuntimeError("the router crashed on it"), error_class=ErrorClass.PERMANENT, attempts=3,
        group=f"{running.desk.stack.prefix}.router", first_failure_ms=None, schemas=SCHEMAS)
    producer = Producer(producer_config(running.desk.bootstrap))
    key, value, headers = dead_letter_message(letter, SCHEMAS)
    producer.produce(topology.topic("dlq"), value, key, headers=headers)
    assert producer.flush(30) == 0
    return letter


def test_the_dlq_page_shows_the_tenants_dead_letters_and_replays_one(running: Running, page: Page) -> None:  # noqa: F811
    ours, theirs = dead_letter_of(running, "acme"), dead_letter_of(running, "globex")
    http, tenants = running.http, running.tenants
    assert http.get("/v1/dlq", headers=tenants.headers("acme")).status_code == 403
    listed = [d["id"] for d in http.get("/v1/dlq", headers=tenants.headers("globex", "operator")).json()]
    assert theirs["id"] in listed and ours["id"] not in listed
    assert http.get(f"/v1/dlq/{ours['id']}", headers=tenants.headers("globex", "operator")).status_code == 404

    log_in(page, running.gateway.url, tenants.keys[("acme", "operator")])
    page.get_by_role("link", name="Dead letters").click()
    table = page.get_by_test_id("dlq")
    expect(table.locator(f"[data-letter='{ours['id']}']")).to_contain_text("the router crashed on it")
    expect(table.locator(f"[data-letter='{theirs['id']}']")).to_have_count(0)
    table.get_by_role("link", name=ours["id"]).click()
    expect(page.get_by_test_id("letter")).to_contain_text(f"task:           {ours['task_id']}")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#notice")).to_contain_text(f"Replayed {ours['id']} to {running.desk.stack.topology.topic('tasks')}[0]")

    replayed = running.finished("acme", ours["task_id"])  # the replayed submission runs as any task
    assert replayed["state"] == "COMPLETED" and "INV-1002" in replayed["result"]["output"], replayed
    audited = [(r["action"], r["subject"]) for r in running.desk.records("audit", "AuditRecord")
               if r["target_id"] == ours["id"]]
    assert audited == [("dlq.replay", "key:acme-operator")], audited


def test_the_task_list_is_the_callers_tenants_only(running: Running) -> None:  # noqa: F811
    ours = running.submit("acme", "Please check invoice INV-1001 for me").json()["task_id"]
    theirs = running.submit("globex", "Please check invoice INV-1001 for me").json()["task_id"]
    running.finished("acme", ours)
    running.finished("globex", theirs)
    listed = running.http.get("/v1/tasks?limit=500", headers=running.tenants.headers("acme")).json()
    ids = [t["task_id"] for t in listed]
    assert ours in ids and theirs not in ids
    stamps = [t["timings"]["submitted_at"] for t in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert running.http.get("/v1/tasks?limit=0", headers=running.tenants.headers("acme")).status_code == 422
