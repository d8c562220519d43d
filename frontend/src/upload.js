// Phone upload page: several photos by drag-and-drop, file picker or camera, one progress bar
// each; the browser's position is offered for photos without GPS; results are followed.
import exifr from "exifr/dist/lite.esm.mjs";
import "./pages.css";

const POLL_MS = 2000;
const POLL_LIMIT_MS = 15 * 60 * 1000;
const $ = (id) => document.getElementById(id);
let devicePosition = null;

function askPosition() {
  if (devicePosition) return devicePosition;
  devicePosition = new Promise((resolve) => {
    if (!navigator.geolocation) return resolve(null);
    navigator.geolocation.getCurrentPosition(
      (pos) => resolve({ lat: pos.coords.latitude, lon: pos.coords.longitude }),
      () => resolve(null), { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  });
  return devicePosition;
}

async function photoHasGps(file) {
  try {
    const gps = await exifr.gps(file);
    return Boolean(gps && Number.isFinite(gps.latitude) && Number.isFinite(gps.longitude)
      && !(gps.latitude === 0 && gps.longitude === 0));
  } catch {
    return false;  // unreadable metadata: the server decides
  }
}

function row(file) {
  const li = document.createElement("li");
  li.innerHTML = `<div class="name"></div><progress max="100" value="0"></progress>
    <div class="location"></div><div>status: <span class="status">waiting</span></div>
    <div class="detections"></div>`;
  li.querySelector(".name").textContent = file.name;
  $("uploads").prepend(li);
  return li;
}

function post(form, li) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/photos");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) li.querySelector("progress").value = (100 * e.loaded) / e.total;
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      resolve({ status: xhr.status, body });
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.send(form);
  });
}

function showLocation(li, location) {
  const el = li.querySelector(".location");
  if (!location) {
    el.className = "location none";
    el.textContent = "no location: kept and analysed, but not on the map";
    return;
  }
  const from = location.source === "client" ? "your device" : "the photo's GPS";
  el.className = "location found";
  el.textContent = `location ${location.lat.toFixed(5)}, ${location.lon.toFixed(5)} (from ${from})`;
}

async function follow(li, id) {
  const started = Date.now();
  while (Date.now() - started < POLL_LIMIT_MS) {
    const response = await fetch(`/api/v1/photos/${id}`);
    if (response.ok) {
      const photo = await response.json();
      li.querySelector(".status").textContent = photo.status;
      if (photo.status === "done") {
        const labels = {};
        for (const d of photo.detections) labels[d.label] = (labels[d.label] || 0) + 1;
        const parts = Object.entries(labels).map(([k, n]) => `${k} ×${n}`);
        li.querySelector(".detections").textContent =
          `${photo.detections.length} detections${parts.length ? ": " + parts.join(", ") : ""}`;
        return;
      }
      if (photo.status === "failed") {
        li.querySelector(".detections").textContent = photo.error || "detection failed";
        return;
      }
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function uploadOne(file) {
  const li = row(file);
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("use-position").checked && !(await photoHasGps(file))) {
    li.querySelector(".status").textContent = "asking for your position";
    const pos = await askPosition();
    if (pos) {
      form.append("lat", pos.lat.toFixed(6));
      form.append("lon", pos.lon.toFixed(6));
    }
  }
  li.querySelector(".status").textContent = "uploading";
  try {
    const { status, body } = await post(form, li);
    if (status >= 400) {
      li.querySelector(".status").textContent = "refused";
      li.querySelector(".detections").textContent = body.error ? body.error.message : `HTTP ${status}`;
      return;
    }
    li.querySelector("progress").value = 100;
    li.dataset.photoId = body.id;
    showLocation(li, body.location);
    li.querySelector(".status").textContent = body.status;
    await follow(li, body.id);
  } catch (err) {
    li.querySelector(".status").textContent = `failed: ${err.message}`;
  }
}

function start() {
  const zone = $("dropzone");
  const take = (files) => Array.from(files).forEach((f) => uploadOne(f));
  for (const id of ["pick", "camera"]) $(id).addEventListener("change", (e) => {
    take(e.target.files);
    e.target.value = "";
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    take(e.dataTransfer.files);
  });
}

window.addEventListener("DOMContentLoaded", start);
