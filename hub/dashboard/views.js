// The views an analyst switches between: activity over time (by district or cell, with a time slider
// of real dates), anomalies and the risk forecast (by cell, labelled with the dates it covers), the
// drill from a district to its cells, and the time chart of the selected area.
"use strict";

const LEVEL_KIND = { district: "poly", cell: "h3" };

// Epoch seconds from a row's time, whether the API gives epoch seconds or ISO 8601.
const epoch = (v) => (typeof v === "number" ? v : Math.round(Date.parse(v) / 1000));

// The cube's rows for these parameters; follows the API's `next` link, if it paginates, to the end.
async function fetchCube(params, purpose) {
  const q = new URLSearchParams({ limit: "100000", ...params });
  const source = $("source").value;
  if (source) q.set("source", source);
  const body = await (await api(`/v1/cube?${q}`, { purpose })).json();
  let next = body.next;
  for (let page = 0; next && page < 100; page += 1) {
    const more = await (await api(next, { purpose })).json();
    body.data.push(...more.data);
    next = more.next;
  }
  for (const r of body.data) r.start = epoch(r.start);
  body.count = body.data.length;
  return body;
}

// rows → { start: { zone: n | null } }: a zone's served rows added up; all suppressed → null. A zone
// with some rows served and some suppressed is listed in frames.partial[start] (its sum is a floor).
function framesOf(rows) {
  const frames = {};
  const partial = {};
  const hidden = {};
  for (const r of rows) {
    frames[r.start] = frames[r.start] || {};
    const prev = frames[r.start][r.zone];
    frames[r.start][r.zone] = r.n === null ? (prev ?? null) : (prev || 0) + r.n;
    if (r.n === null) (hidden[r.start] = hidden[r.start] || new Set()).add(r.zone);
  }
  for (const [t, zones] of Object.entries(hidden)) {
    partial[t] = new Set([...zones].filter((z) => frames[t][z] !== null));
  }
  Object.defineProperty(frames, "partial", { value: partial, enumerable: false });
  return frames;
}

const served = (frame) => Object.values(frame || {}).filter((x) => x !== null).length;

// The period the slider opens on: the latest whose served zones are at least half the best period's
// (the latest period is often a partial one, nearly empty).
function openingFrame(frames, starts) {
  const best = Math.max(0, ...starts.map((t) => served(frames[t])));
  for (let i = starts.length - 1; i >= 0; i -= 1) if (served(frames[starts[i]]) >= best / 2) return i;
  return starts.length - 1;
}

// "auto": the finest of week and month at which the opening period shows at least half of the zones
// that have any data at all (coarser first would hide nothing useful; finer would hatch most of the map).
async function activityCube(level) {
  const kind = LEVEL_KIND[level];
  const chosen = $("bucket").value;
  const tries = chosen === "auto" ? ["week", "month"] : [chosen];
  let body;
  let bucket;
  let note = "";
  for (const b of tries) {
    bucket = b;
    body = await fetchCube({ zone_kind: kind, bucket: b }, "dashboard: activity map");
    const frames = framesOf(body.data);
    const starts = Object.keys(frames).map(Number).sort((x, y) => x - y);
    const zones = new Set(body.data.map((r) => r.zone)).size;
    const share = zones ? served(frames[starts[openingFrame(frames, starts)]]) / zones : 0;
    if (share >= 0.5 || b === tries[tries.length - 1]) {
      if (chosen === "auto") note = ` (auto: per ${b}, ${Math.round(share * 100)} % of the ${zones} ${level}s with data shown)`;
      break;
    }
  }
  return { body, bucket, note };
}

async function loadActivity() {
  const level = $("level").value;
  const { body, bucket, note } = await activityCube(level);
  mapState.bucket = bucket;
  mapState.tz = body.tz || mapState.tz;
  state.k = body.k;
  const sources = new Set(body.data.map((r) => r.source));
  const select = $("source");
  if (select.options.length === 1) for (const s of [...sources].sort()) select.add(new Option(s, s));
  const frames = framesOf(body.data);
  mapState.frames = Object.keys(frames).map(Number).sort((a, b) => a - b);
  mapState.values = frames;
  mapState.zoneRows = {};
  for (const r of body.data) (mapState.zoneRows[r.zone] = mapState.zoneRows[r.zone] || []).push(r);
  await showLevel(level);
  const slider = $("time");
  slider.max = String(Math.max(0, mapState.frames.length - 1));
  slider.value = String(Math.max(0, openingFrame(frames, mapState.frames)));
  slider.disabled = false;
  $("time-min").textContent = mapState.frames.length ? periodLabel(mapState.frames[0], bucket) : "";
  $("time-max").textContent = mapState.frames.length ? periodLabel(mapState.frames[mapState.frames.length - 1], bucket) : "";
  showFrame();
  $("map-status").textContent = `${body.count} ${level}-${bucket}s; those under k=${body.k} are hatched, never shown${note}`;
  if (!mapState.selected) selectBusiest(level);
  else await selectZone(mapState.selected.zone, mapState.selected.title);
}

async function showLevel(level) {
  const map = mapState.map;
  if (mapState.cellLayer) { map.removeLayer(mapState.cellLayer); mapState.cellLayer = null; }
  if (level === "cell") {
    const cells = await loadCells();
    mapState.cellLayer = cellLayerFor(cells.features, (f) => selectZone(f.id, `cell ${f.id.slice(3)}`)).addTo(map);
    ensureHatch();
    if (!mapState.districtLayer && cells.features.length && !mapState.fitted) {
      map.fitBounds(mapState.cellLayer.getBounds(), { padding: [8, 8] });
      mapState.fitted = true;
    }
  } else if (mapState.districtLayer) {
    mapState.districtLayer.eachLayer((l) => l.setStyle({ ...BASE_STYLE }));
  }
}

function periodLabel(t, bucket) {
  if (bucket === "hour") return new Date(t * 1000).toLocaleString("sv-SE", { timeZone: mapState.tz }).slice(0, 16);
  const local = new Date(t * 1000).toLocaleDateString("sv-SE", { timeZone: mapState.tz });
  return bucket === "month" ? local.slice(0, 7) : local;
}

function showFrame() {
  const t = mapState.frames[Number($("time").value)];
  const level = $("level").value;
  const target = level === "cell" ? mapState.cellLayer : mapState.districtLayer;
  if (t === undefined || !target) { $("time-label").textContent = "no data yet"; return; }
  const bucket = mapState.bucket;
  // Days, weeks and months start at midnight in the city's time zone: label them there.
  const prefix = bucket === "week" ? "week of " : bucket === "month" ? "month of " : "";
  $("time-label").textContent = prefix + periodLabel(t, bucket);
  const values = mapState.values[t] || {};
  const max = Math.max(1e-9, ...Object.values(values).filter((v) => v !== null));
  const counts = paintLayer(target, values, `per ${bucket}`, max, mapState.values.partial[t]);
  $("map").dataset.coloured = String(counts.coloured);
  drawLegend(max, `per ${bucket}`);
  if (mapState.drill) paintDrill(t);
  chartMark(t);
}

// In a drill-down the districts fade to outlines, the chosen one drawn bold, so that its cells read.
function fadeDistricts() {
  mapState.districtLayer.eachLayer((l) => {
    const chosen = mapState.drill && l.feature.id === mapState.drill.zone;
    l.setStyle(chosen ? { color: "#14202e", weight: 3, fillOpacity: 0 } : { ...BASE_STYLE, fillOpacity: 0.15 });
    // The bold outline over the cells, letting clicks through to them.
    if (chosen) { l.bringToFront(); l.getElement().style.pointerEvents = "none"; }
    else if (l.getElement()) l.getElement().style.pointerEvents = "";
  });
}

function selectBusiest(level) {
  const totals = {};
  for (const [zone, rows] of Object.entries(mapState.zoneRows)) totals[zone] = rows.reduce((a, r) => a + (r.n || 0), 0);
  const best = Object.keys(totals).sort((a, b) => totals[b] - totals[a])[0];
  if (best) selectZone(best, level === "district" ? best.slice(5) : `cell ${best.slice(3)}`);
}

async function selectZone(zone, title) {
  mapState.selected = { zone, title };
  let rows = mapState.zoneRows[zone];
  if (!rows) rows = (await fetchCube({ zone, bucket: mapState.bucket }, "dashboard: time chart")).data;
  const t = mapState.frames[Number($("time").value)];
  drawChart({ title: `${title}: counts per ${mapState.bucket}`, rows, xs: mapState.frames, tz: mapState.tz, bucket: mapState.bucket, current: t });
}

function inRing(ring, [lon, lat]) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if ((yi > lat) !== (yj > lat) && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

// Whether an H3 cell overlaps a district: a corner or the centre of the cell inside the district, or a
// corner of the district inside the cell (a small district can sit inside one cell).
function overlaps(cell, district) {
  const hex = cell.geometry.coordinates[0];
  const centre = [hex.reduce((a, p) => a + p[0], 0) / hex.length, hex.reduce((a, p) => a + p[1], 0) / hex.length];
  const polys = district.geometry.type === "Polygon" ? [district.geometry.coordinates] : district.geometry.coordinates;
  const inDistrict = (pt) => polys.some((rings) => inRing(rings[0], pt) && !rings.slice(1).some((h) => inRing(h, pt)));
  return [centre, ...hex].some(inDistrict) || polys.some((rings) => rings[0].some((pt) => inRing(hex, pt)));
}

// A click on a district: zoom to it, chart it, and show its cells (their own protected rows).
async function drillInto(feature, layer) {
  const name = feature.properties.name;
  mapState.map.fitBounds(layer.getBounds(), { padding: [20, 20] });
  await selectZone(feature.id, name);
  if ($("level").value !== "district" || $("layer").value !== "activity") return;
  const cells = (await loadCells()).features.filter((f) => overlaps(f, feature));
  if (mapState.drillLayer) mapState.map.removeLayer(mapState.drillLayer);
  mapState.drill = { zone: feature.id, name, cells: cells.length, values: {} };
  mapState.drillLayer = cellLayerFor(cells, (f) => selectZone(f.id, `${name}, cell ${f.id.slice(3)}`)).addTo(mapState.map);
  mapState.drillLayer.setStyle({ color: "#14202e", weight: 1.2 });
  ensureHatch();
  // Zoom to the cells (a small district sits inside one cell): all of them in view, the district bold.
  if (cells.length) mapState.map.fitBounds(mapState.drillLayer.getBounds(), { padding: [20, 20] });
  if (cells.length) {
    const body = await fetchCube({ zone: cells.map((f) => f.id).join(","), bucket: mapState.bucket }, "dashboard: drill-down");
    mapState.drill.values = framesOf(body.data);
    for (const r of body.data) (mapState.zoneRows[r.zone] = mapState.zoneRows[r.zone] || []).push(r);
  }
  $("drill-up").hidden = false;
  $("drill-up").textContent = `Back to all districts (showing ${cells.length} cells of ${name})`;
  $("map").dataset.drill = feature.id;
  paintDrill(mapState.frames[Number($("time").value)]);
}

function paintDrill(t) {
  if (!mapState.drillLayer) return;
  const values = mapState.drill.values[t] || {};
  const max = Math.max(1e-9, ...Object.values(values).filter((v) => v !== null));
  const counts = paintLayer(mapState.drillLayer, values, `per ${mapState.bucket}`, max, mapState.drill.values.partial[t]);
  $("map").dataset.drillColoured = String(counts.coloured);
  fadeDistricts();
  drawLegend(max, `per ${mapState.bucket} in a cell`);
}

function drillUp() {
  if (mapState.drillLayer) mapState.map.removeLayer(mapState.drillLayer);
  mapState.drillLayer = null;
  mapState.drill = null;
  $("drill-up").hidden = true;
  delete $("map").dataset.drill;
  if (mapState.districtLayer) mapState.map.fitBounds(mapState.districtLayer.getBounds(), { padding: [8, 8] });
}

function findDistrict(event) {
  event.preventDefault();
  const fold = (s) => s.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toUpperCase().trim();
  const wanted = fold($("search").value);
  if (!wanted || !mapState.districtLayer) return;
  let hit = null;
  mapState.districtLayer.eachLayer((l) => { const n = fold(l.feature.properties.name); if (!hit && (n === wanted || n.startsWith(wanted))) hit = l; });
  $("map-status").textContent = hit ? "" : `No district named "${$("search").value}".`;
  if (hit) drillInto(hit.feature, hit);
}

async function loadAnomalies() {
  const body = await (await api("/v1/anomalies?limit=5000", { purpose: "dashboard: anomaly map" })).json();
  const values = {};
  for (const a of body.data) {
    // The hub serves anomalies only on hours it serves; a row without its p is never coloured.
    if (a.suppressed || a.p === null || a.p === undefined) continue;
    values[a.zone] = Math.max(values[a.zone] || 0, a.p > 0 ? -Math.log10(a.p) : 30);
  }
  // By district when the model learnt districts and the map is by district; else by cell.
  const byDistrict = $("level").value === "district" && Object.keys(values).some((z) => z.startsWith("poly:"));
  await showLevel(byDistrict ? "district" : "cell");
  $("time").disabled = true;
  $("time-label").textContent = `${body.count} anomalies`;
  const max = Math.max(1e-9, ...Object.values(values));
  const target = byDistrict ? mapState.districtLayer : mapState.cellLayer;
  $("map").dataset.coloured = String(paintLayer(target, values, "−log10 p", max).coloured);
  drawLegend(max, "−log10 p");
}

async function loadForecast() {
  const body = await (await api("/v1/forecast?horizon=24&limit=100000", { purpose: "dashboard: risk forecast map" })).json();
  const values = {};
  for (const f of body.data) values[f.zone] = f.expected;
  await showLevel("cell");
  $("time").disabled = true;
  const first = body.data[0];
  const fmt = (v) => new Date(epoch(v) * 1000).toLocaleString("sv-SE", { timeZone: mapState.tz }).slice(0, 16);
  $("time-label").textContent = first && first.start
    ? `forecast ${fmt(first.start)} → ${fmt(first.end)} (${mapState.tz})` : "no forecast: no learnt hour yet";
  const max = Math.max(1e-9, ...Object.values(values));
  $("map").dataset.coloured = String(paintLayer(mapState.cellLayer, values, "expected", max).coloured);
  drawLegend(max, "expected in 24 h");
}

async function refreshMap() {
  $("map-status").textContent = "";
  try {
    if (!mapState.map) await initMap();
    drillUp();
    const layer = $("layer").value;
    await (layer === "activity" ? loadActivity() : layer === "anomaly" ? loadAnomalies() : loadForecast());
  } catch (e) {
    $("map-status").textContent = e.status === 403 ? `Your role cannot see this layer (${e.message}).` : e.message;
  }
}
