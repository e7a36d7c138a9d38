// duractor dashboard: a single page over the HTTP API. Every view is a function of the URL
// hash (`#/instances?status=Running`), so every page is linkable. Data only ever enters the
// DOM as text (no innerHTML), so payloads cannot inject markup.
"use strict";

const TOKEN_KEY = "duractor.apiToken";
const THEME_KEY = "duractor.theme";
const STATUSES = ["Pending", "Running", "Suspended", "Completed", "Failed", "Terminated"];
const PAGE_SIZE = 50;
const HISTORY_PAGE = 100;
let refreshTimer = null;
let renderSeq = 0;

// ---------- small DOM helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function toast(message, bad) {
  const box = h("div", { class: bad ? "bad" : "" }, message);
  document.getElementById("toast").append(box);
  setTimeout(() => box.remove(), bad ? 9000 : 4000);
}

function badge(status) {
  return h("span", { class: `badge st-${status}`, "data-status": status }, status);
}

function copyable(text) {
  return h("span", { class: "mono" }, text,
    h("button", { class: "copy", type: "button", title: "Copy", onclick: () => navigator.clipboard && navigator.clipboard.writeText(text).then(() => toast(`copied ${text}`)) }, "copy"));
}

function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: `${d.toISOString()} (UTC)` }, d.toLocaleString());
}

function json(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "null");
  return h("pre", {}, JSON.stringify(value, null, 2));
}

function instanceLink(id) {
  return h("a", { href: `#/instance/${encodeURIComponent(id)}`, "data-instance": id }, id);
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  if (response.status === 401) {
    // The caller's view shows the token form (once, for the current page: see `render`).
    throw new ApiError(401, "unauthorized", token ? "The token was refused by the server." : "this server needs an API token");
  }
  const text = await response.text();
  if (options.raw) return { status: response.status, text };
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const err = body && body.error ? body.error : { code: String(response.status), message: text };
    throw new ApiError(response.status, err.code, err.message);
  }
  return { status: response.status, body, headers: response.headers };
}

/// Runs an action the user confirmed; reports the API's own error text.
async function act(what, question, call, after) {
  if (question && !window.confirm(question)) return;
  try {
    await call();
    toast(`${what}: done`);
    if (after) after();
  } catch (e) {
    toast(`${what} failed: ${e.message}`, true);
    if (e.status === 401) showTokenForm(e.message);
  }
}

function showTokenForm(problem) {
  const main = document.getElementById("main");
  main.replaceChildren(h("div", { class: "panel", id: "token-form" },
    h("h1", {}, "API token"),
    h("p", {}, "This server requires an API token (the value of DURACTOR_API_TOKEN). It is kept in this browser and sent with every request."),
    problem ? h("p", { class: "error" }, problem) : null,
    h("form", { onsubmit: (e) => {
      e.preventDefault();
      localStorage.setItem(TOKEN_KEY, e.target.token.value.trim());
      render();
    } },
      h("div", { class: "actions" },
        h("input", { name: "token", type: "password", placeholder: "token", autocomplete: "off", size: 40, required: true }),
        h("button", { class: "primary", type: "submit" }, "Use token")))));
}

// ---------- routing ----------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const q = params ? new URLSearchParams([...params].filter(([, v]) => v !== "" && v !== null)).toString() : "";
  location.hash = `#${path}${q ? `?${q}` : ""}`;
}

async function render() {
  if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; }
  const seq = ++renderSeq;
  const { parts, params } = route();
  const page = parts[0] || "overview";
  for (const a of document.querySelectorAll("[data-nav]")) {
    const nav = a.getAttribute("data-nav");
    a.classList.toggle("active", nav === page || (nav === "instances" && page === "instance") || (nav === "entities" && page === "entity") || (nav === "schedules" && page === "schedule"));
  }
  const main = document.getElementById("main");
  const view = {
    overview: () => overview(),
    instances: () => instances(params),
    instance: () => instance(parts.slice(1).join("/"), params),
    entities: () => entities(params),
    entity: () => entity(parts[1], parts.slice(2).join("/")),
    schedules: () => schedules(),
    schedule: () => schedule(parts.slice(1).join("/")),
    functions: () => functions(),
  }[page];
  try {
    const node = view ? await view() : h("p", {}, `No page ${page}.`);
    if (seq === renderSeq && node) main.replaceChildren(node);
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e.status === 401) showTokenForm(localStorage.getItem(TOKEN_KEY) ? e.message : null);
    else main.replaceChildren(h("div", { class: "panel" }, h("p", { class: "error" }, e.message)));
  }
}

function refreshEvery(ms, fn) {
  refreshTimer = setInterval(() => { if (!document.hidden) fn(); }, ms);
}

// ---------- overview ----------

const samples = [];

function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-z_]+)(\{([^}]*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").split(",")) {
      const kv = pair.match(/^([a-z_]+)="(.*)"$/);
      if (kv) labels[kv[1]] = kv[2];
    }
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

function metric(metrics, name, labels) {
  const rows = (metrics[name] || []).filter((r) => Object.entries(labels || {}).every(([k, v]) => r.labels[k] === v));
  return rows.reduce((sum, r) => sum + r.value, 0);
}

function quantile(metrics, name, q) {
  const buckets = (metrics[`${name}_bucket`] || []).map((r) => ({ le: r.labels.le === "+Inf" ? Infinity : Number(r.labels.le), n: r.value })).sort((a, b) => a.le - b.le);
  const total = buckets.length ? buckets[buckets.length - 1].n : 0;
  if (!total) return null;
  const want = total * q;
  for (const b of buckets) if (b.n >= want) return b.le;
  return null;
}

function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s === Infinity) return "> max bucket";
  return s < 1 ? `≤ ${Math.round(s * 1000 * 10) / 10} ms` : `≤ ${s} s`;
}

function sparkline(points, label) {
  const w = 300, hgt = 60;
  if (points.length < 2) return h("p", { class: "muted" }, `${label}: collecting… (one sample every 2 s)`);
  const max = Math.max(...points, 1);
  const step = w / (points.length - 1);
  const d = points.map((p, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(hgt - (p / max) * (hgt - 4) - 2).toFixed(1)}`).join(" ");
  return h("div", {}, h("div", { class: "l muted" }, `${label}: now ${points[points.length - 1].toFixed(1)}/s, peak ${max.toFixed(1)}/s`),
    svg("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none" }, svg("path", { d })));
}

async function overview() {
  const [metricsResponse, health] = await Promise.all([api("metrics", { raw: true }), api("health").catch((e) => ({ body: { status: e.message } }))]);
  if (metricsResponse.status >= 400) throw new Error(metricsResponse.text);
  const m = parseMetrics(metricsResponse.text);
  const now = Date.now();
  samples.push({ t: now, turns: metric(m, "duractor_turns_total"), acts: metric(m, "duractor_activity_executions_total") });
  while (samples.length > 150) samples.shift();
  const rate = (key) => samples.slice(1).map((s, i) => Math.max(0, (s[key] - samples[i][key]) / ((s.t - samples[i].t) / 1000)));
  const statusCards = STATUSES.map((s) => h("a", { class: `card status st-${s}`, href: `#/instances?status=${s}`, "data-count": s },
    h("div", { class: "n" }, String(metric(m, "duractor_instances", { status: s }))), h("div", { class: "l" }, s)));
  const node = h("div", { id: "overview" },
    h("h1", {}, "Overview"),
    h("h2", {}, "Instances by status"),
    h("div", { class: "grid" }, statusCards),
    h("h2", {}, "Work"),
    h("div", { class: "grid" },
      card(metric(m, "duractor_activities_running"), "activities running"),
      card(metric(m, "duractor_activities_waiting"), "activities waiting for a slot"),
      card(metric(m, "duractor_queue_depth", { queue: "ready" }), "messages ready"),
      card(metric(m, "duractor_queue_depth", { queue: "timers" }), "timers pending"),
      card(metric(m, "duractor_queue_depth", { queue: "activities" }), "activity items queued or running"),
      card(metric(m, "duractor_instances_loaded"), "instances in memory")),
    h("h2", {}, "Latency (since this worker started)"),
    h("div", { class: "grid" },
      card(seconds(quantile(m, "duractor_turn_duration_seconds", 0.5)), "turn p50"),
      card(seconds(quantile(m, "duractor_turn_duration_seconds", 0.99)), "turn p99"),
      card(seconds(quantile(m, "duractor_activity_duration_seconds", 0.5)), "activity p50"),
      card(seconds(quantile(m, "duractor_activity_duration_seconds", 0.99)), "activity p99")),
    h("h2", {}, "Throughput (while this page is open)"),
    h("div", { class: "grid" }, h("div", { class: "card wide" }, sparkline(rate("turns"), "turns")), h("div", { class: "card wide" }, sparkline(rate("acts"), "activity executions"))),
    h("h2", {}, "Workers"),
    h("div", { class: "panel" },
      h("p", {}, "This server's worker: ", health.body && health.body.worker ? copyable(health.body.worker) : h("span", { class: "muted" }, "unknown"),
        " — store ", h("b", {}, metric(m, "duractor_store_up") ? "reachable" : "unreachable")),
      h("p", { class: "muted" }, "Other processes serving the same store report on their own /metrics.")));
  refreshEvery(2000, () => overview().then((n) => { const cur = document.getElementById("overview"); if (cur) cur.replaceWith(n); }).catch(() => {}));
  return node;
}

function card(value, label) {
  return h("div", { class: "card" }, h("div", { class: "n" }, String(value)), h("div", { class: "l" }, label));
}

// ---------- instances ----------

let functionsCache = null;
async function loadFunctions() {
  if (!functionsCache) functionsCache = (await api("functions")).body;
  return functionsCache;
}

function toIso(local) { return local ? new Date(local).toISOString() : ""; }
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function instances(params) {
  const fns = await loadFunctions().catch(() => ({ orchestrators: [] }));
  const selected = (params.get("status") || "").split(",").filter(Boolean);
  const query = new URLSearchParams({ top: String(PAGE_SIZE), showInput: "false" });
  if (selected.length) query.set("runtimeStatus", selected.join(","));
  for (const [p, q] of [["prefix", "instanceIdPrefix"], ["name", "name"], ["from", "createdTimeFrom"], ["to", "createdTimeTo"], ["after", "continuationToken"]]) {
    if (params.get(p)) query.set(q, params.get(p));
  }
  const { body } = await api(`instances?${query}`);
  const filters = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    const status = STATUSES.filter((s) => f[`st-${s}`].checked).join(",");
    go("/instances", new URLSearchParams({ status, name: f.name.value, prefix: f.prefix.value.trim(), from: toIso(f.from.value), to: toIso(f.to.value), live: params.get("live") || "" }));
  } },
    h("fieldset", { class: "actions", style: "border:none;padding:0;margin:0" }, STATUSES.map((s) =>
      h("label", { class: "inline" }, h("input", { type: "checkbox", name: `st-${s}`, checked: selected.includes(s) }), badge(s)))),
    h("label", {}, "Orchestrator", h("select", { name: "name" }, h("option", { value: "" }, "any"),
      fns.orchestrators.map((o) => h("option", { value: o.name, selected: params.get("name") === o.name }, o.name)))),
    h("label", {}, "Id prefix", h("input", { name: "prefix", value: params.get("prefix") || "", placeholder: "order-" })),
    h("label", {}, "Created from", h("input", { name: "from", type: "datetime-local", value: toLocalInput(params.get("from")) })),
    h("label", {}, "Created before", h("input", { name: "to", type: "datetime-local", value: toLocalInput(params.get("to")) })),
    h("button", { class: "primary", type: "submit" }, "Filter"),
    h("label", { class: "inline" }, h("input", { type: "checkbox", name: "live", checked: params.get("live") === "1", onchange: (e) => {
      const p = new URLSearchParams(params); p.set("live", e.target.checked ? "1" : ""); go("/instances", p);
    } }), "live refresh"));
  const rows = body.instances.map((i) => h("tr", { "data-row": i.instanceId },
    h("td", {}, h("input", { type: "checkbox", class: "pick", value: i.instanceId, "aria-label": `select ${i.instanceId}` })),
    h("td", {}, instanceLink(i.instanceId)),
    h("td", {}, i.name, i.version ? h("span", { class: "muted" }, ` v${i.version}`) : null),
    h("td", {}, badge(i.runtimeStatus)),
    h("td", { class: "hide-sm" }, time(i.createdTime)),
    h("td", { class: "hide-sm" }, time(i.lastUpdatedTime))));
  const picked = () => [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
  const bulk = (what, call) => act(what, `${what} ${picked().length} selected instance(s)?`, async () => {
    const ids = picked();
    if (!ids.length) throw new Error("select instances first");
    const errors = [];
    for (const id of ids) { try { await call(id); } catch (e) { errors.push(`${id}: ${e.message}`); } }
    if (errors.length) throw new Error(errors.join("\n"));
  }, render);
  const next = new URLSearchParams(params);
  next.set("after", body.continuationToken || "");
  const node = h("div", { id: "instances" },
    h("h1", {}, "Instances"),
    filters,
    h("div", { class: "actions", style: "margin-bottom:8px" },
      h("button", { type: "button", onclick: () => document.querySelectorAll("input.pick").forEach((c) => { c.checked = !c.checked; }) }, "Select all / none"),
      h("button", { type: "button", class: "danger", onclick: () => bulk("Terminate", (id) => api(`instances/${encodeURIComponent(id)}/terminate?reason=${encodeURIComponent("terminated from the dashboard")}`, { method: "POST" })) }, "Terminate selected"),
      h("button", { type: "button", class: "danger", onclick: () => bulk("Purge", (id) => api(`instances/${encodeURIComponent(id)}`, { method: "DELETE" })) }, "Purge selected")),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "Instance"), h("th", {}, "Orchestrator"), h("th", {}, "Status"), h("th", { class: "hide-sm" }, "Created"), h("th", { class: "hide-sm" }, "Updated"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No instances match."))))),
    h("div", { class: "pager" },
      params.get("after") ? h("a", { href: `#/instances?${new URLSearchParams([...params].filter(([k]) => k !== "after"))}` }, "« first page") : null,
      body.continuationToken ? h("a", { href: `#/instances?${next}`, id: "next-page" }, "next page »") : h("span", { class: "muted" }, "end of list")));
  if (params.get("live") === "1") refreshEvery(3000, () => { if (!document.querySelector("input.pick:checked")) render(); });
  return node;
}

// ---------- one instance ----------

/// What history says the instance waits on now, and the timeline's bars.
function analyse(events, running) {
  const now = Date.now();
  const bars = [];
  const open = new Map();
  const t = (e) => (e.timestamp ? Date.parse(e.timestamp) : now);
  for (const e of events) {
    const at = t(e);
    switch (e.eventType) {
      case "TaskScheduled": open.set(e.seq, { kind: "activity", label: e.name, start: at, seq: e.seq }); break;
      case "TimerCreated": open.set(e.seq, { kind: "timer", label: "timer", start: at, end: Date.parse(e.fireAt), fireAt: e.fireAt, seq: e.seq }); break;
      case "SubOrchestrationScheduled": open.set(e.seq, { kind: "sub", label: `${e.name} (${e.instanceId})`, start: at, seq: e.seq, child: e.instanceId }); break;
      case "EntityCalled": open.set(e.seq, { kind: "entity", label: `${e.entity || ""}.${e.operation}`, start: at, seq: e.seq }); break;
      case "EntitySignaled": bars.push({ kind: "entity", label: `signal ${e.entity || ""}.${e.operation}`, start: at, end: at, done: true, ok: true }); break;
      case "EntityLockRequested": open.set(`lock${e.seq}`, { kind: "lock", label: `lock ${(e.entities || []).join(", ")} (requested)`, start: at, seq: e.seq }); break;
      case "EntityLockGranted": {
        const req = open.get(`lock${e.seq}`);
        if (req) { open.delete(`lock${e.seq}`); bars.push(Object.assign(req, { end: at, done: true, ok: true })); open.set("held", { kind: "lock", label: req.label.replace("(requested)", "(held)"), start: at }); }
        break;
      }
      case "EntityUnlockSent": { const held = open.get("held"); if (held) { open.delete("held"); bars.push(Object.assign(held, { end: at, done: true, ok: true })); } break; }
      case "EventRaised": bars.push({ kind: "event", label: `event ${e.name}`, start: at, end: at, done: true, ok: true }); break;
      case "CallCancelled": {
        const call = open.get(e.seq);
        if (call) {
          open.delete(e.seq);
          bars.push(Object.assign(call, { label: `${call.label} (cancelled)`, end: at, done: true, ok: false, cancelled: true, failure: e.reason ? `cancelled: ${e.reason}` : "cancelled" }));
        }
        break;
      }
      case "TaskCompleted": case "TaskFailed": case "TimerFired": case "SubOrchestrationCompleted": case "SubOrchestrationFailed": case "EntityCompleted": case "EntityFailed": {
        const call = open.get(e.seq);
        if (call) {
          open.delete(e.seq);
          const ok = !e.eventType.endsWith("Failed");
          bars.push(Object.assign(call, { end: call.kind === "timer" ? Math.max(at, call.end || at) : at, done: true, ok, failure: ok ? null : e.failureDetails || e.reason }));
        }
        break;
      }
      default:
    }
  }
  const waiting = [...open.values()];
  // A finished instance waits for nothing: its open calls end where its history ends.
  const last = events.length ? t(events[events.length - 1]) : now;
  for (const w of waiting) {
    const end = running ? (w.kind === "timer" ? w.end : now) : Math.min(w.kind === "timer" ? w.end : last, last);
    bars.push(Object.assign({}, w, { end, done: false }));
  }
  bars.sort((a, b) => a.start - b.start);
  return { bars, waiting };
}

function timeline(bars, running, events) {
  const shown = bars.slice(0, 400);
  const starts = events.map((e) => (e.timestamp ? Date.parse(e.timestamp) : NaN)).filter((x) => !Number.isNaN(x));
  const t0 = Math.min(...starts, ...shown.map((b) => b.start));
  const t1 = Math.max(...shown.map((b) => b.end || b.start), ...starts, running ? Date.now() : 0, t0 + 1);
  const rowH = 22, labelW = 230, width = 1000, plotW = width - labelW - 10;
  const x = (t) => labelW + ((t - t0) / (t1 - t0)) * plotW;
  const height = shown.length * rowH + 30;
  const rows = shown.map((b, i) => {
    const y = 20 + i * rowH;
    const x0 = x(b.start), x1 = Math.max(x(b.end || b.start), x0 + 3);
    const cls = `bar-${b.kind}${b.done ? (b.cancelled ? " cancelled" : b.ok ? " ok" : " failed") : " open"}`;
    const dur = ((b.end || b.start) - b.start) / 1000;
    const why = b.failure ? (typeof b.failure === "string" ? b.failure : b.failure.message) : "";
    const tip = `${b.label}: ${new Date(b.start).toLocaleString()} → ${b.done ? new Date(b.end).toLocaleString() : b.kind === "timer" ? `due ${new Date(b.end).toLocaleString()}` : "running"} (${dur.toFixed(3)} s)${why ? ` — ${b.cancelled ? why : `failed: ${why}`}` : ""}`;
    return svg("g", { "data-bar": b.kind, "data-label": b.label },
      svg("text", { x: 4, y: y + 14 }, b.label.length > 34 ? `${b.label.slice(0, 33)}…` : b.label),
      svg("rect", { x: x0, y: y + 3, width: x1 - x0, height: rowH - 7, rx: 3, class: cls }, svg("title", {}, tip)));
  });
  const axis = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const t = t0 + f * (t1 - t0);
    return svg("g", {}, svg("line", { x1: x(t), x2: x(t), y1: 14, y2: height, class: "axis" }),
      svg("text", { x: Math.min(x(t) + 2, width - 60), y: 11 }, `+${((t - t0) / 1000).toFixed(t1 - t0 < 10000 ? 2 : 0)} s`));
  });
  const nowLine = running ? svg("line", { x1: x(Date.now()), x2: x(Date.now()), y1: 14, y2: height, class: "now", "data-now": "1" }, svg("title", {}, "now")) : null;
  return h("div", { class: "timeline", id: "timeline" },
    h("div", { class: "legend" }, [["activity", "var(--completed)"], ["timer", "var(--timer)"], ["sub-orchestration", "var(--terminated)"], ["entity call", "var(--suspended)"], ["lock", "var(--lock)"], ["event", "var(--event)"], ["failed", "var(--failed)"], ["cancelled (dashed)", "var(--cancelled)"], ["in progress (faded)", "var(--running)"]].map(([l, c]) => h("span", {}, h("i", { style: `background:${c}` }), l))),
    shown.length ? svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, axis, rows, nowLine) : h("p", { class: "muted" }, "No calls yet."),
    bars.length > shown.length ? h("p", { class: "muted" }, `Showing the first ${shown.length} of ${bars.length} calls.`) : null);
}

function historyTable(events, page, id) {
  const pages = Math.max(1, Math.ceil(events.length / HISTORY_PAGE));
  const p = Math.min(Math.max(page, 0), pages - 1);
  const rows = events.slice(p * HISTORY_PAGE, (p + 1) * HISTORY_PAGE).map((e, i) => {
    const { eventType, timestamp, ...rest } = e;
    const payloadKeys = ["input", "result", "output", "data", "failure", "failureDetails"];
    const details = Object.entries(rest).filter(([k]) => !payloadKeys.includes(k)).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ");
    // `result` repeats `output` for Durable Functions clients: shown once.
    const payloads = payloadKeys.filter((k) => k in rest && !(k === "result" && "output" in rest)).map((k) => h("details", {}, h("summary", {}, k), json(rest[k])));
    return h("tr", {}, h("td", { class: "mono" }, String(p * HISTORY_PAGE + i)), h("td", {}, time(timestamp)), h("td", {}, eventType), h("td", { class: "mono" }, details, payloads));
  });
  return h("div", { id: "history" },
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Turn time"), h("th", {}, "Event"), h("th", {}, "Details"))), h("tbody", {}, rows))),
    h("div", { class: "pager" },
      p > 0 ? h("a", { href: `#/instance/${encodeURIComponent(id)}?page=${p - 1}` }, "« previous") : null,
      h("span", { class: "muted" }, events.length ? `events ${p * HISTORY_PAGE}–${Math.min(events.length, (p + 1) * HISTORY_PAGE) - 1} of ${events.length}` : "no events yet"),
      p < pages - 1 ? h("a", { href: `#/instance/${encodeURIComponent(id)}?page=${p + 1}` }, "next »") : null));
}

async function instance(id, params) {
  const enc = encodeURIComponent(id);
  const [{ body: st }, waitingAnswer] = await Promise.all([
    api(`instances/${enc}?showInput=true&showHistory=true&showHistoryOutput=true`),
    api(`instances/${enc}/waiting`).then((r) => r.body).catch((e) => ({ events: null, reason: e.message })),
  ]);
  // What holds a Pending instance back, as the server sees it (its limits, its key's counts).
  const held = st.runtimeStatus === "Pending" ? waitingAnswer.flowControl : null;
  const events = st.historyEvents || [];
  const running = ["Pending", "Running", "Suspended"].includes(st.runtimeStatus);
  const { bars, waiting } = analyse(events, running);
  const started = events.find((e) => e.eventType === "ExecutionStarted");
  const parent = started && started.parent && started.parent.instanceId;
  const children = [...new Set(events.filter((e) => e.eventType === "SubOrchestrationScheduled").map((e) => e.instanceId))];
  const failure = st.failureDetails;
  const awaited = waitingAnswer.events || [];
  const reload = () => render();
  const post = (path) => () => api(`instances/${enc}/${path}`, { method: "POST" });
  const reason = (what) => encodeURIComponent(`${what} from the dashboard`);
  const waitList = running ? h("ul", { class: "waits", id: "waiting" },
    waiting.map((w) => h("li", { "data-wait": w.kind },
      w.kind === "timer" ? [h("b", {}, "timer"), " due ", time(w.fireAt)]
        : w.kind === "activity" ? [h("b", {}, "activity "), h("code", {}, w.label), " (call #", String(w.seq), ", since ", time(new Date(w.start).toISOString()), ")"]
          : w.kind === "sub" ? [h("b", {}, "sub-orchestration "), instanceLink(w.child)]
            : [h("b", {}, w.kind === "lock" ? "lock " : "entity "), h("code", {}, w.label)])),
    awaited.map((name) => h("li", { "data-wait": "event", "data-event": name }, h("b", {}, "event "), h("code", {}, name))),
    waitingAnswer.events === null && waitingAnswer.reason ? h("li", { class: "muted" }, `events: unknown (${waitingAnswer.reason})`) : null,
    held ? h("li", { "data-wait": "flow" }, h("b", {}, "a flow-control slot: "),
      `${st.name} runs ${flowText(held.limits)}; ${held.running} running${held.key === null || held.key === undefined ? "" : ` for key ${held.key}`}, ${held.waiting} waiting; this instance starts when one is free, unless it was just let run (see `, h("a", { href: "#/functions" }, "Functions"), ")") : null,
    !waiting.length && !awaited.length && !held ? h("li", { class: "muted" }, st.runtimeStatus === "Pending" ? "not started yet" : "nothing: a turn is running or about to") : null) : null;
  const raiseForm = h("form", { id: "raise-form", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    let data;
    try { data = f.data.value.trim() ? JSON.parse(f.data.value) : null; } catch (err) { toast(`The event data is not JSON: ${err.message}`, true); return; }
    act(`Raise ${f.event.value}`, `Raise event “${f.event.value}” to ${id}?`, () => api(`instances/${enc}/raiseEvent/${encodeURIComponent(f.event.value)}`, { method: "POST", body: JSON.stringify(data) }), () => setTimeout(reload, 300));
  } },
    h("div", { class: "actions" },
      h("input", { name: "event", placeholder: "event name", required: true, value: awaited[0] || "", list: "awaited" }),
      h("datalist", { id: "awaited" }, awaited.map((n) => h("option", { value: n }))),
      h("button", { class: "primary", type: "submit" }, "Raise event")),
    h("textarea", { name: "data", placeholder: "JSON data, e.g. {\"approved\": true}" }));
  const node = h("div", { id: "instance", "data-status": st.runtimeStatus },
    h("h1", {}, copyable(st.instanceId), badge(st.runtimeStatus)),
    h("div", { class: "panel" }, h("dl", { class: "kv" },
      h("dt", {}, "Orchestrator"), h("dd", {}, st.name, st.version ? ` (version ${st.version})` : ""),
      h("dt", {}, "Created"), h("dd", {}, time(st.createdTime)),
      h("dt", {}, "Updated"), h("dd", {}, time(st.lastUpdatedTime)),
      h("dt", {}, "Completed"), h("dd", {}, time(st.completedTime)),
      parent ? [h("dt", {}, "Parent"), h("dd", {}, instanceLink(parent))] : null,
      children.length ? [h("dt", {}, "Children"), h("dd", {}, children.map((c) => [instanceLink(c), " "]))] : null,
      h("dt", {}, "Custom status"), h("dd", { id: "custom-status" }, json(st.customStatus)),
      h("dt", {}, "Input"), h("dd", {}, json(st.input)),
      h("dt", {}, "Output"), h("dd", { id: "output" }, st.runtimeStatus === "Completed" || st.runtimeStatus === "Terminated" ? json(st.output) : h("span", { class: "muted" }, "—")),
      failure ? [h("dt", {}, "Failure"), h("dd", { id: "failure" }, failureView(failure))] : null)),
    running ? [h("h2", {}, "Waiting on now"), h("div", { class: "panel" }, waitList)] : null,
    h("h2", {}, "Timeline"),
    h("div", { class: "panel" }, timeline(bars, running, events)),
    h("h2", {}, "Actions"),
    h("div", { class: "panel" },
      running ? raiseForm : null,
      h("div", { class: "actions", style: "margin-top:10px" },
        running ? h("button", { type: "button", class: "danger", id: "terminate", onclick: () => act("Terminate", `Terminate ${id} and its sub-orchestrations?`, () => api(`instances/${enc}/terminate?cascade=true&reason=${reason("terminated")}`, { method: "POST" }), () => setTimeout(reload, 300)) }, "Terminate (cascade)") : null,
        st.runtimeStatus === "Running" || st.runtimeStatus === "Pending" ? h("button", { type: "button", onclick: () => act("Suspend", `Suspend ${id}?`, post(`suspend?reason=${reason("suspended")}`), () => setTimeout(reload, 300)) }, "Suspend") : null,
        st.runtimeStatus === "Suspended" ? h("button", { type: "button", onclick: () => act("Resume", `Resume ${id}?`, post(`resume?reason=${reason("resumed")}`), () => setTimeout(reload, 300)) }, "Resume") : null,
        st.runtimeStatus === "Failed" ? h("button", { type: "button", onclick: () => act("Rewind", `Rewind ${id}: run its failed calls again?`, post(`rewind?reason=${reason("rewound")}`), () => setTimeout(reload, 300)) }, "Rewind") : null,
        !running ? h("button", { type: "button", onclick: () => act("Restart", `Start ${id} again with the same input?`, post("restart"), () => setTimeout(reload, 300)) }, "Restart") : null,
        !running ? h("button", { type: "button", class: "danger", onclick: () => act("Purge", `Delete ${id} and its history?`, () => api(`instances/${enc}`, { method: "DELETE" }), () => go("/instances")) }, "Purge") : null)),
    h("h2", {}, `History (${events.length} events)`),
    historyTable(events, Number(params.get("page") || 0), id));
  if (running) refreshEvery(2000, () => {
    const active = document.activeElement;
    if (active && (active.tagName === "TEXTAREA" || active.tagName === "INPUT")) return;
    render();
  });
  return node;
}

function failureView(f) {
  const nondeterminism = f.kind === "nondeterminism" && f.message.match(/position (\d+): history recorded (.*), but the orchestrator code now (.*?)\. /);
  return h("div", {},
    h("p", { class: "error" }, `${f.kind}: ${f.message}`),
    nondeterminism ? h("dl", { class: "kv", id: "nondeterminism" },
      h("dt", {}, "Position"), h("dd", {}, nondeterminism[1]),
      h("dt", {}, "History recorded"), h("dd", {}, nondeterminism[2]),
      h("dt", {}, "The code now"), h("dd", {}, nondeterminism[3])) : null,
    f.cause ? h("details", {}, h("summary", {}, "cause"), failureView(f.cause)) : null);
}

// ---------- entities ----------

async function entities(params) {
  const fns = await loadFunctions().catch(() => ({ entityOperations: [] }));
  const names = [...new Set(fns.entityOperations.map((o) => o.name.split(".")[0]))];
  const query = new URLSearchParams({ top: String(PAGE_SIZE) });
  if (params.get("prefix")) query.set("keyPrefix", params.get("prefix"));
  if (params.get("empty") === "1") query.set("includeEmpty", "true");
  if (params.get("after")) query.set("continuationToken", params.get("after"));
  const path = params.get("name") ? `entities/${encodeURIComponent(params.get("name"))}` : "entities";
  const { body } = await api(`${path}?${query}`);
  const list = body.entities || [];
  const next = new URLSearchParams(params); next.set("after", body.continuationToken || "");
  return h("div", { id: "entities" },
    h("h1", {}, "Entities"),
    h("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const f = e.target;
      go("/entities", new URLSearchParams({ name: f.name.value, prefix: f.prefix.value.trim(), empty: f.empty.checked ? "1" : "" }));
    } },
      h("label", {}, "Entity", h("select", { name: "name" }, h("option", { value: "" }, "any"), names.map((n) => h("option", { value: n, selected: params.get("name") === n }, n)))),
      h("label", {}, "Key prefix", h("input", { name: "prefix", value: params.get("prefix") || "" })),
      h("label", { class: "inline" }, h("input", { type: "checkbox", name: "empty", checked: params.get("empty") === "1" }), "include empty"),
      h("button", { class: "primary", type: "submit" }, "Filter")),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Entity"), h("th", {}, "Key"), h("th", {}, "Locked by"), h("th", { class: "hide-sm" }, "Updated"))),
      h("tbody", {}, list.length ? list.map((e) => h("tr", { "data-entity": `${e.name}/${e.key}` },
        h("td", {}, e.name),
        h("td", {}, h("a", { href: `#/entity/${encodeURIComponent(e.name)}/${encodeURIComponent(e.key)}` }, e.key)),
        h("td", {}, e.lockOwner ? instanceLink(e.lockOwner) : h("span", { class: "muted" }, "—")),
        h("td", { class: "hide-sm" }, time(e.lastModifiedTime)))) : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No entities match."))))),
    h("div", { class: "pager" }, body.continuationToken ? h("a", { href: `#/entities?${next}` }, "next page »") : h("span", { class: "muted" }, "end of list")));
}

async function entity(name, key) {
  const path = `entities/${encodeURIComponent(name)}/${encodeURIComponent(key)}`;
  const [answer, fns] = await Promise.all([
    api(path).then((r) => r.body).catch((e) => { if (e.status === 404) return null; throw e; }),
    loadFunctions().catch(() => ({ entityOperations: [] })),
  ]);
  const ops = fns.entityOperations.filter((o) => o.name.startsWith(`${name}.`));
  const reload = () => setTimeout(render, 400);
  // Signals apply in the background: keep the state current while nobody is typing.
  refreshEvery(2000, () => {
    const active = document.activeElement;
    if (active && ["TEXTAREA", "INPUT", "SELECT"].includes(active.tagName)) return;
    render();
  });
  return h("div", { id: "entity" },
    h("h1", {}, `${name} / `, copyable(key)),
    h("div", { class: "panel" }, answer ? h("dl", { class: "kv" },
      h("dt", {}, "State"), h("dd", { id: "entity-state" }, json(answer.state)),
      h("dt", {}, "Locked by"), h("dd", {}, answer.lockOwner ? instanceLink(answer.lockOwner) : h("span", { class: "muted" }, "nobody")),
      h("dt", {}, "Created"), h("dd", {}, time(answer.createdTime)),
      h("dt", {}, "Updated"), h("dd", {}, time(answer.lastModifiedTime))) : h("p", { class: "muted", id: "entity-state" }, "Nothing has addressed this entity yet: signalling it creates it.")),
    h("h2", {}, "Signal an operation"),
    h("form", { class: "panel", id: "signal-form", onsubmit: (e) => {
      e.preventDefault();
      const f = e.target;
      let input;
      try { input = f.input.value.trim() ? JSON.parse(f.input.value) : null; } catch (err) { toast(`The input is not JSON: ${err.message}`, true); return; }
      const at = f.at.value ? `&at=${encodeURIComponent(toIso(f.at.value))}` : "";
      act(`Signal ${f.op.value}`, null, () => api(`${path}?op=${encodeURIComponent(f.op.value)}${at}`, { method: "POST", body: JSON.stringify(input) }), reload);
    } },
      h("div", { class: "actions" },
        h("label", {}, "Operation", h("select", { name: "op" }, ops.map((o) => h("option", { value: o.name.slice(name.length + 1) }, `${o.name.slice(name.length + 1)} (${o.inputType} → ${o.outputType})`)))),
        h("label", {}, "At (optional)", h("input", { name: "at", type: "datetime-local" }))),
      h("textarea", { name: "input", placeholder: "JSON input, e.g. 5" }),
      h("button", { class: "primary", type: "submit" }, "Signal")),
    answer ? h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: () => act("Delete state", `Delete the state of ${name}/${key}?`, () => api(path, { method: "DELETE" }), reload) }, "Delete state")) : null);
}

// ---------- functions ----------

async function functions() {
  functionsCache = null;
  const fns = await loadFunctions();
  const table = (rows, start, limits) => h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Input"), h("th", {}, "Output"), limits ? h("th", {}, "Flow control") : null, start ? h("th", {}, "") : null)),
    h("tbody", {}, rows.map((f) => h("tr", { "data-function": f.name },
      h("td", {}, f.name, f.version ? h("span", { class: "muted" }, ` v${f.version}`) : null),
      h("td", { class: "mono" }, f.inputType), h("td", { class: "mono" }, f.outputType),
      limits ? h("td", { "data-flow": f.name }, f.flowControl ? flowText(f.flowControl) : h("span", { class: "muted" }, "unlimited")) : null,
      start ? h("td", {}, startForm(f.name)) : null)))));
  const limited = fns.activities.concat(fns.orchestrators).filter((f) => f.flowControl).map((f) => f.name);
  const flow = limited.length ? (await api(`flow?name=${[...new Set(limited)].map(encodeURIComponent).join(",")}`)).body.flow : [];
  // While limited work runs or waits, keep its counts current (not while someone types).
  if (flow.some((f) => f.running || f.waiting)) refreshEvery(2000, () => {
    const active = document.activeElement;
    if (active && ["TEXTAREA", "INPUT", "SELECT"].includes(active.tagName)) return;
    render();
  });
  return h("div", { id: "functions" },
    h("h1", {}, "Functions"),
    h("h2", {}, "Orchestrators"), table(fns.orchestrators, true, true),
    h("h2", {}, "Activities"), table(fns.activities, false, true),
    limited.length ? [h("h2", {}, "Flow-controlled work now"), flowTable(flow)] : null,
    h("h2", {}, "Entity operations"), table(fns.entityOperations, false, false));
}

/// An activity's limits in words: "3 at once per /customer, 50 per 1 s".
function flowText(limits) {
  const parts = [];
  if (limits.concurrency) parts.push(`${limits.concurrency} at once`);
  if (limits.rate) parts.push(`${limits.rate.count} per ${span(limits.rate.periodMs)}`);
  return `${parts.join(", ")}${limits.key ? ` (per ${limits.key})` : ""}`;
}

function flowTable(flow) {
  return h("div", { class: "table-wrap" }, h("table", { id: "flow" },
    h("thead", {}, h("tr", {}, h("th", {}, "Function"), h("th", {}, "Key"), h("th", {}, "Running"), h("th", {}, "Waiting"), h("th", {}, "Kind"))),
    h("tbody", {}, flow.length ? flow.map((f) => h("tr", { "data-flow-row": `${f.name}/${f.key || ""}`, "data-kind": f.kind },
      h("td", {}, f.name), h("td", { class: "mono" }, f.key === null || f.key === undefined ? "—" : f.key),
      h("td", {}, String(f.running)), h("td", {}, String(f.waiting)),
      h("td", { class: "muted" }, f.kind === "orchestration" ? "instances (held ones are Pending)" : "activity calls")))
      : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Nothing running or waiting.")))));
}

/// A duration in milliseconds, in the unit that reads best.
function span(ms) {
  if (ms % 86400000 === 0) return `${ms / 86400000} d`;
  if (ms % 3600000 === 0) return `${ms / 3600000} h`;
  if (ms % 60000 === 0) return `${ms / 60000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

// ---------- schedules ----------

const OVERLAPS = { skip: "skip", bufferOne: "buffer one", allowAll: "allow all", terminatePrevious: "terminate previous" };

function timingText(timing) {
  if (timing.cron) return `cron ${timing.cron.cron}${timing.cron.timeZone ? ` (${timing.cron.timeZone})` : " (UTC)"}`;
  const every = timing.every || {};
  return `every ${span(every.everyMs)}${every.offsetMs ? ` + ${span(every.offsetMs)}` : ""}`;
}

function outcome(o) {
  const status = { running: "Running", buffered: "Pending", completed: "Completed", failed: "Failed", skipped: "Terminated" }[o] || "Pending";
  return h("span", { class: `badge st-${status}`, "data-outcome": o }, o);
}

function runLink(run) {
  return run.outcome === "skipped" || run.outcome === "buffered" ? h("span", { class: "mono" }, run.instanceId) : instanceLink(run.instanceId);
}

async function schedules() {
  const [{ body }, fns] = await Promise.all([api("schedules"), loadFunctions().catch(() => ({ orchestrators: [] }))]);
  const list = body.schedules || [];
  const rows = list.map((s) => {
    const last = s.recent.length ? s.recent[s.recent.length - 1] : null;
    return h("tr", { "data-schedule": s.spec.id },
      h("td", {}, h("a", { href: `#/schedule/${encodeURIComponent(s.spec.id)}` }, s.spec.id)),
      h("td", {}, s.spec.orchestrator),
      h("td", { class: "mono" }, timingText(s.spec.timing)),
      h("td", { "data-next": "" }, s.paused ? h("span", { class: "badge st-Suspended", "data-paused": "" }, "paused") : time(s.nextRunAt)),
      h("td", { class: "hide-sm" }, String(s.started), s.skipped ? h("span", { class: "muted" }, ` (${s.skipped} skipped)`) : null),
      h("td", {}, s.running.length ? outcome("running") : last ? outcome(last.outcome) : h("span", { class: "muted" }, "—")));
  });
  refreshEvery(3000, () => {
    const active = document.activeElement;
    if (active && ["TEXTAREA", "INPUT", "SELECT"].includes(active.tagName)) return;
    render();
  });
  return h("div", { id: "schedules" },
    h("h1", {}, "Schedules"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Schedule"), h("th", {}, "Orchestrator"), h("th", {}, "When"), h("th", {}, "Next run"), h("th", { class: "hide-sm" }, "Runs started"), h("th", {}, "Last"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No schedules yet."))))),
    h("h2", {}, "New schedule"),
    scheduleForm(fns.orchestrators));
}

function scheduleForm(orchestrators) {
  return h("form", { class: "panel", id: "schedule-form", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    let input;
    try { input = f.input.value.trim() ? JSON.parse(f.input.value) : null; } catch (err) { toast(`The input is not JSON: ${err.message}`, true); return; }
    const timing = f.kind.value === "cron"
      ? { cron: Object.assign({ cron: f.when.value.trim() }, f.tz.value.trim() ? { timeZone: f.tz.value.trim() } : {}) }
      : { every: { everyMs: Math.round(Number(f.when.value) * 1000) } };
    const spec = {
      id: f.id.value.trim(), orchestrator: f.orchestrator.value, input, timing, overlap: f.overlap.value,
      jitterMs: Math.round(Number(f.jitter.value || 0) * 1000), catchUpWindowMs: Math.round(Number(f.window.value || 0) * 1000),
    };
    act(`Create schedule ${spec.id}`, null, () => api("schedules", { method: "POST", body: JSON.stringify(spec) }), () => go(`/schedule/${encodeURIComponent(spec.id)}`));
  } },
    h("div", { class: "actions" },
      h("label", {}, "Id", h("input", { name: "id", required: true, placeholder: "nightly-report" })),
      h("label", {}, "Orchestrator", h("select", { name: "orchestrator", required: true }, orchestrators.map((o) => h("option", { value: o.name }, o.name)))),
      h("label", {}, "Timing", h("select", { name: "kind" }, h("option", { value: "cron" }, "cron"), h("option", { value: "every" }, "every N seconds"))),
      h("label", {}, "Cron or seconds", h("input", { name: "when", required: true, placeholder: "0 3 * * *  or  60" })),
      h("label", {}, "Time zone (cron)", h("input", { name: "tz", placeholder: "UTC, Europe/Paris…" }))),
    h("div", { class: "actions" },
      h("label", {}, "If a run is still running", h("select", { name: "overlap" }, Object.entries(OVERLAPS).map(([v, l]) => h("option", { value: v }, l)))),
      h("label", {}, "Catch-up window (s; 0: only the latest)", h("input", { name: "window", type: "number", min: 0, value: 0 })),
      h("label", {}, "Jitter (s)", h("input", { name: "jitter", type: "number", min: 0, value: 0 }))),
    h("textarea", { name: "input", placeholder: "JSON input of each run" }),
    h("button", { class: "primary", type: "submit" }, "Create schedule"));
}

async function schedule(id) {
  const enc = encodeURIComponent(id);
  const { body: s } = await api(`schedules/${enc}`);
  const spec = s.spec;
  const reload = () => setTimeout(render, 400);
  const post = (path) => () => api(`schedules/${enc}/${path}`, { method: "POST" });
  const runs = (list, empty) => h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Tick"), h("th", {}, "Outcome"))),
    h("tbody", {}, list.length ? list.map((r) => h("tr", { "data-run": r.instanceId },
      h("td", {}, runLink(r)), h("td", {}, time(r.tick)),
      h("td", {}, outcome(r.outcome), r.failure ? h("span", { class: "error" }, ` ${r.failure.message}`) : null)))
      : h("tr", {}, h("td", { colspan: 3, class: "muted" }, empty)))));
  refreshEvery(2000, () => {
    const active = document.activeElement;
    if (active && ["TEXTAREA", "INPUT", "SELECT"].includes(active.tagName)) return;
    render();
  });
  return h("div", { id: "schedule", "data-paused": String(s.paused) },
    h("h1", {}, copyable(spec.id), s.paused ? h("span", { class: "badge st-Suspended" }, "paused") : h("span", { class: "badge st-Running" }, "active")),
    h("div", { class: "panel" }, h("dl", { class: "kv" },
      h("dt", {}, "Orchestrator"), h("dd", {}, spec.orchestrator),
      h("dt", {}, "When"), h("dd", { class: "mono", id: "timing" }, timingText(spec.timing)),
      h("dt", {}, "Next run"), h("dd", { id: "next-run" }, s.paused ? h("span", { class: "muted" }, "paused") : time(s.nextRunAt)),
      s.note ? [h("dt", {}, "Paused because"), h("dd", { id: "note" }, s.note)] : null,
      h("dt", {}, "If a run is still running"), h("dd", {}, OVERLAPS[spec.overlap] || spec.overlap),
      h("dt", {}, "After downtime"), h("dd", {}, spec.catchUpWindowMs ? `missed ticks of the last ${span(spec.catchUpWindowMs)} run` : "only the latest missed tick runs"),
      spec.jitterMs ? [h("dt", {}, "Jitter"), h("dd", {}, `up to ${span(spec.jitterMs)}`)] : null,
      h("dt", {}, "Runs started"), h("dd", { id: "started" }, String(s.started)),
      h("dt", {}, "Ticks skipped"), h("dd", {}, String(s.skipped)),
      h("dt", {}, "Input"), h("dd", {}, json(spec.input)))),
    h("h2", {}, "Running"), runs(s.running.concat(s.buffered ? [s.buffered] : []), "No run is running."),
    h("h2", {}, "Recent runs"), runs(s.recent.slice().reverse(), "No run has ended yet."),
    h("h2", {}, "Actions"),
    h("div", { class: "panel" },
      h("div", { class: "actions" },
        s.paused
          ? h("button", { type: "button", id: "resume", onclick: () => act("Resume", null, post("resume"), reload) }, "Resume")
          : h("button", { type: "button", id: "pause", onclick: () => {
            const note = window.prompt(`Pause ${id}: why? (optional)`, "paused from the dashboard");
            if (note === null) return;
            act("Pause", null, post(`pause?note=${encodeURIComponent(note)}`), reload);
          } }, "Pause"),
        h("button", { type: "button", class: "primary", id: "trigger", onclick: () => act("Run now", `Start a run of ${id} now?`, post("trigger"), reload) }, "Run now"),
        h("button", { type: "button", class: "danger", id: "delete", onclick: () => act("Delete", `Delete schedule ${id}? Runs already started go on.`, () => api(`schedules/${enc}`, { method: "DELETE" }), () => go("/schedules")) }, "Delete")),
      h("form", { class: "actions", id: "backfill-form", style: "margin-top:10px", onsubmit: (e) => {
        e.preventDefault();
        const f = e.target;
        const range = `from=${encodeURIComponent(toIso(f.from.value))}&to=${encodeURIComponent(toIso(f.to.value))}`;
        act("Backfill", `Run every tick of ${id} in that range?`, post(`backfill?${range}`), reload);
      } },
        h("label", {}, "Backfill from", h("input", { name: "from", type: "datetime-local", required: true })),
        h("label", {}, "to", h("input", { name: "to", type: "datetime-local", required: true })),
        h("button", { type: "submit" }, "Backfill"))));
}

function startForm(name) {
  return h("details", {}, h("summary", {}, "start…"),
    h("form", { class: "start-form", onsubmit: async (e) => {
      e.preventDefault();
      const f = e.target;
      let input;
      try { input = f.input.value.trim() ? JSON.parse(f.input.value) : null; } catch (err) { toast(`The input is not JSON: ${err.message}`, true); return; }
      try {
        const id = f.id.value.trim();
        const { body } = await api(`orchestrators/${encodeURIComponent(name)}${id ? `/${encodeURIComponent(id)}` : ""}`, { method: "POST", body: JSON.stringify(input) });
        toast(`started ${body.id}`);
        go(`/instance/${encodeURIComponent(body.id)}`);
      } catch (err) { toast(`Start failed: ${err.message}`, true); }
    } },
      h("input", { name: "id", placeholder: "instance id (optional)" }),
      h("textarea", { name: "input", placeholder: "JSON input" }),
      h("button", { class: "primary", type: "submit" }, "Start")));
}

// ---------- start ----------

function applyTheme() {
  const theme = localStorage.getItem(THEME_KEY);
  if (theme) document.documentElement.setAttribute("data-theme", theme);
  else document.documentElement.removeAttribute("data-theme");
}

document.addEventListener("DOMContentLoaded", () => {
  applyTheme();
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.getAttribute("data-theme") === "dark"
      || (!document.documentElement.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
    localStorage.setItem(THEME_KEY, dark ? "light" : "dark");
    applyTheme();
  });
  window.addEventListener("hashchange", render);
  render();
});
