// The debris map: MapLibre GL drawing the service's vector tiles (/api/v1/tiles: clusters
// sized by count, then one point per detection), with filters that restyle it in place, a
// legend and photo popups. The base map is bundled (Natural Earth); OpenStreetMap is added
// when its tiles load. Without vector tiles (the embedded SQLite database answers 501) it
// falls back to GeoJSON markers, or counted grid cells when there are many.
import * as maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import "./pages.css";

const MAX_MARKERS = 2000;
// Subdomain form, which the pages' Content-Security-Policy allows (web/security.py).
const OSM_TILES = ["a", "b", "c"].map((s) => `https://${s}.tile.openstreetmap.org/{z}/{x}/{y}.png`);
const OSM_PROBE_MS = 4000;
const TILE_MAX_ZOOM = 16; // deeper zooms enlarge these tiles (one point per detection already)
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
  "#9a6324", "#469990", "#800000", "#808000", "#000075", "#bfef45", "#fabed4", "#dcbeff"];
const CLUSTER_COLOR = "#0f4c5c";
const OTHER_COLOR = "#6b7780";
const FILTER_IDS = ["f-label", "f-supercategory", "f-score", "f-since", "f-until"];

const colorOf = (name) => {
  let h = 0;
  for (const ch of name || "?") h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
};

const $ = (id) => document.getElementById(id);
const absolute = (path) => new URL(path, window.location.href).href;
const escape = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

// name:version of untrained (random) detectors, from the page; their detections get a banner.
const untrainedModels = () => JSON.parse($("untrained-banner").dataset.models || "[]");

// label -> supercategory (TACO), from the page: points are coloured by their kind.
const labelKinds = () => JSON.parse($("map-page").dataset.labelKinds || "{}");

function filterParams() {
  const q = new URLSearchParams();
  const label = $("f-label").value.trim();
  if (label) q.append("label", label);
  if ($("f-supercategory").value) q.set("supercategory", $("f-supercategory").value);
  const score = Number($("f-score").value);
  if (score > 0) q.set("min_score", String(score));
  if ($("f-since").value) q.set("since", $("f-since").value);
  if ($("f-until").value) q.set("until", $("f-until").value);
  return q;
}

function viewBbox(map) {
  const b = map.getBounds();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
    clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)].map((v) => v.toFixed(6)).join(",");
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

// A MapLibre colour expression: the label's supercategory's colour, grey for other labels.
function colorExpression(kinds) {
  const groups = {};
  for (const [label, kind] of Object.entries(kinds)) (groups[kind] ||= new Set([kind])).add(label);
  const branches = Object.entries(groups).flatMap(([kind, labels]) => [[...labels], colorOf(kind)]);
  return branches.length ? ["match", ["get", "label"], ...branches, OTHER_COLOR] : OTHER_COLOR;
}

function baseStyle(basemapUrl) {
  return {
    version: 8,
    sources: {
      basemap: {
        type: "geojson",
        data: absolute(basemapUrl),
        attribution: "Natural Earth",
      },
    },
    layers: [
      { id: "ocean", type: "background", paint: { "background-color": "#cfe3ea" } },
      {
        id: "land", type: "fill", source: "basemap", filter: ["==", ["get", "kind"], "land"],
        paint: { "fill-color": "#f4f1ea" },
      },
      {
        id: "borders", type: "line", source: "basemap", filter: ["==", ["get", "kind"], "border"],
        paint: { "line-color": "#a49f95", "line-width": 0.7, "line-dasharray": [3, 2] },
      },
      {
        id: "coast", type: "line", source: "basemap", filter: ["==", ["get", "kind"], "coast"],
        paint: { "line-color": "#7d9aa5", "line-width": 0.9 },
      },
    ],
  };
}

// OpenStreetMap only when one of its tiles loads; otherwise a note says the base map is offline.
function addOsmWhenReachable(map) {
  const probe = new Image();
  const offline = () => {
    if (document.body.dataset.basemap) return;
    document.body.dataset.basemap = "offline";
    $("basemap-note").hidden = false;
  };
  const timer = setTimeout(offline, OSM_PROBE_MS);
  probe.onerror = () => { clearTimeout(timer); offline(); };
  probe.onload = () => {
    clearTimeout(timer);
    document.body.dataset.basemap = "osm";
    $("basemap-note").hidden = true;
    const add = () => {
      map.addSource("osm", {
        type: "raster", tiles: OSM_TILES, tileSize: 256, maxzoom: 19,
        attribution: "© OpenStreetMap contributors",
      });
      map.addLayer({ id: "osm", type: "raster", source: "osm" }, "borders");
    };
    if (map.isStyleLoaded()) add(); else map.once("load", add);
  };
  probe.src = OSM_TILES[0].replace("{z}/{x}/{y}", "0/0/0");
}

function boxesHtml(photo, selected) {
  const scale = 280 / photo.width;
  return photo.detections.map((d, i) => {
    const [x1, y1, x2, y2] = d.bbox.map((v) => v * scale);
    const cls = selected && d.label === selected.label && Math.abs(d.score - selected.score) < 1e-4
      ? "box selected" : "box";
    return `<div class="${cls}" data-box="${i}" title="${escape(d.label)} ${d.score.toFixed(2)}"
      style="left:${x1}px;top:${y1}px;width:${x2 - x1}px;height:${y2 - y1}px"></div>`;
  }).join("");
}

async function openPopup(map, lngLat, props) {
  const popup = new maplibregl.Popup({ maxWidth: "300px" })
    .setLngLat(lngLat).setHTML("Loading…").addTo(map);
  try {
    const photo = await getJson(`/api/v1/photos/${props.photo_id}`);
    const kinds = labelKinds();
    const kind = props.supercategory || kinds[props.label] || "?";
    const taken = props.taken_at || photo.taken_at || "date unknown";
    popup.setHTML(`
      <div class="popup-photo"><img alt="photo ${photo.id}"
        src="/api/v1/photos/${photo.id}/image?max_size=512">${boxesHtml(photo, props)}</div>
      <div class="popup-meta"><b>${escape(props.label)}</b> (${escape(kind)}),
        score ${Number(props.score).toFixed(2)}<br>photo ${photo.id} · ${escape(photo.status)} ·
        ${photo.detections.length} detections${photo.model && photo.model.untrained
          ? " · <b>UNTRAINED model (random boxes)</b>" : ""}<br>
        ${escape(taken)}</div>`);
  } catch (err) {
    popup.setHTML(`Could not load the photo: ${escape(err.message)}`);
  }
}

const CLUSTER_NOTE = "cluster: circle area ∝ detections (click to zoom in)";
const CELL_NOTE = "cell: circle area ∝ detections";

// Colours of the kinds (with their counts when known), under an optional note on circles.
function renderLegend(kinds, counts, note) {
  const names = counts ? Object.keys(counts) : [...new Set(Object.values(kinds))].sort();
  const rows = names.sort((a, b) => (counts ? counts[b] - counts[a] : 0)).map((name) =>
    `<div class="legend-row"><span class="swatch" style="background:${colorOf(name)}"></span>
      ${escape(name)}${counts ? ` <span style="margin-left:auto">${counts[name]}</span>` : ""}</div>`);
  const head = note ? `<div class="legend-row"><span class="swatch" ` +
    `style="background:${CLUSTER_COLOR}"></span>${note}</div>` : "";
  $("legend").innerHTML = head + (rows.join("") || (head ? "" : "<i>nothing here</i>"));
}

function setSummary(text) {
  $("summary").textContent = text;
  $("summary-short").textContent = text.replace(" detections in view", " in view");
}

// How many detections match in view, and whether an untrained model's are among them.
async function countInView(map, q) {
  const inView = new URLSearchParams(q);
  inView.set("bbox", viewBbox(map));
  const page = await getJson(`/api/v1/detections?${inView}&limit=1`);
  const untrained = await Promise.all(untrainedModels().map(async (label) => {
    const mine = new URLSearchParams(inView);
    mine.set("model_version", label);
    return (await getJson(`/api/v1/detections?${mine}&limit=1`)).numberMatched > 0;
  }));
  return { total: page.numberMatched, untrained: untrained.some(Boolean) };
}

// The vector tile view (PostgreSQL + PostGIS).
function tileView(map, kinds) {
  const tileUrl = (q) => `${absolute("/api/v1/tiles/{z}/{x}/{y}.mvt")}${q.size ? `?${q}` : ""}`
    .replace("%7Bz%7D", "{z}").replace("%7Bx%7D", "{x}").replace("%7By%7D", "{y}");
  map.addSource("detections", {
    type: "vector", tiles: [tileUrl(filterParams())], minzoom: 0, maxzoom: TILE_MAX_ZOOM,
  });
  map.addLayer({
    id: "clusters", type: "circle", source: "detections", "source-layer": "detections",
    filter: ["has", "count"],
    paint: {
      "circle-color": CLUSTER_COLOR,
      "circle-opacity": 0.55,
      "circle-stroke-color": "#fff",
      "circle-stroke-width": 1,
      // Area grows with the count: the radius with its square root.
      "circle-radius": ["interpolate", ["linear"], ["sqrt", ["get", "count"]],
        1, 4, 10, 12, 100, 40],
    },
  });
  map.addLayer({
    id: "points", type: "circle", source: "detections", "source-layer": "detections",
    filter: ["!", ["has", "count"]],
    paint: {
      "circle-color": colorExpression(kinds),
      "circle-radius": 6,
      "circle-stroke-color": "#222",
      "circle-stroke-width": 1,
      "circle-opacity": 0.9,
    },
  });
  map.on("click", "clusters", (e) => {
    map.easeTo({ center: e.lngLat, zoom: Math.min(map.getZoom() + 3, TILE_MAX_ZOOM) });
  });
  map.on("click", "points", (e) => openPopup(map, e.lngLat, e.features[0].properties));
  for (const id of ["clusters", "points"]) {
    map.on("mouseenter", id, () => { map.getCanvas().style.cursor = "pointer"; });
    map.on("mouseleave", id, () => { map.getCanvas().style.cursor = ""; });
  }
  renderLegend(kinds, null, CLUSTER_NOTE);
  return {
    kind: "tiles",
    // New filters: the same layers, fresh tiles; the page and the view stay.
    applyFilters(q) { map.getSource("detections").setTiles([tileUrl(q)]); },
    async counts(q) {
      const { total, untrained } = await countInView(map, q);
      setSummary(`${total} detections in view`);
      $("untrained-banner").hidden = !untrained;
    },
  };
}

// The GeoJSON view (no vector tiles on SQLite): markers, or counted cells when many.
function geojsonView(map, kinds) {
  const empty = { type: "FeatureCollection", features: [] };
  map.addSource("fallback", { type: "geojson", data: empty });
  map.addLayer({
    id: "cells", type: "circle", source: "fallback", filter: ["has", "count"],
    paint: {
      "circle-color": CLUSTER_COLOR, "circle-opacity": 0.45,
      "circle-radius": ["+", 4, ["*", 18, ["sqrt", ["get", "share"]]]],
    },
  });
  map.addLayer({
    id: "points", type: "circle", source: "fallback", filter: ["!", ["has", "count"]],
    paint: {
      "circle-color": colorExpression(kinds), "circle-radius": 6,
      "circle-stroke-color": "#222", "circle-stroke-width": 1, "circle-opacity": 0.9,
    },
  });
  map.on("click", "points", (e) => openPopup(map, e.lngLat, e.features[0].properties));
  return {
    kind: "geojson",
    applyFilters() {}, // counts() fetches the filtered features each time
    async counts(q) {
      const inView = new URLSearchParams(q);
      inView.set("bbox", viewBbox(map));
      const page = await getJson(`/api/v1/detections?${inView}&limit=${MAX_MARKERS}`);
      if (page.numberMatched <= MAX_MARKERS) {
        const counts = {};
        for (const f of page.features) {
          const name = f.properties.supercategory || kinds[f.properties.label] || f.properties.label;
          counts[name] = (counts[name] || 0) + 1;
        }
        map.getSource("fallback").setData(page);
        renderLegend(kinds, counts, "");
        const untrained = new Set(untrainedModels());
        $("untrained-banner").hidden =
          !page.features.some((f) => untrained.has(f.properties.model_version));
        setSummary(`${page.numberMatched} detections in view`);
      } else {
        inView.set("zoom", String(Math.round(map.getZoom())));
        const grid = await getJson(`/api/v1/grid?${inView}`);
        const biggest = Math.max(...grid.features.map((f) => f.properties.count));
        for (const f of grid.features) f.properties.share = f.properties.count / biggest;
        map.getSource("fallback").setData(grid);
        renderLegend({}, null, CELL_NOTE);
        // Cells do not say which model counted them: warn whenever an untrained one exists.
        $("untrained-banner").hidden = untrainedModels().length === 0;
        setSummary(`${grid.total} detections in view (counted per cell)`);
      }
    },
  };
}

async function hasVectorTiles() {
  const response = await fetch("/api/v1/tiles/0/0/0.mvt");
  return response.status !== 501;
}

function bindSheet() {
  const sheet = $("filters");
  $("filters-toggle").addEventListener("click", () => {
    const open = sheet.classList.toggle("open");
    $("filters-toggle").setAttribute("aria-expanded", String(open));
  });
}

function start() {
  const page = $("map-page");
  const kinds = labelKinds();
  bindSheet();
  maplibregl.setWorkerUrl(absolute(page.dataset.workerUrl));
  const narrow = window.matchMedia("(max-width: 600px)").matches;
  let map;
  try {
    map = new maplibregl.Map({
      container: "map",
      style: baseStyle(page.dataset.basemapUrl),
      center: [0, 20],
      zoom: narrow ? 0.3 : 1.3,
      minZoom: 0,
      attributionControl: false,
      renderWorldCopies: true,
    });
  } catch (err) {
    setSummary(`The map needs WebGL, which this browser does not offer (${err.message})`);
    return;
  }
  // For automation and debugging: the page's map object.
  window.trashmapMap = map;
  map.addControl(new maplibregl.AttributionControl({ compact: true }),
    narrow ? "top-right" : "bottom-right");
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-left");
  map.addControl(new maplibregl.ScaleControl(), narrow ? "top-left" : "bottom-left");
  addOsmWhenReachable(map);

  let generation = 0;
  let view = null;
  async function refresh(filtersChanged) {
    const mine = ++generation;
    const q = filterParams();
    setSummary("Loading…");
    try {
      if (filtersChanged) view.applyFilters(q);
      await view.counts(q);
      if (mine !== generation) return;
      // Loaded once what the view asked for is on the canvas.
      const done = () => {
        if (mine === generation) document.body.dataset.loaded = String(mine);
      };
      map.once("idle", done);
      map.triggerRepaint();
    } catch (err) {
      if (mine === generation) setSummary(`Error: ${err.message}`);
    }
  }

  map.on("load", async () => {
    try {
      view = (await hasVectorTiles()) ? tileView(map, kinds) : geojsonView(map, kinds);
    } catch (err) {
      setSummary(`Error: ${err.message}`);
      return;
    }
    page.dataset.view = view.kind;
    map.on("moveend", () => refresh(false));
    for (const id of FILTER_IDS) $(id).addEventListener("change", () => refresh(true));
    refresh(true);
  });
  $("f-score").addEventListener("input", () => {
    $("f-score-value").textContent = Number($("f-score").value).toFixed(2);
  });
}

window.addEventListener("DOMContentLoaded", start);
