// The map (Leaflet, the hub's own copy; SVG, no WebGL): the city's named districts as the base layer,
// with labels, a scale bar and a legend; the city's own tile server under them when one is set.
// Activity is drawn by district (default, when the hub has districts) or by H3 cell; a click on a
// district drills to its cells and charts it. Every number comes from the hub's protected tables:
// the page never adds zones together, it only colours what the API served.
"use strict";

const PALETTE = ["#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704"];
const BASE_STYLE = { color: "#41566b", weight: 1, fillColor: "#f7f9fb", fillOpacity: 0.35 };
const mapState = {
  map: null, settings: null, districts: null, districtLayer: null, labels: null, cells: null,
  cellLayer: null, drillLayer: null, drill: null, frames: [], values: {}, zoneRows: {}, bucket: "week",
  selected: null, tz: "UTC",
};

function escapeText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

async function initMap() {
  const settings = await (await api("/v1/map/settings")).json();
  mapState.settings = settings;
  mapState.tz = settings.tz;
  const map = L.map("map", { zoomSnap: 0.25, minZoom: 3 });
  // Leaflet's default credit carries an inline flag image: a plain link instead (the CSP stays strict).
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
  if (settings.tile_url) {
    L.tileLayer(settings.tile_url, { attribution: escapeText(settings.tile_attribution || "city tiles"), maxZoom: 19 }).addTo(map);
  }
  mapState.map = map;
  if (settings.districts) {
    mapState.districts = await (await api("/v1/map/districts")).json();
    drawDistricts(mapState.districts);
    $("level").add(new Option("district", "district"), 0);
    $("level").value = "district";
  }
  map.on("zoomend moveend", placeLabels);
}

function drawDistricts(collection) {
  const map = mapState.map;
  mapState.districtLayer = L.geoJSON(collection, {
    style: () => ({ ...BASE_STYLE }),
    onEachFeature: (feature, layer) => {
      layer.bindTooltip(el("span", {}, feature.properties.name), { sticky: true });
      layer.on("click", () => drillInto(feature, layer));
    },
  }).addTo(map);
  map.fitBounds(mapState.districtLayer.getBounds(), { padding: [8, 8] });
  ensureHatch();
  // Labels: one per district at its centre, as text nodes (a name is never parsed as HTML).
  mapState.labels = L.layerGroup().addTo(map);
  const names = $("district-names");
  names.replaceChildren();
  mapState.districtLayer.eachLayer((layer) => {
    const name = layer.feature.properties.name;
    const node = el("span", { class: "district-name" }, name);
    const bounds = layer.getBounds();
    const marker = L.marker(layer.getCenter(), {
      icon: L.divIcon({ className: "district-label", html: node, iconSize: null }),
      interactive: false, keyboard: false,
    });
    marker.area = (bounds.getEast() - bounds.getWest()) * (bounds.getNorth() - bounds.getSouth());
    mapState.labels.addLayer(marker);
    names.append(el("option", { value: name }));
  });
  $("search-form").hidden = false;
  placeLabels();
}

// Show the labels of the largest districts first and hide any that would overlap one already shown.
function placeLabels() {
  if (!mapState.labels) return;
  const markers = mapState.labels.getLayers().sort((a, b) => b.area - a.area);
  const kept = [];
  for (const m of markers) {
    const node = m.getElement();
    if (!node) continue;
    node.classList.remove("hidden-label");
    const r = (node.firstElementChild || node).getBoundingClientRect(); // the name as drawn (centred)
    const clash = kept.some((k) => r.left < k.right + 2 && r.right > k.left - 2 && r.top < k.bottom && r.bottom > k.top);
    if (clash) node.classList.add("hidden-label"); else kept.push(r);
  }
  $("map").dataset.labels = String(kept.length);
}

function ensureHatch() {
  const svg = mapState.map.getPanes().overlayPane.querySelector("svg");
  if (!svg || svg.querySelector("#hatch")) return;
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v)); return n; };
  const pattern = mk("pattern", { id: "hatch", width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  pattern.append(mk("rect", { width: 5, height: 5, fill: "#cfd7e0" }), mk("line", { x1: 0, y1: 0, x2: 0, y2: 5, stroke: "#5f6e7e", "stroke-width": 1.6 }));
  const defs = mk("defs", {});
  defs.append(pattern);
  svg.prepend(defs);
}

async function loadCells() {
  if (!mapState.cells) mapState.cells = await (await api("/v1/zones?kind=h3&limit=20000", { purpose: "dashboard: zone outlines" })).json();
  return mapState.cells;
}

function cellLayerFor(features, onClick) {
  const layer = L.geoJSON({ type: "FeatureCollection", features }, {
    style: () => ({ color: "#5a6b7d", weight: 0.5, fillColor: "#f2f4f7", fillOpacity: 0.75 }),
    onEachFeature: (feature, l) => {
      l.tip = el("span", {}, feature.id);
      l.bindTooltip(l.tip, { sticky: true });
      l.on("click", () => onClick(feature));
    },
  });
  return layer;
}

function colour(value, max) {
  if (value === null || value === undefined) return null;
  const i = Math.min(PALETTE.length - 1, Math.floor((Math.log1p(value) / Math.log1p(max || 1)) * (PALETTE.length - 1)));
  return PALETTE[Math.max(0, i)];
}

// Colour every zone of `layer` from `values` (zone → number, or null when suppressed).
function paintLayer(layer, values, label, max, partial = new Set()) {
  ensureHatch(); // the SVG exists only once the map has a view: a map with no districts gets it late
  let coloured = 0;
  let hatched = 0;
  layer.eachLayer((l) => {
    const zone = l.feature.id;
    const has = Object.prototype.hasOwnProperty.call(values, zone);
    const v = has ? values[zone] : undefined;
    const c = colour(v, max);
    l.setStyle({ fillColor: c || (has ? "url(#hatch)" : BASE_STYLE.fillColor), fillOpacity: c || has ? 0.85 : 0.35 });
    const path = l.getElement();
    if (path) {
      path.classList.toggle("suppressed", has && v === null);
      path.dataset.zone = zone;
      path.dataset.value = v === undefined ? "" : v === null ? "suppressed" : String(v);
    }
    const name = l.feature.properties.name || zone;
    const floor = partial && partial.has(zone) ? " (at least: some categories under k are not counted)" : "";
    const text = `${name}: ${v === undefined ? "no data" : v === null ? "under k (suppressed)" : `${+v.toFixed(2)} ${label}${floor}`}`;
    l.setTooltipContent(el("span", {}, text));
    if (c) coloured += 1;
    if (has && v === null) hatched += 1;
  });
  return { coloured, hatched };
}

function drawLegend(max, label) {
  $("legend").replaceChildren(el("span", {}, "0"),
    ...PALETTE.map((p) => el("span", { class: "swatch", style: { background: p } })),
    el("span", {}, `${+max.toFixed(1)} ${label}`), el("span", { class: "swatch hatched" }), el("span", {}, `under k=${state.k ?? "k"} (not shown)`),
    el("span", { class: "swatch nodata" }), el("span", {}, "no data"));
}
