// The operator console: logs in with the operator token, then polls the operator API every few
// seconds and draws what it answers. Every node is built with the DOM API (never markup from
// strings), so nothing an API answer contains can become script.
"use strict";

const TOKEN_KEY = "tandem.operator.token";
const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
/// Exposure samples kept per account (at 3 s, about 15 minutes).
const MAX_SAMPLES = 300;
/// The settlement pool's account (created at genesis): it holds the coins of every account
/// without a vault of its own.
const POOL = 2;
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

const $ = (id) => document.getElementById(id);
let timer = null;
let refreshing = false;
/// account id -> [[time ms, exposure sat]], sampled at each refresh.
const exposure = new Map();

// ---------------------------------------------------------------------------------------------
// The API

class Refused extends Error {}

async function call(method, path, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(path, { method, headers, cache: "no-store" });
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  return { status: res.status, body };
}

/// An operator call: a refused token ends the session, other failures are the caller's to show.
async function operator(method, path) {
  const r = await call(method, path, sessionStorage.getItem(TOKEN_KEY));
  if (r.status === 401) throw new Refused("the operator token was refused");
  return r;
}

function errorText(r) {
  const e = r.body && r.body.error;
  return e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`;
}

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "–" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

function btc(sat) {
  if (sat === null || sat === undefined) return "–";
  const neg = sat < 0;
  const a = Math.abs(sat);
  return (neg ? "−" : "") + Math.floor(a / 1e8) + "." + String(a % 1e8).padStart(8, "0");
}

function when(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "–";
}

function badge(text, kind) {
  return el("span", text, "badge " + kind);
}

function short(s) {
  return s && s.length > 20 ? s.slice(0, 10) + "…" + s.slice(-8) : s;
}

// ---------------------------------------------------------------------------------------------
// Login and logout

function showLogin(message) {
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("refreshed").textContent = "";
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
}

async function login(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  $("login-error").textContent = "";
  if (!token) return;
  let r;
  try {
    r = await call("GET", "/v1/operator/state", token);
  } catch (e) {
    $("login-error").textContent = "Could not reach the exchange: " + e.message;
    return;
  }
  if (r.status === 401) {
    $("login-error").textContent = "That operator token was refused.";
    return;
  }
  if (r.status !== 200) {
    $("login-error").textContent = "The exchange answered " + errorText(r);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  start();
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearInterval(timer);
  timer = null;
  exposure.clear();
  for (const id of ["health-table", "markets-table", "batches-table", "recon-totals", "holders-table",
                    "accounts-table", "signing-table", "late-table", "refusals-table"]) fill(id, []);
  for (const id of ["chart-volume", "chart-exposure", "chart-fees"]) $(id).replaceChildren();
  showLogin(message);
}

function start() {
  showDashboard();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

// ---------------------------------------------------------------------------------------------
// Refresh: every panel from its own call, so one failing call leaves the others current.

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const markets = await call("GET", "/v1/markets");
    const symbols = markets.status === 200 ? markets.body.markets.map((m) => m.symbol) : [];
    const [state, batches, recon, signing, refusals, ready, metrics, ...trades] = await Promise.all([
      operator("GET", "/v1/operator/state"),
      operator("GET", "/v1/operator/batches?limit=50"),
      operator("GET", "/v1/operator/reconciliation"),
      operator("GET", "/v1/operator/signing"),
      operator("GET", "/v1/operator/refusals?limit=20"),
      call("GET", "/ready"),
      call("GET", "/metrics"),
      ...symbols.map((s) => call("GET", `/v1/markets/${encodeURIComponent(s)}/trades?limit=1000`)),
    ]);
    const tradesBy = new Map(symbols.map((s, i) => [s, trades[i].status === 200 ? trades[i].body.trades : []]));
    renderHealth(state, ready, metrics, recon);
    renderMarkets(markets, tradesBy);
    renderBatches(batches);
    renderReconciliation(recon);
    renderSigning(signing, refusals);
    drawVolume(tradesBy);
    drawFees(batches);
    $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof Refused) logout("Logged out: " + e.message + ".");
    else $("refreshed").textContent = "refresh failed: " + e.message;
  } finally {
    refreshing = false;
  }
}

function renderHealth(state, ready, metrics, recon) {
  const rows = [];
  const add = (check, label, value) => {
    const tr = row([label, value]);
    tr.dataset.check = check;
    rows.push(tr);
  };
  const ok = (good, text) => badge(text, good ? "good" : "bad");
  if (ready.body && ready.body.checks) {
    add("engine", "Engine", ok(ready.body.checks.engine === "ok", ready.body.checks.engine));
    add("store", "Store", ok(ready.body.checks.store === "ok", ready.body.checks.store));
  } else {
    add("ready", "Readiness", badge("no answer (" + ready.status + ")", "bad"));
  }
  if (state.status === 200) {
    const s = state.body;
    const lag = s.last_seq - s.projected_seq;
    add("journal", "Journal", `seq ${s.last_seq}`);
    add("projections", "Projections", ok(lag < 1000, lag === 0 ? "caught up" : `${lag} commands behind`));
    add("state", "State hash", el("code", short(s.state_hash)));
    add("accounts", "Accounts / open orders", `${s.accounts} / ${s.open_orders}`);
  }
  if (recon.status === 200) {
    add("settlement", "Settlement", ok(true, `running, chain height ${recon.body.chain_height}`));
  } else {
    const absent = recon.body && recon.body.error && recon.body.error.code === "settlement_not_running";
    add("settlement", "Settlement", badge(absent ? "not on this node" : errorText(recon), absent ? "neutral" : "bad"));
  }
  const m = metrics.status === 200 ? parseMetrics(metrics.body) : new Map();
  const shown = [
    ["tandem_journal_commit_seconds_max", "Slowest journal commit (s)"],
    ["tandem_settlement_leader_epoch", "Settlement leader epoch"],
    ["tandem_custody_prime_pool_size", "Prime pool"],
    ["tandem_engine_trades_total", "Trades since start"],
  ];
  for (const [name, label] of shown) if (m.has(name)) add(name, label, m.get(name));
  fill("health-table", rows);
}

/// Unlabelled samples of a Prometheus text page: name -> value.
function parseMetrics(text) {
  const out = new Map();
  if (typeof text !== "string") return out;
  for (const line of text.split("\n")) {
    const m = /^([a-z_:][a-z0-9_:]*) (\S+)$/i.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

function renderMarkets(markets, tradesBy) {
  if (markets.status !== 200) return;
  fill("markets-table", markets.body.markets.map((m) => {
    const trades = tradesBy.get(m.symbol) || [];
    const action = el("button", m.halted ? "Resume" : "Halt", m.halted ? "resume" : "halt");
    action.type = "button";
    action.dataset.market = m.symbol;
    action.addEventListener("click", () => setHalted(m.symbol, !m.halted));
    const tr = row([m.symbol, badge(m.halted ? "halted" : "trading", m.halted ? "bad" : "good"),
                    trades.length ? trades[0].price : null, trades.length, action]);
    tr.dataset.market = m.symbol;
    tr.dataset.halted = String(m.halted);
    return tr;
  }));
}

async function setHalted(symbol, halt) {
  const verb = halt ? "halt" : "resume";
  if (halt && !window.confirm(`Halt ${symbol}? Its book stops taking orders until resumed.`)) return;
  try {
    const r = await operator("POST", `/v1/operator/markets/${encodeURIComponent(symbol)}/${verb}`);
    notice(r.status === 200 ? `${symbol} ${halt ? "halted" : "resumed"}.` : `Could not ${verb} ${symbol}: ${errorText(r)}`,
           r.status !== 200);
  } catch (e) {
    if (e instanceof Refused) return logout("Logged out: " + e.message + ".");
    notice(`Could not ${verb} ${symbol}: ${e.message}`, true);
  }
  refresh();
}

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text;
  n.className = "notice " + (bad ? "bad" : "good");
}

function statusKind(s) {
  return { confirmed: "good", broadcast: "info", signed: "info", booked: "warn", planned: "warn", cancelled: "neutral" }[s] || "neutral";
}

function renderBatches(batches) {
  if (batches.status !== 200) return;
  const list = batches.body.batches;
  $("batches-empty").hidden = list.length > 0;
  fill("batches-table", list.map((b) => {
    const txid = el("code", short(b.txid));
    if (b.txid) txid.title = b.txid;
    const rate = b.vbytes ? (b.fee_sat / b.vbytes).toFixed(1) : null;
    const tr = row([b.batch, badge(b.status, statusKind(b.status)), b.txid ? txid : null, b.vbytes, b.fee_sat, rate,
                    b.confirmations, b.bumps, when(b.updated_at), b.last_error]);
    tr.dataset.batch = String(b.batch);
    tr.dataset.status = b.status;
    tr.dataset.confirmations = String(b.confirmations);
    return tr;
  }));
}

function renderReconciliation(recon) {
  if (recon.status !== 200) {
    $("recon-verdict").textContent = "Not available: " + errorText(recon);
    $("recon-verdict").className = "verdict neutral";
    return;
  }
  const r = recon.body;
  $("recon-verdict").textContent = r.balanced ? "Balanced: ledger and chain agree to the satoshi." : "NOT BALANCED";
  $("recon-verdict").className = "verdict " + (r.balanced ? "good" : "bad");
  fill("recon-totals", [
    row(["Ledger owes (all BTC balances)", btc(r.ledger_owes_sat)]),
    row(["Ledger says holders hold", btc(r.ledger_settled_sat)]),
    row(["Chain holds", btc(r.chain_holds_sat)]),
    row(["Leaving with the batch in flight", btc(r.in_flight_out_sat)]),
    row(["Fees paid by confirmed batches", btc(r.fees_paid_sat)]),
    row(["Uncredited (deposits waiting)", btc(r.uncredited_sat)]),
    row(["Chain height", r.chain_height]),
  ]);
  $("recon-differences").replaceChildren(...(r.differences.length ? r.differences.map((d) => el("li", d, "bad"))
                                                                  : [el("li", "none", "muted")]));
  const a = r.last_audit;
  $("recon-audit").textContent = a
    ? `${when(a.at)}, after batch ${a.after_batch}: ${a.balanced ? "balanced" : "NOT balanced"}` +
      (a.differences && a.differences.length ? " (" + a.differences.join("; ") + ")" : "")
    : "No audit yet (one runs after every confirmed batch).";
  fill("holders-table", r.holders.map((h) => row([h.holder === POOL ? `${POOL} (pool)` : h.holder, btc(h.ledger_sat), btc(h.chain_sat),
                                                  h.difference_sat, btc(h.uncredited_sat)])));
  const heldBy = (x) => (x.account === POOL ? "the pool itself" : x.holder === x.account ? "own vault" : "pool");
  fill("accounts-table", r.accounts.map((x) => row([x.account === POOL ? `${x.account} (pool)` : x.account, heldBy(x),
                                                    btc(x.balance_sat), x.exposure_sat === null ? null : btc(x.exposure_sat)])));
  const now = Date.now();
  for (const x of r.accounts) {
    if (x.exposure_sat === null) continue;
    const samples = exposure.get(x.account) || [];
    samples.push([now, x.exposure_sat]);
    if (samples.length > MAX_SAMPLES) samples.shift();
    exposure.set(x.account, samples);
  }
  drawExposure();
}

function renderSigning(signing, refusals) {
  if (signing.status === 200) {
    const rows = [];
    for (const b of signing.body.batches) {
      for (const i of b.inputs) {
        const signer = i.signer ? (i.signer.kind === "pool" ? "provider (pool)" : `vault wallet ${short(i.signer.group)}`) : null;
        rows.push(row([b.batch, b.status, i.input, i.holder, signer, btc(i.value_sat),
                       badge(i.signed ? "signed" : "waiting", i.signed ? "good" : "warn")]));
      }
    }
    $("signing-empty").hidden = rows.length > 0;
    fill("signing-table", rows);
    fill("late-table", signing.body.late.map((l) => row([l.account, l.batch, when(l.since)])));
  }
  if (refusals.status === 200) {
    fill("refusals-table", refusals.body.refusals.map((f) => {
      const full = typeof f.purpose === "object" && f.purpose !== null ? JSON.stringify(f.purpose) : String(f.purpose);
      const purpose = el("code", full.length > 60 ? full.slice(0, 60) + "…" : full);
      purpose.title = full;
      return row([when(f.at), f.signer, badge(f.code, "bad"), f.account_id, purpose, f.detail]);
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// Charts: small inline SVG, no library. Each chart is redrawn whole at each refresh.

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

const W = 360, H = 180, PAD = { l: 56, r: 8, t: 8, b: 24 };

function frame(host, yMin, yMax, xLabels, yFormat, empty) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "plot-svg" });
  host.replaceChildren(root);
  if (empty) {
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, empty));
    return null;
  }
  const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - (v - yMin) / (yMax - yMin || 1));
  for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
    root.appendChild(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    root.appendChild(svg("text", { x: PAD.l - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, yFormat(v)));
  }
  const [left, right] = xLabels;
  root.appendChild(svg("text", { x: PAD.l, y: H - 6, class: "axis" }, left));
  root.appendChild(svg("text", { x: W - PAD.r, y: H - 6, "text-anchor": "end", class: "axis" }, right));
  return { root, y };
}

function legend(host, names) {
  const l = el("div", null, "legend");
  names.forEach((n, i) => {
    const s = el("span", n);
    s.classList.add("c" + (i % PALETTE.length));
    l.appendChild(s);
  });
  host.appendChild(l);
}

/// Lines of [x, y] points, x in ms.
function lines(host, series, yFormat, empty) {
  const points = series.flatMap((s) => s.points);
  if (!points.length) return frame(host, 0, 1, ["", ""], yFormat, empty);
  let [xMin, xMax] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [yMin, yMax] = [Math.min(0, ...points.map((p) => p[1])), Math.max(0, ...points.map((p) => p[1]))];
  if (xMax === xMin) xMax = xMin + 1;
  if (yMax === yMin) yMax = yMin + 1;
  const f = frame(host, yMin, yMax, [when(xMin), when(xMax)], yFormat);
  const x = (v) => PAD.l + (W - PAD.l - PAD.r) * (v - xMin) / (xMax - xMin);
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + f.y(p[1]).toFixed(1)).join(" ");
    const path = svg("path", { d, fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2 });
    path.appendChild(svg("title", {}, s.name));
    f.root.appendChild(path);
  });
  legend(host, series.map((s) => s.name));
}

/// Bars of {label, value, title}.
function bars(host, items, yFormat, empty) {
  if (!items.length) return frame(host, 0, 1, ["", ""], yFormat, empty);
  const yMax = Math.max(1, ...items.map((b) => b.value));
  const f = frame(host, 0, yMax, [items[0].label, items[items.length - 1].label], yFormat);
  const slot = (W - PAD.l - PAD.r) / items.length;
  items.forEach((b, i) => {
    const top = f.y(b.value);
    const rect = svg("rect", { x: PAD.l + i * slot + slot * 0.15, y: top, width: Math.max(1, slot * 0.7),
                               height: Math.max(0, f.y(0) - top), class: "bar" });
    rect.appendChild(svg("title", {}, b.title));
    f.root.appendChild(rect);
  });
}

function drawVolume(tradesBy) {
  const minute = 60000;
  const now = Math.floor(Date.now() / minute) * minute;
  const series = [];
  for (const [symbol, trades] of tradesBy) {
    const buckets = new Map();
    for (let t = now - 29 * minute; t <= now; t += minute) buckets.set(t, 0);
    for (const t of trades) {
      const b = Math.floor(t.timestamp / minute) * minute;
      if (buckets.has(b)) buckets.set(b, buckets.get(b) + Number(t.quantity));
    }
    series.push({ name: symbol, points: [...buckets.entries()] });
  }
  const any = series.some((s) => s.points.some((p) => p[1] > 0));
  lines($("chart-volume"), any ? series : [], (v) => v.toFixed(3), "no trades in the last 30 minutes");
}

function drawExposure() {
  const series = [...exposure.entries()]
    .sort((a, b) => a[0] - b[0])
    .slice(0, PALETTE.length)
    .map(([account, points]) => ({ name: "account " + account, points: points.map(([t, v]) => [t, v / 1e8]) }));
  lines($("chart-exposure"), series, (v) => v.toFixed(4), "no vault account has exposure data yet");
}

function drawFees(batches) {
  if (batches.status !== 200) return;
  const items = batches.body.batches.slice(0, 20).reverse().map((b) => ({
    label: "#" + b.batch, value: b.fee_sat,
    title: `batch ${b.batch}: ${b.fee_sat} sat, ${b.vbytes} vB, ${b.status}`,
  }));
  bars($("chart-fees"), items, (v) => String(Math.round(v)), "no batch yet");
}

// ---------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout("Logged out."));
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else showLogin();
});
