// Review page: staff sign in with an API key (scope review, kept in localStorage, never in a
// URL), take photos from the review queue, correct the model's boxes (Annotorious: select,
// move, resize, draw; relabel and delete in the list) and save the full set.
import { createImageAnnotator } from "@annotorious/annotorious";
import "@annotorious/annotorious/annotorious.css";
import "./pages.css";
import "./review.css";

const KEY_STORAGE = "trashmap.review.key";
const $ = (id) => document.getElementById(id);
const LABELS = JSON.parse(document.querySelector("main.review").dataset.labels || "[]");

let queue = [];
let current = null; // {photo, annotator, scale}
let serial = 0;

function apiKey() {
  return localStorage.getItem(KEY_STORAGE);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {
      Authorization: `Bearer ${apiKey()}`,
      ...(options.body ? { "Content-Type": "application/json" } : {}),
    },
  });
  let body = null;
  try { body = await response.json(); } catch { /* no JSON body */ }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(text, kind = "") {
  const el = $("review-status");
  el.textContent = text;
  el.dataset.kind = kind;
}

function showSignedIn(signedIn) {
  $("signin").hidden = signedIn;
  $("workspace").hidden = !signedIn;
}

// --- boxes <-> Annotorious annotations ---------------------------------------------------

function newId() {
  serial += 1;
  return `box-${Date.now()}-${serial}`;
}

function toAnnotation(label, bbox, scale) {
  const id = newId();
  const [x1, y1, x2, y2] = bbox.map((v) => v / scale);
  return {
    id,
    bodies: [{ id: `${id}-label`, annotation: id, purpose: "tagging", value: label }],
    target: {
      annotation: id,
      selector: {
        type: "RECTANGLE",
        geometry: {
          x: x1, y: y1, w: x2 - x1, h: y2 - y1,
          bounds: { minX: x1, minY: y1, maxX: x2, maxY: y2 },
        },
      },
    },
  };
}

function labelOf(annotation) {
  const body = (annotation.bodies || []).find((b) => b.purpose === "tagging");
  return body ? body.value : null;
}

function withLabel(annotation, label) {
  const others = (annotation.bodies || []).filter((b) => b.purpose !== "tagging");
  return {
    ...annotation,
    bodies: [...others, { id: `${annotation.id}-label`, annotation: annotation.id, purpose: "tagging", value: label }],
  };
}

function toBox(annotation, photo, scale) {
  const { bounds } = annotation.target.selector.geometry;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const round = (v) => Math.round(v * 100) / 100;
  return {
    label: labelOf(annotation),
    bbox: [
      round(clamp(bounds.minX * scale, photo.width)),
      round(clamp(bounds.minY * scale, photo.height)),
      round(clamp(bounds.maxX * scale, photo.width)),
      round(clamp(bounds.maxY * scale, photo.height)),
    ],
  };
}

// --- the box list --------------------------------------------------------------------------

function labelSelect(value) {
  const select = document.createElement("select");
  const names = LABELS.includes(value) || !value ? LABELS : [value, ...LABELS];
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
  select.value = value || "";
  return select;
}

function renderBoxes() {
  const list = $("boxes");
  list.replaceChildren();
  if (!current) return;
  const selected = new Set(current.annotator.getSelected().map((a) => a.id));
  current.annotator.getAnnotations().forEach((annotation, index) => {
    const li = document.createElement("li");
    li.dataset.id = annotation.id;
    li.className = selected.has(annotation.id) ? "selected" : "";
    const number = document.createElement("span");
    number.textContent = `${index + 1}.`;
    const select = labelSelect(labelOf(annotation));
    select.className = "box-label";
    select.setAttribute("aria-label", `label of box ${index + 1}`);
    select.addEventListener("change", () => {
      const latest = current.annotator.getAnnotationById(annotation.id) || annotation;
      current.annotator.updateAnnotation(withLabel(latest, select.value));
      renderBoxes();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "box-delete";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => {
      current.annotator.removeAnnotation(annotation.id);
      renderBoxes();
    });
    li.addEventListener("click", (event) => {
      if (event.target === li || event.target === number) current.annotator.setSelected(annotation.id);
    });
    li.append(number, select, remove);
    list.append(li);
  });
  $("box-count").textContent = String(current.annotator.getAnnotations().length);
}

// --- the queue and the photo ----------------------------------------------------------------

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  for (const photo of queue) {
    const li = document.createElement("li");
    li.dataset.id = photo.id;
    li.className = current && current.photo.id === photo.id ? "current" : "";
    li.textContent = `#${photo.id} · ${photo.detections.length} boxes · priority ${photo.priority.priority.toFixed(2)}`;
    li.addEventListener("click", () => openPhoto(photo));
    list.append(li);
  }
}

async function loadQueue() {
  setStatus("loading the queue…");
  try {
    const body = await api("/api/v1/review/queue?limit=50");
    queue = body.photos;
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      localStorage.removeItem(KEY_STORAGE);
      showSignedIn(false);
      $("signin-error").textContent = `Sign-in failed: ${error.message}`;
      return;
    }
    setStatus(`could not load the queue: ${error.message}`, "error");
    return;
  }
  showSignedIn(true);
  renderQueue();
  if (queue.length) {
    await openPhoto(queue[0]);
  } else {
    closePhoto();
    setStatus("the queue is empty: every finished photo is reviewed", "done");
  }
}

function closePhoto() {
  if (current) current.annotator.destroy();
  current = null;
  $("stage").replaceChildren();
  renderBoxes();
}

function openPhoto(photo) {
  closePhoto();
  const img = document.createElement("img");
  img.id = "photo";
  img.alt = `photo ${photo.id}`;
  img.src = `/api/v1/photos/${photo.id}/image`;
  $("stage").append(img);
  $("photo-title").textContent = `Photo #${photo.id} (${photo.width} × ${photo.height})`;
  return new Promise((resolve) => {
    img.addEventListener("load", () => {
      const annotator = createImageAnnotator(img, { drawingEnabled: true, drawingMode: "drag" });
      const scale = photo.width / img.naturalWidth;
      current = { photo, annotator, scale };
      annotator.setAnnotations(photo.detections.map((d) => toAnnotation(d.label, d.bbox, scale)));
      annotator.on("createAnnotation", (annotation) => {
        if (!labelOf(annotation)) annotator.updateAnnotation(withLabel(annotation, $("new-label").value));
        renderBoxes();
      });
      annotator.on("updateAnnotation", renderBoxes);
      annotator.on("deleteAnnotation", renderBoxes);
      annotator.on("selectionChanged", renderBoxes);
      renderBoxes();
      renderQueue();
      document.body.dataset.photo = String(photo.id);
      setStatus(`photo #${photo.id}: ${photo.detections.length} suggested boxes`);
      resolve();
    }, { once: true });
    img.addEventListener("error", () => {
      setStatus(`photo #${photo.id}: the image did not load`, "error");
      resolve();
    }, { once: true });
  });
}

async function save(noLitter = false) {
  if (!current) return false;
  const { photo, annotator, scale } = current;
  const annotations = noLitter ? [] : annotator.getAnnotations().map((a) => toBox(a, photo, scale));
  const body = { annotations, no_litter: noLitter || annotations.length === 0 };
  try {
    const stored = await api(`/api/v1/photos/${photo.id}/annotations`, {
      method: "PUT",
      body: JSON.stringify(body),
    });
    setStatus(`photo #${photo.id} saved: ${stored.no_litter ? "no litter" : `${stored.annotations.length} boxes`}`, "saved");
    document.body.dataset.saved = String(photo.id);
    return true;
  } catch (error) {
    setStatus(`photo #${photo.id} not saved: ${error.message}`, "error");
    return false;
  }
}

async function next() {
  if (!current) return;
  const index = queue.findIndex((p) => p.id === current.photo.id);
  const following = queue[index + 1];
  if (following) await openPhoto(following);
  else await loadQueue();
}

async function saveAndNext(noLitter = false) {
  const id = current && current.photo.id;
  if (await save(noLitter)) {
    const index = queue.findIndex((p) => p.id === id);
    const following = queue[index + 1];
    queue = queue.filter((p) => p.id !== id);
    if (following) await openPhoto(following);
    else await loadQueue();
  }
}

function deleteSelected() {
  if (!current) return;
  for (const annotation of current.annotator.getSelected()) current.annotator.removeAnnotation(annotation.id);
  renderBoxes();
}

function undo() {
  if (current && current.annotator.canUndo()) current.annotator.undo();
  renderBoxes();
}

// --- wiring ------------------------------------------------------------------------------

function fillLabels() {
  const select = $("new-label");
  for (const name of LABELS) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
}

function onKey(event) {
  const tag = event.target.tagName;
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || !current) return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === "z") {
    event.preventDefault();
    undo();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {
    a: () => saveAndNext(false), // accept every box as shown, save, next photo
    s: () => save(false),
    x: () => saveAndNext(true), // no litter
    n: next,
    arrowright: next,
    u: undo,
    delete: deleteSelected,
    backspace: deleteSelected,
  };
  if (actions[key]) {
    event.preventDefault();
    actions[key]();
  }
}

function init() {
  fillLabels();
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("api-key").value.trim();
    if (!token) return;
    localStorage.setItem(KEY_STORAGE, token);
    $("api-key").value = "";
    $("signin-error").textContent = "";
    loadQueue();
  });
  $("signout").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    closePhoto();
    showSignedIn(false);
  });
  $("accept-all").addEventListener("click", () => saveAndNext(false));
  $("save").addEventListener("click", () => save(false));
  $("no-litter").addEventListener("click", () => saveAndNext(true));
  $("next").addEventListener("click", next);
  $("undo").addEventListener("click", undo);
  $("delete-selected").addEventListener("click", deleteSelected);
  document.addEventListener("keydown", onKey);
  if (apiKey()) loadQueue();
  else showSignedIn(false);
}

init();
