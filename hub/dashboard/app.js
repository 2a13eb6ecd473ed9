// Vigie dashboard: plain JavaScript on the hub's own copies of Leaflet and uPlot (no CDN; map tiles
// only from the city's own server when one is set). The map and its views are in map.js and
// views.js, the time chart in chart.js; this file holds the session, the fleet, rollouts and live
// events. Every request carries the bearer token and, for sensitive routes, a stated purpose
// (recorded in the audit log).
"use strict";

const state = { token: sessionStorage.getItem("vigie.token"), role: null, k: null, timers: [] };
const $ = (id) => document.getElementById(id);
// Everything that comes from a device, an import or a user is set as text (textContent, attributes),
// never parsed as HTML: a hostile heartbeat cannot become script (issue 17; the CSP is the second wall).
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed under style-src 'self'
    else node.setAttribute(key, String(value));
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

async function api(path, { purpose, method = "GET", body, headers = {} } = {}) {
  const h = { ...headers };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  if (purpose) h["X-Purpose"] = purpose;
  const response = await fetch(path, { method, body, headers: h });
  if (response.status === 401) { logout(); throw new Error("session expired: log in again"); }
  if (!response.ok) {
    const detail = await response.json().then((b) => b.detail).catch(() => response.statusText);
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return response;
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  try {
    const r = await fetch("/v1/auth/token", { method: "POST", body: form });
    if (!r.ok) throw new Error((await r.json()).detail || r.statusText);
    const body = await r.json();
    state.token = body.access_token;
    sessionStorage.setItem("vigie.token", state.token);
    await start();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

function logout() {
  if (state.token) fetch("/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } });
  state.token = null;
  sessionStorage.removeItem("vigie.token");
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login-panel").hidden = false;
  $("who").textContent = "";
  state.timers.forEach(clearInterval);
  state.timers = [];
}

// -- fleet, live events ----------------------------------------------------------------------
// Fields as the API's schema names them (DevicePublic, HeartbeatPublic): tests/test_dashboard_fleet.py
// compares every `device.` and `hb.` field read here with /openapi.json.
function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}
const num = (v, digits = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));

async function loadFleet() {
  try {
    const body = await (await api("/v1/devices")).json();
    const rows = body.data.map((device) => {
      const hb = device.heartbeat || {};
      const status = device.status || "unknown";
      const hot = hb.cpu_temp_c !== null && hb.cpu_temp_c !== undefined && hb.cpu_temp_c >= 80;
      return el("tr", { "data-status": status },
        el("td", {}, `${device.site}/${device.device}`, el("div", { class: "muted model" }, hb.model ?? "model unknown")),
        el("td", { class: `status-${status}` }, status),
        el("td", {}, age(device.seconds_since_seen)),
        el("td", hot ? { class: "bad" } : {}, num(hb.cpu_temp_c, 1)),
        el("td", {}, num(hb.outbox_depth)),
        el("td", hb.outbox_dropped ? { class: "bad" } : {}, num(hb.outbox_dropped)),
        el("td", {}, num(hb.fps, 1)));
    });
    $("fleet").querySelector("tbody").replaceChildren(...rows);
    $("fleet-status").textContent = `${body.count} devices`;
    $("fleet").dataset.refreshed = String(Date.now());
  } catch (e) {
    $("fleet-status").textContent = e.status === 403 ? "Fleet health is for operators and technicians." : e.message;
    if (e.status === 403) state.timers.forEach(clearInterval); // the role will not change mid-session
  }
}

async function loadRollouts() {
  try {
    const body = await (await api("/v1/campaigns")).json();
    if (!body.count) { $("rollouts").textContent = "No OTA campaign on this hub."; return; }
    $("rollouts").replaceChildren(...body.data.map((c) => el("div", { class: "campaign" },
      el("b", {}, c.id), ` ${c.target} `, el("span", { class: "muted" }, `${c.state}, wave ${c.wave}/${c.waves}`), " ",
      el("progress", { max: Number(c.devices) || 0, value: Number(c.installed) || 0 }), ` ${c.installed}/${c.devices}`,
      ...(c.failed ? [" ", el("span", { class: "error" }, `${c.failed} failed`)] : []))));
  } catch (e) {
    $("rollouts").textContent = e.status === 403 ? "Rollouts are for operators and technicians." : e.message;
  }
}

async function liveEvents() {
  try {
    const response = await api("/v1/events/stream?max_s=3600");
    $("live-status").textContent = "connected";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (chunk.startsWith(": closed: ")) $("live-status").textContent = `disconnected (${chunk.slice(10)})`;
        if (!chunk.startsWith("data: ")) continue;
        const e = JSON.parse(chunk.slice(6));
        const li = document.createElement("li");
        li.textContent = `${new Date((e.window_start || e.ts) * 1000).toISOString().slice(11, 19)} ${e.site}/${e.device} ${e.kind} ${e.zone || e.line || e.sensor || ""}`;
        $("live").prepend(li);
        while ($("live").children.length > 50) $("live").lastChild.remove();
      }
    }
  } catch (e) {
    $("live-status").textContent = e.status === 403 ? "Live events are for analysts and operators." : e.message;
  }
}

function vendorMissing() {
  const absent = [typeof L === "undefined" && "Leaflet", typeof uPlot === "undefined" && "uPlot"].filter(Boolean);
  if (!absent.length) return false;
  const banner = $("vendor-error");
  banner.textContent = `The map and chart libraries (${absent.join(", ")}) are not installed on this hub: ` +
    "run `vigie hub assets fetch` on the hub, then reload. Fleet, rollouts and live events work without them.";
  banner.hidden = false;
  return true;
}

async function start() {
  const me = await (await api("/v1/auth/me")).json();
  state.role = me.role;
  $("who").textContent = `${me.username} (${me.role})`;
  $("login-panel").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  if (!vendorMissing()) await refreshMap();
  loadFleet();
  loadRollouts();
  state.timers.forEach(clearInterval);
  state.timers = [setInterval(loadFleet, 5000), setInterval(loadRollouts, 10000)];
  liveEvents();
}

$("login").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
$("layer").addEventListener("change", refreshMap);
$("level").addEventListener("change", () => { mapState.selected = null; refreshMap(); });
$("source").addEventListener("change", refreshMap);
$("bucket").addEventListener("change", refreshMap);
$("time").addEventListener("input", showFrame);
$("drill-up").addEventListener("click", drillUp);
$("search-form").addEventListener("submit", findDistrict);
if (state.token) start().catch(() => logout());
