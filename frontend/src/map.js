// The debris map: detections (markers, or counted cells when there are many) with filters,
// a legend and photo popups. Works offline; adds OpenStreetMap when its tiles load.
import L from "leaflet";
import "leaflet/dist/leaflet.css";
import "./pages.css";

const MAX_MARKERS = 2000;
// Subdomain form, which the pages' Content-Security-Policy allows (web/security.py).
const OSM_URL = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png";
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
  "#9a6324", "#469990", "#800000", "#808000", "#000075", "#bfef45", "#fabed4", "#dcbeff"];

const colorOf = (name) => {
  let h = 0;
  for (const ch of name || "?") h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
};

const $ = (id) => document.getElementById(id);

// name:version of untrained (random) detectors, from the page; their detections get a banner.
const untrainedModels = () => new Set(JSON.parse($("untrained-banner").dataset.models || "[]"));

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

function boxesHtml(photo, selected) {
  const scale = 280 / photo.width;
  return photo.detections.map((d, i) => {
    const [x1, y1, x2, y2] = d.bbox.map((v) => v * scale);
    const cls = selected && d.label === selected.label && Math.abs(d.score - selected.score) < 1e-4
      ? "box selected" : "box";
    return `<div class="${cls}" data-box="${i}" title="${d.label} ${d.score.toFixed(2)}"
      style="left:${x1}px;top:${y1}px;width:${x2 - x1}px;height:${y2 - y1}px"></div>`;
  }).join("");
}

// The popup belongs to the map, not the marker: panning it into view reloads the markers.
async function openPopup(map, latlng, props) {
  const popup = L.popup({ maxWidth: 300 }).setLatLng(latlng).setContent("Loading…").openOn(map);
  try {
    const photo = await getJson(`/api/v1/photos/${props.photo_id}`);
    const escape = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
    popup.setContent(`
      <div class="popup-photo"><img alt="photo ${photo.id}"
        src="/api/v1/photos/${photo.id}/image?max_size=512">${boxesHtml(photo, props)}</div>
      <div class="popup-meta"><b>${escape(props.label)}</b> (${escape(props.supercategory || "?")}),
        score ${props.score.toFixed(2)}<br>photo ${photo.id} · ${escape(photo.status)} ·
        ${photo.detections.length} detections${photo.model && photo.model.untrained
          ? " · <b>UNTRAINED model (random boxes)</b>" : ""}<br>
        ${escape(props.taken_at || "date unknown")}</div>`);
  } catch (err) {
    popup.setContent(`Could not load the photo: ${err.message}`);
  }
}

function renderLegend(counts, mode) {
  const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([name, n]) =>
    `<div class="legend-row"><span class="swatch" style="background:${colorOf(name)}"></span>
      ${name} <span style="margin-left:auto">${n}</span></div>`);
  $("legend").innerHTML = mode === "cells"
    ? '<div class="legend-row"><span class="swatch" style="background:#0f4c5c"></span>' +
      "cell: circle area ∝ detections</div>"
    : rows.join("") || "<i>nothing here</i>";
}

function start() {
  const map = L.map("map", { worldCopyJump: true, minZoom: 1 }).setView([20, 0], 2);
  L.control.scale().addTo(map);
  const layer = L.layerGroup().addTo(map);
  const untrained = untrainedModels();
  let generation = 0;

  const probe = new Image();
  probe.onload = () => {
    L.tileLayer(OSM_URL, { maxZoom: 19, attribution: "© OpenStreetMap contributors" })
      .addTo(map).bringToBack();
    document.body.dataset.basemap = "osm";
  };
  probe.src = OSM_URL.replace("{s}", "a").replace("{z}/{x}/{y}", "0/0/0");

  async function refresh() {
    const mine = ++generation;
    const q = filterParams();
    q.set("bbox", viewBbox(map));
    $("summary").textContent = "Loading…";
    try {
      const page = await getJson(`/api/v1/detections?${q}&limit=${MAX_MARKERS}`);
      if (mine !== generation) return;
      layer.clearLayers();
      if (page.numberMatched <= MAX_MARKERS) {
        const counts = {};
        for (const f of page.features) {
          const p = f.properties;
          const name = p.supercategory || p.label;
          counts[name] = (counts[name] || 0) + 1;
          const [lon, lat] = f.geometry.coordinates;
          const marker = L.circleMarker([lat, lon], {
            radius: 6, color: "#222", weight: 1, fillColor: colorOf(name), fillOpacity: 0.85,
            className: "tm-detection",
          }).addTo(layer);
          marker.on("click", () => openPopup(map, [lat, lon], p));
        }
        renderLegend(counts, "markers");
        $("untrained-banner").hidden =
          !page.features.some((f) => untrained.has(f.properties.model_version));
        $("summary").textContent = `${page.numberMatched} detections in view`;
      } else {
        q.set("zoom", String(map.getZoom()));
        const grid = await getJson(`/api/v1/grid?${q}`);
        if (mine !== generation) return;
        const biggest = Math.max(...grid.features.map((f) => f.properties.count));
        for (const f of grid.features) {
          const [lon, lat] = f.geometry.coordinates;
          const n = f.properties.count;
          L.circleMarker([lat, lon], {
            radius: 4 + 18 * Math.sqrt(n / biggest), color: "#0f4c5c", weight: 1,
            fillColor: "#0f4c5c", fillOpacity: 0.45, className: "tm-cell",
          }).bindTooltip(`${n} detections`).addTo(layer);
        }
        renderLegend({}, "cells");
        // Cells do not say which model counted them: warn whenever an untrained one exists.
        $("untrained-banner").hidden = untrained.size === 0;
        $("summary").textContent = `${grid.total} detections in view (counted per cell)`;
      }
      document.body.dataset.loaded = String(mine);
    } catch (err) {
      $("summary").textContent = `Error: ${err.message}`;
    }
  }

  map.on("moveend", refresh);
  for (const id of ["f-label", "f-supercategory", "f-score", "f-since", "f-until"]) {
    $(id).addEventListener("change", refresh);
  }
  $("f-score").addEventListener("input", () => {
    $("f-score-value").textContent = Number($("f-score").value).toFixed(2);
  });
  refresh();
}

window.addEventListener("DOMContentLoaded", start);
