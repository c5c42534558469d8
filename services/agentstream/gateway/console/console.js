// The agentstream operator console: vanilla JS over the gateway's /v1 API, no build step.
//
// Safety: every piece of data is rendered with textContent / createTextNode (the `el`
// helper); no innerHTML ever sees a value from the API, so a task's input or a tool's
// arguments cannot inject markup.
"use strict";

const STORAGE_KEY = "agentstream.console.credential";
const POLL_MS = 2000; // how often the live lists refresh (tasks, approvals)
const TASK_LIMIT = 50;

// ---- the credential -------------------------------------------------------------------

function credential() {
  const raw = sessionStorage.getItem(STORAGE_KEY);
  return raw ? JSON.parse(raw) : null;
}

function looksLikeJwt(text) {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(text);
}

function authHeaders(cred) {
  return cred.kind === "jwt" ? { Authorization: "Bearer " + cred.value } : { "X-API-Key": cred.value };
}

// ---- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function explain(err) {
  if (err.status === 401) return "Not logged in: the gateway did not accept the credential (" + err.message + ")";
  if (err.status === 403) return "Not allowed: this credential lacks the operator role (" + err.message + ")";
  if (err.status) return "The gateway answered " + err.status + ": " + err.message;
  return "The gateway could not be reached: " + err.message;
}

async function api(method, path, body, cred) {
  const use = cred || credential();
  const headers = { Accept: "application/json", ...authHeaders(use) };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.message ? data.message : response.statusText;
    const failure = new ApiError(response.status, data && data.code, message);
    if (response.status === 401 && !cred) loggedOut(explain(failure));
    throw failure;
  }
  return data;
}

// ---- rendering helpers (text only) ----------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

function usd(value) {
  return "$" + Number(value || 0).toFixed(6);
}

function pretty(jsonText) {
  try { return JSON.stringify(JSON.parse(jsonText), null, 2); } catch (e) { return jsonText; }
}

function notice(text, ok) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

function taskLink(taskId) {
  return el("a", { href: "#/tasks/" + encodeURIComponent(taskId), "data-task": taskId }, taskId);
}

function table(headings, rows, testid) {
  return el("table", { "data-testid": testid },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

// ---- pages: each returns a stop function (timers, streams) ----------------------------

let stopPage = () => {};

function pollEvery(ms, tick) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try { await tick(); } catch (err) { if (err.status !== 401) notice(explain(err)); }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}

function tasksPage(view) {
  const body = el("tbody");
  view.append(el("h2", {}, "Tasks"), el("p", { class: "muted" }, "Your tenant's latest tasks; refreshed every 2 s."),
    el("table", { "data-testid": "tasks" },
      el("thead", {}, el("tr", {}, ...["Task", "State", "Route", "Cost", "Submitted"].map((h) => el("th", {}, h)))),
      body));
  return pollEvery(POLL_MS, async () => {
    const tasks = await api("GET", "/v1/tasks?limit=" + TASK_LIMIT);
    body.replaceChildren(...tasks.map((t) => el("tr", { "data-task-row": t.task_id },
      el("td", {}, taskLink(t.task_id)), el("td", { class: "state" }, t.state), el("td", {}, t.route.join(", ") || "-"),
      el("td", {}, usd(t.cost_usd)), el("td", {}, when(t.timings.submitted_at)))));
    if (!tasks.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No tasks yet.")));
  });
}

// The timeline streams GET /v1/tasks/{id}/events. EventSource cannot send the credential
// header (and a credential in the URL would land in logs and history), so fetch() reads the
// text/event-stream body itself with the header; after a dropped connection it reconnects
// with Last-Event-ID, which the gateway resumes from (no gap, no repeat).
function parseSse(buffer, onMessage) {
  const blocks = buffer.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const message = { id: null, event: "message", data: "" };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "data") message.data += (message.data ? "\n" : "") + value;
      else if (field === "id" || field === "event") message[field] = value;
    }
    if (message.data) onMessage(message);
  }
  return rest;
}

async function streamEvents(taskId, onMessage, signal) {
  let lastId = null;
  let ended = false;
  const track = (message) => {
    lastId = message.id || lastId;
    if (message.event === "result") ended = true;
    onMessage(message);
  };
  while (!ended && !signal.aborted) {
    const headers = { Accept: "text/event-stream", ...authHeaders(credential()) };
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const response = await fetch("/v1/tasks/" + encodeURIComponent(taskId) + "/events", { headers, signal });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new ApiError(response.status, data.code, data.message || response.statusText);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseSse(buffer + value.replace(/\r\n/g, "\n"), track);
      }
      if (!ended) ended = lastId !== null && lastId.startsWith("r");
    } catch (err) {
      if (signal.aborted) return;
      if (err.status) { notice(explain(err)); return; }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS)); // the network: try again
    }
  }
}

function renderSummary(box, task) {
  const result = task.result;
  const items = [
    ["State", el("span", { class: "state", "data-testid": "task-state" }, task.state)],
    ["Route", task.route.join(", ") || "-"],
    ["Cost", usd(task.cost_usd)],
    ["Submitted", when(task.timings.submitted_at)],
    ["Completed", when(task.timings.completed_at)],
  ];
  if (result) {
    items.push(["Agents", result.agents.join(", ") || "-"]);
    if (result.error) items.push(["Error", (result.error.code || "") + " " + (result.error.message || "")]);
  }
  box.replaceChildren(el("dl", {}, ...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  if (result) box.append(el("h3", {}, "Answer"), el("pre", { "data-testid": "task-answer" }, result.output || "(none)"));
}

function taskPage(view, taskId) {
  const summary = el("div", { class: "card", "data-testid": "task-summary" });
  const timeline = el("tbody");
  const tools = el("ul", { "data-testid": "task-tools" });
  view.append(el("h2", {}, "Task ", el("code", {}, taskId)), summary,
    el("h3", {}, "Tools"), tools,
    el("h3", {}, "Timeline"),
    el("table", { "data-testid": "timeline" },
      el("thead", {}, el("tr", {}, ...["At", "Stage", "Kind", "State", "Detail"].map((h) => el("th", {}, h)))),
      timeline));
  const controller = new AbortController();
  // The summary's request and the stream race: events the stream delivered before the
  // summary came are newer than its state, so their latest state is kept and applied to it.
  let streamedState = null;
  const showState = (text) => {
    const state = summary.querySelector("[data-testid=task-state]");
    if (state) state.textContent = text;
  };
  api("GET", "/v1/tasks/" + encodeURIComponent(taskId)).then((task) => {
    renderSummary(summary, task);
    if (streamedState !== null && !task.result) showState(streamedState);
  }).catch((err) => { if (err.status !== 401) notice(explain(err)); });
  streamEvents(taskId, (message) => {
    const data = JSON.parse(message.data);
    if (message.event === "result") { renderSummary(summary, data); return; }
    timeline.append(el("tr", { "data-event-id": message.id }, el("td", {}, when(data.at)), el("td", {}, data.stage),
      el("td", {}, data.kind), el("td", {}, data.state), el("td", {}, data.detail)));
    // A run's one TOOL_CALL event names its tools comma-joined: one line each.
    if (data.kind === "TOOL_CALL" || data.kind === "TOOL_RESULT") {
      for (const name of data.detail.split(",")) tools.append(el("li", {}, data.kind + ": " + name));
    }
    streamedState = data.state;
    showState(data.state);
  }, controller.signal);
  return () => controller.abort();
}

function approvalCard(request, onDecided) {
  const reason = el("input", { type: "text", placeholder: "reason (the model reads a denial's)", "data-testid": "reason" });
  const editor = el("textarea", { "data-testid": "arguments", hidden: "" });
  editor.value = pretty(request.arguments_json);
  const decide = async (decision) => {
    const body = { decision, reason: reason.value };
    if (decision === "edit") {
      if (editor.hidden) { editor.hidden = false; editor.focus(); return; }
      try { body.arguments = JSON.parse(editor.value); } catch (err) {
        notice("The edited arguments are not JSON: " + err.message + ". Fix them and press Edit again."); return;
      }
    }
    try {
      const done = await api("POST", "/v1/approvals/" + encodeURIComponent(request.approval_id), body);
      notice("Decided " + done.approval_id + ": " + done.decision + " (by " + done.who + ")", true);
      onDecided(request.approval_id);
    } catch (err) { if (err.status !== 401) notice(explain(err)); }
  };
  const facts = [["Task", taskLink(request.task_id)], ["Agent", request.agent_type], ["Tool", request.tool],
    ["Tool does", request.tool_description || "-"], ["Input", request.input], ["Answer so far", request.answer_so_far || "-"],
    ["Requested", when(request.requested_at)], ["Deadline", when(request.deadline)], ["Approvers", request.approvers || "-"]];
  return el("div", { class: "card", "data-approval": request.approval_id },
    el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h4", {}, "Arguments"), el("pre", {}, pretty(request.arguments_json)), editor,
    el("div", { class: "actions" }, reason,
      el("button", { type: "button", onclick: () => decide("approve") }, "Approve"),
      el("button", { type: "button", onclick: () => decide("deny") }, "Deny"),
      el("button", { type: "button", onclick: () => decide("edit") }, "Edit arguments")));
}

function approvalsPage(view) {
  const list = el("div", { "data-testid": "approvals" });
  const empty = el("p", { class: "muted", hidden: "" }, "Nothing waits for a decision."); // until the first answer
  view.append(el("h2", {}, "Approvals"), el("p", { class: "muted" }, "Tool calls that wait for a human; refreshed every 2 s."),
    empty, list);
  const shown = new Map();
  const drop = (id) => { shown.get(id)?.remove(); shown.delete(id); empty.hidden = shown.size > 0; };
  return pollEvery(POLL_MS, async () => {
    const pending = await api("GET", "/v1/approvals");
    const ids = new Set(pending.map((r) => r.approval_id));
    for (const id of [...shown.keys()]) if (!ids.has(id)) drop(id);
    // Cards already shown stay as they are, so a refresh never wipes an edit in progress.
    for (const request of pending) {
      if (shown.has(request.approval_id)) continue;
      const card = approvalCard(request, drop);
      shown.set(request.approval_id, card);
      list.append(card);
    }
    empty.hidden = shown.size > 0;
  });
}

function dlqPage(view) {
  const box = el("div", {}, el("p", { class: "muted" }, "Reading the dead letter topic..."));
  view.append(el("h2", {}, "Dead letters"), box);
  api("GET", "/v1/dlq").then((letters) => {
    if (!letters.length) { box.replaceChildren(el("p", { class: "muted" }, "No dead letters for your tenant.")); return; }
    box.replaceChildren(table(["Id", "Dead-lettered", "Stage", "Error", "Task", "Attempts"], letters.map((d) =>
      el("tr", { "data-letter": d.id },
        el("td", {}, el("a", { href: "#/dlq/" + encodeURIComponent(d.id) }, d.id)), el("td", {}, when(d.dead_lettered_at)),
        el("td", {}, d.stage), el("td", {}, d.error_class + " " + d.error_type + ": " + d.error_message),
        el("td", {}, d.task_id ? taskLink(d.task_id) : "-"), el("td", {}, d.attempts))), "dlq"));
  }).catch((err) => { if (err.status !== 401) box.replaceChildren(el("p", {}, explain(err))); });
  return () => {};
}

function letterPage(view, letterId) {
  const shown = el("pre", { "data-testid": "letter" }, "Loading...");
  const replay = async () => {
    try {
      const done = await api("POST", "/v1/dlq/" + encodeURIComponent(letterId) + "/replay");
      notice("Replayed " + done.id + " to " + done.topic + "[" + done.partition + "]", true);
    } catch (err) { if (err.status !== 401) notice(explain(err)); }
  };
  view.append(el("h2", {}, "Dead letter ", el("code", {}, letterId)),
    el("div", { class: "actions" }, el("button", { type: "button", onclick: replay }, "Replay")), shown);
  api("GET", "/v1/dlq/" + encodeURIComponent(letterId)).then((letter) => { shown.textContent = letter.text; })
    .catch((err) => { if (err.status !== 401) shown.textContent = explain(err); });
  return () => {};
}

// ---- routing and login ----------------------------------------------------------------

function route() {
  stopPage();
  const view = document.getElementById("view");
  view.replaceChildren();
  if (!credential()) { showLogin(); return; }
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = credential().kind === "jwt" ? "signed in with a token" : "signed in with an API key";
  view.hidden = false;
  const [, page, ident] = (location.hash || "#/tasks").match(/^#\/([a-z]+)(?:\/(.+))?$/) || [null, "tasks", null];
  const id = ident ? decodeURIComponent(ident) : null;
  if (page === "approvals") stopPage = approvalsPage(view);
  else if (page === "dlq") stopPage = id ? letterPage(view, id) : dlqPage(view);
  else stopPage = id ? taskPage(view, id) : tasksPage(view);
}

function showLogin() {
  document.getElementById("nav").hidden = true;
  document.getElementById("view").hidden = true;
  document.getElementById("login").hidden = false;
}

function loggedOut(message) {
  sessionStorage.removeItem(STORAGE_KEY);
  stopPage();
  stopPage = () => {};
  showLogin();
  notice(message);
}

async function logIn(event) {
  event.preventDefault();
  const value = document.getElementById("credential").value.trim();
  const chosen = document.getElementById("credential-kind").value;
  const cred = { kind: chosen === "auto" ? (looksLikeJwt(value) ? "jwt" : "key") : chosen, value };
  try {
    await api("GET", "/v1/approvals", undefined, cred); // an operator-only route: checks the role too
  } catch (err) {
    notice("Login failed. " + explain(err));
    return;
  }
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(cred));
  document.getElementById("credential").value = "";
  notice("");
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", logIn);
  document.getElementById("logout").addEventListener("click", () => loggedOut("Logged out."));
  window.addEventListener("hashchange", route);
  route();
});
