// openbell dashboard: plain JavaScript, no external assets. Resources come from /api; live updates from
// /api/live (server-sent events). Every live message has a sequence: the page remembers the last one and
// resumes after it when the stream breaks (server restart, network), so no update is lost.
"use strict";

const TOKEN_HEADER = "X-Openbell-Token";
const state = { lastSeq: null, source: null, portfolios: [], snapshots: {}, refreshTimer: null, settleTimer: null };
// What the page received, in order: read by the browser tests (and handy in the console).
window.openbell = { seqs: [], gaps: 0, resets: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function token() { return sessionStorage.getItem("openbell-token"); }

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers[TOKEN_HEADER] = token();
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || body.detail?.[0]?.msg || `${response.status} ${response.statusText}`);
  return body;
}

function say(text, from = "load") {
  const message = document.getElementById("message");
  message.textContent = text;
  message.dataset.from = from;
}

const num = (v) => (v === null || v === undefined ? null : Number(v));
function money(v) {
  const n = num(v);
  return n === null ? "–" : n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
function signed(v) {
  const n = num(v);
  if (n === null) return el("span", {}, "–");
  return el("span", { class: n >= 0 ? "up" : "down" }, (n >= 0 ? "+" : "") + money(n));
}
function time(v) { return v ? new Date(v).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "–"; }

// ------------------------------------------------------------------------------------- equity curve

function equityCurve(portfolio, snapshots) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 300 90");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "equity-curve");
  svg.setAttribute("data-portfolio", portfolio.portfolio_id);
  const start = num(portfolio.starting_cash);
  const points = [start, ...snapshots.map((s) => num(s.total_value))];
  if (portfolio.equity !== null) points.push(num(portfolio.equity));
  const lo = Math.min(...points, start), hi = Math.max(...points, start);
  const span = hi - lo || Math.max(1, Math.abs(hi) * 0.001);
  const y = (v) => 84 - ((v - lo) / span) * 78;
  const x = (i) => (points.length === 1 ? 150 : 4 + (i * 292) / (points.length - 1));
  const base = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: 300, y1: y(start), y2: y(start), stroke: "#999", "stroke-dasharray": "4 3",
    class: "starting-cash" }).forEach(([k, v]) => base.setAttribute(k, v));
  const title = document.createElementNS(ns, "title");
  title.textContent = `starting cash ${money(start)}`;
  base.append(title);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((v, i) => `${x(i)},${y(v)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", points[points.length - 1] >= start ? "#137a3c" : "#b3261e");
  line.setAttribute("stroke-width", "2");
  line.setAttribute("class", "equity");
  svg.append(base, line);
  return svg;
}

// ---------------------------------------------------------------------------------------- overview

async function loadPortfolios() {
  const [portfolios, snapshots, positions] = await Promise.all([
    api("/api/portfolios"), api("/api/snapshots"), api("/api/positions"),
  ]);
  const byPortfolio = (rows) => rows.reduce((m, r) => ((m[r.portfolio_id] ||= []).push(r), m), {});
  const snaps = byPortfolio(snapshots), held = byPortfolio(positions);
  const cards = portfolios.map((p) => {
    const rows = (held[p.portfolio_id] || []).map((pos) => el("tr", {},
      el("td", {}, pos.symbol), el("td", {}, pos.qty), el("td", {}, money(pos.last_price)),
      el("td", {}, money(pos.market_value)), el("td", {}, signed(pos.unrealized_pnl))));
    const action = p.halted
      ? el("button", { onclick: () => act(`/api/portfolios/${p.portfolio_id}/resume`) }, "resume")
      : el("button", { class: "danger", onclick: () => act(`/api/portfolios/${p.portfolio_id}/halt`) }, "halt");
    action.classList.add("operator-action");
    action.disabled = !token();
    return el("div", { class: "card", "data-portfolio": p.portfolio_id },
      el("h3", {}, p.name, p.halted ? el("span", { class: "halted", title: p.halt_reason || "" }, "halted") : "",
        el("span", { class: "spacer" }), action),
      el("div", { class: "figures" },
        el("span", {}, "equity ", el("b", {}, money(p.equity))),
        el("span", {}, "today ", signed(p.todays_pnl)),
        el("span", {}, "cash ", money(p.cash))),
      equityCurve(p, snaps[p.portfolio_id] || []),
      el("table", { class: "positions" },
        el("thead", {}, el("tr", {}, ...["symbol", "qty", "price", "value", "unrealized"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows)));
  });
  document.getElementById("portfolios").replaceChildren(...cards);
}

async function loadOpenOrders() {
  const page = await api("/api/orders?open=true&limit=100");
  document.querySelector("#open-orders tbody").replaceChildren(...page.items.map((o) => el("tr", {},
    el("td", {}, o.portfolio_id), el("td", {}, o.symbol), el("td", {}, o.side), el("td", {}, o.qty),
    el("td", {}, o.filled_qty), el("td", {}, o.status), el("td", {}, time(o.requested_at)))));
}

async function loadJobs() {
  const jobs = await api("/api/jobs");
  document.querySelector("#jobs tbody").replaceChildren(...jobs.map((j) => {
    const enable = el("button", { class: "operator-action", onclick: () => act(`/api/jobs/${j.job_type}/enable`) },
      "enable");
    enable.disabled = !token() || j.status === "enabled";
    const durations = j.last_runs.map((r) => (r.duration_ms === null ? r.status : Math.round(r.duration_ms))).join(" ");
    return el("tr", { "data-job": j.job_type },
      el("td", {}, j.job_type),
      el("td", { class: j.breaker_open ? "down" : "" }, j.breaker_open ? "open (error)" : j.status),
      el("td", {}, time(j.last_run_at)), el("td", {}, durations),
      el("td", {}, j.avg_duration_ms === null ? "–" : Math.round(j.avg_duration_ms)),
      el("td", {}, (j.failure_rate * 100).toFixed(1) + "%"),
      el("td", {}, `${j.total_runs} (${j.total_failures} failed)`), el("td", {}, time(j.next_run_at)),
      el("td", {}, enable));
  }));
}

async function loadAlerts() {
  const alerts = await api("/api/alerts");
  document.querySelector("#alerts tbody").replaceChildren(...alerts.map((a) => el("tr", {},
    el("td", {}, a.symbol), el("td", {}, a.condition), el("td", {}, a.threshold), el("td", {}, a.status),
    el("td", {}, a.triggered_at ? `${time(a.triggered_at)} at ${a.triggered_price}` : "–"))));
}

function notificationItem(kind, title, at, live) {
  return el("li", { class: live ? "live-notification" : "", "data-kind": kind },
    el("span", { class: "kind" }, kind), title, " ", el("span", { class: "muted" }, time(at)));
}

async function loadNotifications() {
  const rows = await api("/api/notifications?limit=50");
  const list = document.getElementById("notifications");
  list.replaceChildren(...rows.map((n) => notificationItem(n.kind, `${n.title}: ${n.body}`, n.at, false)));
}

async function loadEvents(stream) {
  const page = await api(`/api/events?stream=${encodeURIComponent(stream)}&limit=200`);
  document.querySelector("#events tbody").replaceChildren(...page.items.map((e) => el("tr", {},
    el("td", {}, e.global_position), el("td", {}, e.version), el("td", {}, e.type), el("td", {}, time(e.recorded_at)),
    el("td", { class: "data", title: JSON.stringify(e.data) }, JSON.stringify(e.data)))));
}

async function loadAll() {
  await Promise.all([loadPortfolios(), loadOpenOrders(), loadJobs(), loadAlerts(), loadNotifications()]);
  if (document.getElementById("message").dataset.from === "load") say("");
}

// A feed message tells that something changed; the read models follow the log within a moment, so the
// resources are read shortly after it and once more a few seconds later (and every 10 s in any case).
function refreshSoon() {
  clearTimeout(state.refreshTimer);
  clearTimeout(state.settleTimer);
  const reload = () => loadAll().catch((e) => say(e.message));
  state.refreshTimer = setTimeout(reload, 400);
  state.settleTimer = setTimeout(reload, 3000);
}

// ------------------------------------------------------------------------------------- live updates

// Feeds that an operator is told about, and the line shown for each.
const NOTIFY = {
  halt: (b) => `${b.halted ? "halted" : "resumed"} ${b.scope === "all" ? "all trading" : b.scope}${b.reason ? ": " + b.reason : ""}`,
  alert: (b) => b.title || `${b.symbol} ${b.condition} ${b.threshold}`,
  risk: (b) => `${b.portfolio_id}: ${b.side} ${b.qty} ${b.symbol} refused by ${b.rule}`,
  discrepancy: (b) => `${b.symbol}: ${b.discrepancy} (ours ${b.ours_qty}, broker ${b.broker_qty}), ${b.policy}`,
  notification: (b) => `${b.job_type}: circuit breaker opened after ${b.consecutive_failures} failures`,
  order: (b) => (["OrderRejected", "OrderCanceled", "OrderExpired"].includes(b.event)
    ? `${b.portfolio_id}: ${b.event} ${b.side} ${b.qty} ${b.symbol}${b.reason ? " (" + b.reason + ")" : ""}` : null),
};

function onFeed(message) {
  const seqs = window.openbell.seqs;
  if (state.lastSeq !== null && message.seq <= state.lastSeq) return; // a repeat after a reconnect
  if (state.lastSeq !== null && message.seq !== state.lastSeq + 1) window.openbell.gaps += 1;
  state.lastSeq = message.seq;
  seqs.push(message.seq);
  document.getElementById("live-seq").textContent = `seq ${message.seq}`;
  const body = message.body || {};
  const kind = body.kind || message.subject.split(".")[2];
  const live = document.getElementById("live");
  const summary = Object.entries(body).filter(([k]) => !["kind", "version", "at"].includes(k)).slice(0, 6)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  live.prepend(el("li", { "data-seq": String(message.seq) }, el("span", { class: "kind" }, kind), summary));
  while (live.children.length > 60) live.lastChild.remove();
  const line = NOTIFY[kind] && NOTIFY[kind](body);
  if (line) document.getElementById("notifications").prepend(notificationItem(kind, line, body.at || message.at, true));
  if (kind !== "price") refreshSoon();
}

function connect() {
  const url = state.lastSeq === null ? "/api/live" : `/api/live?after=${state.lastSeq}`;
  const source = new EventSource(url);
  state.source = source;
  const status = document.getElementById("live-status");
  source.onopen = () => { status.textContent = "live"; status.className = "pill ok"; };
  source.addEventListener("feed", (e) => onFeed(JSON.parse(e.data)));
  source.addEventListener("reset", (e) => {
    // Our sequence is gone (too old) or of another stream: reload the resources, go on from the server's.
    window.openbell.resets += 1;
    state.lastSeq = JSON.parse(e.data).resume_after;
    refreshSoon();
  });
  source.onerror = () => {
    // Reconnect ourselves, after the last sequence seen (the browser's own retry would also send it, but
    // gives up for good on some errors).
    status.textContent = "reconnecting"; status.className = "pill bad";
    source.close();
    if (state.source === source) setTimeout(connect, 1000);
  };
}

// --------------------------------------------------------------------------------- operator actions

async function act(path) {
  try {
    const result = await api(path, { method: "POST", body: JSON.stringify({ reason: "operator (dashboard)" }) });
    say(result.changes.length ? "" : "nothing to change", "action");
  } catch (e) {
    say(`refused: ${e.message}`, "action");
  }
}

function showOperator() {
  const signedIn = Boolean(token());
  document.getElementById("operator").textContent = signedIn ? "operator" : "read-only";
  document.querySelectorAll(".operator-action").forEach((b) => { b.disabled = !signedIn; });
}

async function start() {
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = document.getElementById("token").value;
    if (value) sessionStorage.setItem("openbell-token", value); else sessionStorage.removeItem("openbell-token");
    document.getElementById("token").value = "";
    showOperator();
    loadAll().catch((err) => say(err.message));
  });
  document.getElementById("halt-all").addEventListener("click", () => act("/api/halt"));
  document.getElementById("resume-all").addEventListener("click", () => act("/api/resume"));
  document.getElementById("event-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadEvents(document.getElementById("event-stream").value || "trading-global").catch((err) => say(err.message));
  });
  // The sequence first, then the resources: what happens while they load arrives on the stream after it.
  const health = await api("/api/health");
  state.lastSeq = health.feed_last;
  connect();
  await loadAll();
  showOperator();
  setInterval(() => loadAll().catch((e) => say(e.message)), 10000);
}

start().catch((e) => say(e.message));
