// Vigie dashboard: plain JavaScript, no CDN, no map tiles. Zones are drawn as SVG polygons from
// their geometry (GET /v1/zones). Every request carries the bearer token and, for sensitive
// routes, a stated purpose (recorded in the audit log).
"use strict";

const state = { token: sessionStorage.getItem("vigie.token"), role: null, zones: null, frames: [], rows: {} };
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
const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}
const PALETTE = ["#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704"];

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
}

// -- map --------------------------------------------------------------------------------------
function project(features) {
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  const rings = (g) => (g.type === "Polygon" ? [g.coordinates[0]] : g.coordinates.map((p) => p[0]));
  for (const f of features) for (const ring of rings(f.geometry)) for (const [lon, lat] of ring) {
    x0 = Math.min(x0, lon); x1 = Math.max(x1, lon); y0 = Math.min(y0, lat); y1 = Math.max(y1, lat);
  }
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
  const scale = Math.min(780 / ((x1 - x0) * k || 1), 580 / ((y1 - y0) || 1));
  return (lon, lat) => [10 + (lon - x0) * k * scale, 590 - (lat - y0) * scale];
}

function drawZones(collection) {
  const svg = $("map");
  const pattern = svgEl("pattern", { id: "hatch", width: 4, height: 4, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  pattern.append(svgEl("rect", { width: 4, height: 4, fill: "#dde3ea" }),
    svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 4, stroke: "#9aa6b2", "stroke-width": 1.5 }));
  const defs = svgEl("defs");
  defs.append(pattern);
  svg.replaceChildren(defs);
  const to = project(collection.features);
  for (const f of collection.features) {
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    const d = polys.map((rings) => rings.map((ring) => "M" + ring.map(([x, y]) => to(x, y).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("")).join("");
    const path = svgEl("path", { d, fill: "#f2f4f7" });
    path.dataset.zone = f.id;
    const title = svgEl("title");
    title.textContent = f.id;
    path.appendChild(title);
    svg.appendChild(path);
  }
}

function colour(value, max) {
  if (value === null || value === undefined) return null;
  const i = Math.min(PALETTE.length - 1, Math.floor((Math.log1p(value) / Math.log1p(max || 1)) * (PALETTE.length - 1)));
  return PALETTE[Math.max(0, i)];
}

function paint(values, label) {
  const max = Math.max(1e-9, ...Object.values(values).filter((v) => v !== null));
  let coloured = 0;
  for (const path of $("map").querySelectorAll("path")) {
    const zone = path.dataset.zone;
    const has = Object.prototype.hasOwnProperty.call(values, zone);
    const v = has ? values[zone] : undefined;
    path.classList.toggle("suppressed", has && v === null);
    const c = colour(v, max);
    path.setAttribute("fill", c || (has ? "url(#hatch)" : "#f2f4f7"));
    path.dataset.value = v === undefined ? "" : v === null ? "suppressed" : String(v);
    path.querySelector("title").textContent = `${zone}: ${v === undefined ? "no data" : v === null ? "under k (suppressed)" : v.toFixed(2)}`;
    if (c) coloured += 1;
  }
  $("map").dataset.coloured = String(coloured);
  $("legend").replaceChildren(el("span", {}, "0"),
    ...PALETTE.map((p) => el("span", { class: "swatch", style: { background: p } })),
    el("span", {}, `${max.toFixed(1)} ${label}`), " ", el("span", { class: "swatch hatched" }), el("span", {}, "under k"));
}

async function loadActivity() {
  const source = $("source").value;
  const q = new URLSearchParams({ zone_kind: "h3", bucket: $("bucket").value, limit: "100000" });
  if (source) q.set("source", source);
  const body = await (await api(`/v1/cube?${q}`, { purpose: "dashboard: activity map" })).json();
  const frames = {};
  const sources = new Set();
  for (const r of body.data) {
    sources.add(r.source);
    frames[r.start] = frames[r.start] || {};
    const prev = frames[r.start][r.zone];
    frames[r.start][r.zone] = r.n === null ? (prev ?? null) : (prev || 0) + r.n;
  }
  state.frames = Object.keys(frames).map(Number).sort((a, b) => a - b);
  state.rows = frames;
  state.tz = body.tz || "UTC";
  const select = $("source");
  if (select.options.length === 1) for (const s of [...sources].sort()) select.add(new Option(s, s));
  $("time").max = String(Math.max(0, state.frames.length - 1));
  $("time").value = $("time").max;
  $("time").disabled = false;
  showFrame();
  $("map-status").textContent = `${body.count} zone-${$("bucket").value}s; cells under k=${body.k} are hatched, never shown`;
}

function showFrame() {
  const t = state.frames[Number($("time").value)];
  if (t === undefined) { $("time-label").textContent = "no data yet"; paint({}, ""); return; }
  const bucket = $("bucket").value;
  const iso = new Date(t * 1000).toISOString();
  // Days, weeks and months start at midnight in the city's time zone: label them there.
  const local = new Date(t * 1000).toLocaleDateString("sv-SE", { timeZone: state.tz || "UTC" });
  const prefix = bucket === "week" ? "week of " : bucket === "month" ? "month from " : "";
  $("time-label").textContent = bucket === "hour" ? iso.slice(0, 13) + ":00Z" : prefix + local;
  paint(state.rows[t], `per ${bucket}`);
}

async function loadAnomalies() {
  const body = await (await api("/v1/anomalies?limit=5000", { purpose: "dashboard: anomaly map" })).json();
  const values = {};
  for (const a of body.data) {
    // The hub serves anomalies only on hours it serves; a row without its p is never coloured.
    if (a.suppressed || a.p === null || a.p === undefined) continue;
    values[a.zone] = Math.max(values[a.zone] || 0, a.p > 0 ? -Math.log10(a.p) : 30);
  }
  $("time").disabled = true;
  $("time-label").textContent = `${body.count} anomalies`;
  paint(values, "−log10 p");
}

async function loadForecast() {
  const body = await (await api("/v1/forecast?horizon=24&limit=100000", { purpose: "dashboard: risk forecast map" })).json();
  const values = {};
  for (const f of body.data) values[f.zone] = f.expected;
  $("time").disabled = true;
  $("time-label").textContent = "next 24 h";
  paint(values, "expected");
}

async function refreshMap() {
  $("map-status").textContent = "";
  try {
    if (!state.zones) {
      state.zones = await (await api("/v1/zones?kind=h3", { purpose: "dashboard: zone outlines" })).json();
      drawZones(state.zones);
    }
    const layer = $("layer").value;
    await (layer === "activity" ? loadActivity() : layer === "anomaly" ? loadAnomalies() : loadForecast());
  } catch (e) {
    $("map-status").textContent = e.status === 403 ? `Your role cannot see this layer (${e.message}).` : e.message;
  }
}

// -- fleet, live events ----------------------------------------------------------------------
async function loadFleet() {
  try {
    const body = await (await api("/v1/devices")).json();
    const rows = body.data.map((d) => {
      const hb = d.heartbeat || {};
      const online = d.status === "online" ? "online" : "offline";
      return el("tr", {}, el("td", {}, `${d.site}/${d.device}`), el("td", { class: online }, online),
        el("td", {}, hb.fps ?? "-"), el("td", {}, hb.cpu_temp_c ?? "-"), el("td", {}, hb.model ?? "-"));
    });
    $("fleet").querySelector("tbody").replaceChildren(...rows);
    $("fleet-status").textContent = `${body.count} devices`;
  } catch (e) {
    $("fleet-status").textContent = e.status === 403 ? "Fleet health is for operators and technicians." : e.message;
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

async function start() {
  const me = await (await api("/v1/auth/me")).json();
  state.role = me.role;
  $("who").textContent = `${me.username} (${me.role})`;
  $("login-panel").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await refreshMap();
  loadFleet();
  loadRollouts();
  setInterval(loadRollouts, 10000);
  liveEvents();
}

$("login").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
$("layer").addEventListener("change", refreshMap);
$("source").addEventListener("change", refreshMap);
$("bucket").addEventListener("change", refreshMap);
$("time").addEventListener("input", showFrame);
if (state.token) start().catch(() => logout());
