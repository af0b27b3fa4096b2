// Meshward console: a live view of the fleet, served by every gateway at `/`.
// It reads the node's own API (GET /v1/console, /v1/devices, /v1/policy, /v1/audit) and its event
// stream (GET /v1/events). It is read-only unless an API token is given: the token is kept in
// this tab's memory only (never in a URL, a cookie or storage) and sent as the bearer header.
"use strict";

const state = {
  token: null,
  devices: [],
  devicesMore: false,
  console: null,
  blocks: [],
  messages: [],
  audit: [],
  auditSince: 0,
};
const MAX_ROWS = 200;

const $ = (id) => document.getElementById(id);
const short = (s, n = 10) => (s && s.length > 2 * n + 1 ? s.slice(0, n) + "…" + s.slice(-6) : s || "");
const fmt = (n, d = 1) => (n === null || n === undefined || Number.isNaN(n) ? "–" : Number(n).toFixed(d));
const ago = (ms) => {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "title") e.title = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.auth) {
    if (!state.token) throw new Error("enter the node's API token first (top right)");
    headers.Authorization = "Bearer " + state.token;
  }
  const r = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    cache: "no-store",
  });
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(v && v.message ? `${v.message} (${v.code})` : `HTTP ${r.status}`);
  return v;
}

// --- Summary, validators, alerts, charts -------------------------------------------------------

function renderSummary(c) {
  state.console = c;
  $("chain").textContent = `${c.chain_id} · node ${short(c.peer_id, 8)}`;
  $("s-height").textContent = c.height;
  $("s-age").textContent = c.last_block_time ? `last block ${ago(c.last_block_time)}` : "no block yet";
  $("s-bps").textContent = fmt(c.blocks_per_s, 2);
  $("s-tps").textContent = fmt(c.txs_per_s, 1);
  $("s-final").textContent = c.finality_ms ? `${fmt(c.finality_ms.p50, 0)} / ${fmt(c.finality_ms.p99, 0)}` : "–";
  const up = c.validators.filter((v) => v.up).length;
  $("s-vals").textContent = `${up}/${c.validators.length}`;
  const d = c.devices;
  $("s-devs").textContent = d.active + d.revoked + d.quarantined;
  $("s-devs-sub").textContent = `${d.active} active · ${d.revoked} revoked · ${d.quarantined} quarantined`;

  const vt = $("validators").tBodies[0];
  vt.replaceChildren(...c.validators.map((v) => el("tr", { "data-validator": v.id },
    el("td", { class: "id", title: v.id }, short(v.id, 12), v.is_self ? " (this node)" : ""),
    el("td", {}, el("span", { class: "st " + (v.up ? "up" : "down") }, v.up ? "up" : "down")),
    el("td", {}, v.last_signed_height === null ? "never" : v.last_signed_height),
    el("td", {}, v.missed),
    el("td", {}, el("span", { class: "st " + (v.round0_eligible ? "signing" : "skipped") },
      v.round0_eligible ? "in rotation" : "skipped")),
    el("td", { class: "convicted" }, v.convictions === 0 ? "–"
      : el("span", { class: "st down", title: `equivocated at ${v.convictions} height(s)` },
        `double-voted (last at ${v.last_convicted_height})`)),
    el("td", {}, v.power))));

  const al = $("alerts");
  $("alerts-count").textContent = c.alerts.length;
  $("alerts-count").classList.toggle("hot", c.alerts.some((a) => a.severity === "critical"));
  if (c.alerts.length === 0) al.replaceChildren(el("li", { class: "muted" }, "No alert."));
  else al.replaceChildren(...c.alerts.map((a) => el("li", { class: a.severity, "data-kind": a.kind },
    el("strong", {}, a.kind.replace(/_/g, " ")), " — ", a.message,
    a.height ? el("span", { class: "muted" }, ` (height ${a.height})`) : "")));

  drawChart($("chart-tps"), c.history, [(b) => b.txs / (b.span_ms / 1000)], ["l1"]);
  drawChart($("chart-final"), c.history, [(b) => b.p50_ms, (b) => b.p99_ms], ["l1", "l2"]);
}

function drawChart(svg, history, series, classes) {
  const W = 600, H = 160, P = 24;
  const values = series.map((f) => history.map((b) => { const v = f(b); return v === null || v === undefined || !isFinite(v) ? null : v; }));
  const max = Math.max(1, ...values.flat().filter((v) => v !== null));
  const n = Math.max(1, history.length - 1);
  const x = (i) => P + (i / n) * (W - 2 * P);
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  const ns = "http://www.w3.org/2000/svg";
  const parts = [];
  for (const g of [0, 0.5, 1]) {
    const l = document.createElementNS(ns, "line");
    l.setAttribute("class", "grid");
    l.setAttribute("x1", P); l.setAttribute("x2", W - P);
    l.setAttribute("y1", y(max * g)); l.setAttribute("y2", y(max * g));
    parts.push(l);
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", 2); t.setAttribute("y", y(max * g) + 4);
    t.textContent = fmt(max * g, max < 10 ? 1 : 0);
    parts.push(t);
  }
  values.forEach((vs, k) => {
    let d = "";
    vs.forEach((v, i) => { if (v !== null) d += `${d && vs[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`; });
    const p = document.createElementNS(ns, "path");
    p.setAttribute("class", classes[k]);
    p.setAttribute("d", d);
    parts.push(p);
    // A value with no neighbour draws no line: show it as a dot.
    vs.forEach((v, i) => {
      if (v !== null && (i === 0 || vs[i - 1] === null) && (i === vs.length - 1 || vs[i + 1] === null)) {
        const c = document.createElementNS(ns, "circle");
        c.setAttribute("class", classes[k] + " dot");
        c.setAttribute("cx", x(i).toFixed(1)); c.setAttribute("cy", y(v).toFixed(1)); c.setAttribute("r", 3);
        parts.push(c);
      }
    });
  });
  const t = document.createElementNS(ns, "text");
  t.setAttribute("x", W - P); t.setAttribute("y", H - 6); t.setAttribute("text-anchor", "end");
  t.textContent = "now";
  parts.push(t);
  svg.replaceChildren(...parts);
}

async function pollConsole() {
  try {
    renderSummary(await api("/v1/console"));
  } catch (e) {
    $("live-text").textContent = "node not answering: " + e.message;
  }
}

// --- Devices ------------------------------------------------------------------------------------

async function loadDevices() {
  try {
    const page = await api("/v1/devices?limit=1000");
    state.devices = page.devices;
    state.devicesMore = !!page.next_after;
    renderDevices();
  } catch (_) { /* shown by the summary poll */ }
}

function deviceStatus(d) {
  if (d.status === "active") return el("span", { class: "st active" }, "active");
  const label = d.status === "quarantined" ? "quarantined" : "revoked";
  return el("span", { class: "st " + label, title: d.revoked_reason || "" },
    `${label} at ${d.revoked_height}: ${d.revoked_reason || ""}`);
}

function renderDevices() {
  const q = $("device-search").value.trim().toLowerCase();
  const rows = state.devices.filter((d) => !q || d.id.toLowerCase().includes(q) || d.status.includes(q)
    || d.groups.some((g) => g.includes(q)) || (d.revoked_reason || "").toLowerCase().includes(q));
  const shown = rows.slice(0, MAX_ROWS);
  $("devices").tBodies[0].replaceChildren(...shown.map((d) => {
    const revoke = el("button", { class: "danger", type: "button", title: "revoke this device (needs the API token)" }, "revoke");
    revoke.addEventListener("click", () => revokeDevice(d.id));
    return el("tr", { "data-device": d.id, "data-status": d.status },
      el("td", { class: "id", title: d.id }, short(d.id, 12)),
      el("td", {}, d.groups.join(", ")),
      el("td", {}, deviceStatus(d)),
      el("td", {}, d.last_seen_ms ? ago(d.last_seen_ms) : "–"),
      el("td", {}, d.status === "active" ? revoke : ""));
  }));
  $("devices-more").textContent = (rows.length > MAX_ROWS ? `showing ${MAX_ROWS} of ${rows.length}; refine the search. ` : "")
    + (state.devicesMore ? "Only the first 1000 devices are loaded." : "");
}

// --- Live blocks and messages -------------------------------------------------------------------

function pushRow(table, list, row) {
  list.unshift(row);
  if (list.length > MAX_ROWS) list.length = MAX_ROWS;
  const body = $(table).tBodies[0];
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

function onEvent(kind, ev) {
  if (kind === "block") {
    pushRow("blocks", state.blocks, el("tr", { "data-height": ev.height },
      el("td", {}, ev.height), el("td", { class: "id" }, short(ev.hash, 8)), el("td", {}, ev.txs),
      el("td", {}, new Date(ev.time_ms).toLocaleTimeString())));
  } else if (kind === "anchor") {
    pushRow("messages", state.messages, el("tr", {},
      el("td", {}, ev.height), el("td", { class: "id", title: ev.sender }, short(ev.sender, 6)),
      el("td", { class: "id", title: ev.recipient }, short(ev.recipient, 6)),
      el("td", { class: "id", title: ev.commitment }, short(ev.commitment, 8)),
      el("td", {}, ev.count > 1 ? `anchored (${ev.count} in a batch)` : "anchored")));
  } else if (kind === "deposit") {
    pushRow("messages", state.messages, el("tr", {},
      el("td", {}, "–"), el("td", { class: "id", title: ev.sender }, short(ev.sender, 6)),
      el("td", { class: "id", title: ev.recipient }, short(ev.recipient, 6)),
      el("td", { class: "id", title: ev.commitment }, short(ev.commitment, 8)),
      el("td", {}, `mailbox (${ev.replicas} copies)`)));
  } else if (kind === "quarantine") {
    loadDevices();
    pollConsole();
    loadAudit();
  }
}

function connectEvents() {
  const es = new EventSource("/v1/events");
  const live = (up, text) => {
    $("live-dot").className = "dot " + (up ? "up" : "down");
    $("live-text").textContent = text;
  };
  es.onopen = () => live(true, "live");
  es.onerror = () => live(false, "reconnecting…");
  for (const kind of ["block", "anchor", "quarantine", "deposit"]) {
    es.addEventListener(kind, (m) => { try { onEvent(kind, JSON.parse(m.data)); } catch (_) { /* ignore */ } });
  }
  es.addEventListener("lagged", () => { loadDevices(); pollConsole(); });
}

// --- Policy and admin actions ---------------------------------------------------------------------

async function loadPolicy() {
  try {
    const p = await api("/v1/policy");
    const items = p.allow.map((r) => el("li", {}, `${r.from} → ${r.to}`));
    items.push(el("li", { class: "muted" }, "every group may send within itself"));
    $("policy").replaceChildren(...items);
  } catch (_) { /* shown by the summary poll */ }
}

async function loadAudit() {
  try {
    const a = await api(`/v1/audit?since=${state.auditSince}`);
    for (const x of a.actions) {
      state.auditSince = Math.max(state.auditSince, x.height + 1);
      pushRow("audit", state.audit, el("tr", { "data-kind": x.kind },
        el("td", {}, x.height),
        el("td", { title: x.tx }, x.summary),
        el("td", { class: "id" }, x.by_evidence ? "evidence" : x.authorised_by.map((k) => short(k, 6)).join(", "))));
    }
  } catch (_) { /* shown by the summary poll */ }
}

function show(out) { $("action-out").textContent = out; }

async function revokeDevice(id) {
  const reason = window.prompt(`Revoke ${id}?\nEvery gateway will refuse it. Reason:`, "revoked from the console");
  if (reason === null) return;
  try {
    const r = await api("/v1/admin/revoke", { method: "POST", auth: true, body: { device: id, reason } });
    show(`revoked ${id} at height ${r.height}`);
    loadDevices();
  } catch (e) { show("revoke failed: " + e.message); }
}

async function issueTicket(ev) {
  ev.preventDefault();
  try {
    const r = await api("/v1/admin/ticket", { method: "POST", auth: true,
      body: { groups: [$("ticket-group").value.trim()], ttl: $("ticket-ttl").value.trim() } });
    show(`ticket (shown once, give it to the device): ${r.ticket}\nvalid until ${new Date(r.expires_ms).toLocaleString()}`);
  } catch (e) { show("ticket failed: " + e.message); }
}

// --- Start --------------------------------------------------------------------------------------

function start() {
  const root = document.documentElement;
  if (window.matchMedia && window.matchMedia("(prefers-color-scheme: light)").matches) root.classList.add("light");
  $("theme").addEventListener("click", () => root.classList.toggle("light"));
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("token").value.trim();
    state.token = t || null;
    $("token").value = "";
    $("token").placeholder = t ? "token set for this tab" : "API token (for actions)";
  });
  $("device-search").addEventListener("input", renderDevices);
  $("ticket-form").addEventListener("submit", issueTicket);
  pollConsole();
  loadDevices();
  loadPolicy();
  loadAudit();
  connectEvents();
  setInterval(pollConsole, 2000);
  setInterval(loadDevices, 5000);
  setInterval(loadAudit, 5000);
  setInterval(loadPolicy, 15000);
}

start();
