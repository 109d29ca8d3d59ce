// cnnlab serve: the page. Draw (or upload) -> POST the picture to /api/runs/{id}/predict -> draw the
// answer. One request at a time: while one is out, the newest picture waits and goes next, so the
// page never queues stale work however fast the pen moves.
"use strict";

const $ = (id) => document.getElementById(id);
const GAP = [0xc9, 0xdc, 0xec]; // between mosaic tiles: neither black, white nor gray (as viz/common.py)

const state = {
  runs: [], run: 0, info: null,
  source: null,          // {kind: "drawing" | "upload", blob: () => Promise<Blob>, url?, name?}
  busy: false, again: false,
  answer: null, layerKey: "",
};

// ------------------------------------------------------------------ helpers
function bytes(payload) {
  const raw = atob(payload.data);
  const out = new Uint8ClampedArray(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const pct = (p) => (100 * p).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1) + "%";
const num = (v) => Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2);

// A gray picture (values 0-255) on a canvas at its own size; CSS scales it up, pixelated.
function drawGray(canvas, pixels, width, height, colour = (v) => [v, v, v]) {
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = colour(pixels[i], i);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// n tiles of h x w (one after the other in `pixels`) in rows of `cols`, a 1-pixel gap between them.
function drawMosaic(canvas, pixels, n, h, w, cols) {
  const rows = Math.ceil(n / cols);
  const W = cols * (w + 1) - 1, H = rows * (h + 1) - 1;
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(W, H);
  for (let i = 0; i < W * H; i++) {
    img.data[4 * i] = GAP[0]; img.data[4 * i + 1] = GAP[1]; img.data[4 * i + 2] = GAP[2]; img.data[4 * i + 3] = 255;
  }
  for (let t = 0; t < n; t++) {
    const oy = Math.floor(t / cols) * (h + 1), ox = (t % cols) * (w + 1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = pixels[t * h * w + y * w + x], o = 4 * ((oy + y) * W + ox + x);
        img.data[o] = v; img.data[o + 1] = v; img.data[o + 2] = v;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.cols = cols; canvas.dataset.h = h; canvas.dataset.w = w; canvas.dataset.n = n;
}

// The same number of columns in every layer, so map k sits in the same place from layer to layer.
const columnsFor = (n) => Math.min(n, 8);

// ------------------------------------------------------------------ messages
function showError(text) {
  const m = $("message");
  m.textContent = text; m.hidden = false;
  $("answer-card").classList.add("stale");
}
function clearError() {
  $("message").hidden = true;
  $("answer-card").classList.remove("stale");
}

// ------------------------------------------------------------------ the runs
async function getJSON(url) {
  const r = await fetch(url);
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || `${url}: ${r.status}`);
  return j;
}

async function loadRuns() {
  state.runs = await getJSON("/api/runs");
  const nav = $("runs");
  const names = state.runs.map((r) => r.name);
  nav.replaceChildren(...state.runs.map((r) => {
    const acc = r.test_accuracy == null ? "" : `${(100 * r.test_accuracy).toFixed(2)}%`;
    const twice = names.indexOf(r.name) !== names.lastIndexOf(r.name); // then the folders tell them apart
    const b = el("button", {type: "button", "data-run": r.id, title: `run ${r.id}: ${r.folder || r.name}, ${r.architecture}`},
                 [twice && r.folder ? r.folder : r.name, el("small", {text: acc})]);
    b.addEventListener("click", () => selectRun(r.id));
    return b;
  }));
  await selectRun(0);
}

async function selectRun(id) {
  state.run = id;
  for (const b of $("runs").children) b.setAttribute("aria-pressed", String(Number(b.dataset.run) === id));
  state.info = await getJSON(`/api/runs/${id}`);
  showNetwork(state.info);
  drawBars(null);
  if (state.source) refresh();
}

function showNetwork(info) {
  const folder = info.folder && info.folder !== info.name ? ` (${info.folder})` : "";
  $("net-desc").textContent = `${info.name}${folder}: ${info.description}`;
  const acc = $("accuracy");
  acc.replaceChildren();
  if (info.test_accuracy == null) acc.textContent = "test accuracy: not measured";
  else acc.append("test accuracy ", el("strong", {text: `${(100 * info.test_accuracy).toFixed(2)}%`}),
                  ` on the ${info.dataset} test set` + (info.best_epoch ? ` (epoch ${info.best_epoch})` : ""));
  const head = el("tr", {}, [el("th", {text: "#"}), el("th", {text: "layer"}), el("th", {text: "output"}),
                             el("th", {class: "num", text: "parameters"})]);
  const rows = info.layers.map((l) => el("tr", {}, [
    el("td", {text: l.index}), el("td", {}, [el("code", {text: l.layer})]),
    el("td", {text: l.shape.join("×")}), el("td", {class: "num", text: l.parameters.toLocaleString("en")})]));
  const total = el("tr", {}, [el("td"), el("th", {text: "total"}), el("td"),
                              el("th", {class: "num", text: info.parameters.toLocaleString("en")})]);
  $("net-table").replaceChildren(head, ...rows, total);
  $("shared").textContent = info.shared_weights ? info.shared_weights.replace(/^shared weights/, "Shared weights") : "";
  const f = info.filters, canvas = $("filters");
  if (f) {
    drawMosaic(canvas, bytes(f.maps), f.count, f.maps.height, f.maps.width, Math.min(f.count, 8));
    canvas.style.maxWidth = `${Math.min(520, canvas.width * 14)}px`;
    $("filters-caption").textContent =
      `${f.count} kernels of ${f.maps.height}×${f.maps.width}, one per feature map of layer ${f.layer} ` +
      `(${f.name})${f.channels > 1 ? `, input channel 0 of ${f.channels}` : ""}. Each is slid over the whole ` +
      `picture: every pixel of its map uses the same ${f.maps.height * f.maps.width} weights. ` +
      `Gray = 0, white = +${num(f.vmax)}, black = −${num(f.vmax)}.`;
  }
  $("filters-card").hidden = !f;
}

// ------------------------------------------------------------------ asking the server
function refresh() { state.again = true; pump(); }

async function pump() {
  if (state.busy || !state.again || !state.source) return;
  state.again = false; state.busy = true;
  const run = state.run, source = state.source;
  try {
    const body = await source.blob();
    const r = await fetch(`/api/runs/${run}/predict`, {method: "POST", body});
    let j;
    try { j = await r.json(); } catch { j = {error: `the server answered ${r.status} ${r.statusText}`}; }
    if (run !== state.run || source !== state.source) state.again = true; // changed meanwhile: ask again
    else if (!state.info || state.info.id !== run) {} // its summary is still loading; selectRun asks again
    else if (!r.ok) showError(j.error || `the server answered ${r.status}`);
    else { clearError(); show(j); }
  } catch (e) {
    showError("no answer from the server: is `cnnlab serve` still running?");
  } finally {
    state.busy = false;
    if (state.again) pump();
  }
}

// ------------------------------------------------------------------ showing an answer
function drawBars(answer) {
  const classes = state.info ? state.info.classes : [];
  const items = classes.map((name, i) => {
    const p = answer ? answer.probabilities[i] : 0;
    const bar = el("i");
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    return el("li", {class: answer && i === answer.class ? "top" : ""},
              [el("span", {text: name}), el("span", {class: "bar"}, [bar]), el("span", {class: "pct", text: answer ? pct(p) : ""})]);
  });
  $("bars").replaceChildren(...items);
  if (!answer) {
    $("prediction").textContent = "?";
    $("confidence").textContent = state.source ? "" : "draw something";
    $("timing").textContent = "";
  }
}

function show(a) {
  state.answer = a;
  $("prediction").textContent = a.name;
  $("confidence").textContent = `${pct(a.probability)} sure`;
  drawBars(a);
  $("timing").textContent = `computed by cnnlab in ${a.ms.toFixed(1)} ms on the server`;

  const input = bytes(a.input);
  for (const id of ["input", "probe-input"]) drawGray($(id), input, 28, 28);
  const g = a.gradcam;
  if (g) {
    const heat = bytes(g.map);
    drawGray($("gradcam"), input, 28, 28, (value, i) => {
      const v = value * 0.55, h = heat[i] / 255; // the input, dimmed, under a red-to-yellow heat
      return [v + (255 - v) * h, v + (200 - v) * h * h, v * (1 - h)];
    });
    $("gradcam-caption").textContent =
      `Grad-CAM for “${a.name}”: where the units of layer ${g.layer} (${g.name}, ${g.size.join("×")}) add to its score`;
  } else {
    drawGray($("gradcam"), input, 28, 28);
    $("gradcam-caption").textContent = "Grad-CAM: no unit of the last conv layer adds to this class's score";
  }
  showSteps(a);
  showLayers(a);
}

function showSteps(a) {
  const figs = [];
  if (state.source && state.source.kind === "upload") {
    figs.push(el("figure", {}, [el("img", {src: state.source.url, alt: "your photo"}),
                                el("figcaption", {text: ["your photo", ...a.notes].join("; ")})]));
  }
  for (const s of a.steps) {
    const c = el("canvas");
    drawGray(c, bytes(s), s.width, s.height);
    c.title = `${s.width}×${s.height}`;
    figs.push(el("figure", {}, [c, el("figcaption", {text: s.caption})]));
  }
  $("steps").replaceChildren(...figs);
}

const KIND_TEXT = {
  conv: (l, prev) => `${l.shape[0]} maps: each is one shared kernel slid over ${prev}, every position a neuron`,
  pool: (l) => `each map shrunk to ${l.shape[1]}×${l.shape[2]}: one value per window keeps whether the feature occurred, not exactly where`,
  activation: (l) => `${l.name.replace("()", "")} applied to every value: the layer's output`,
};

function showLayers(a) {
  const key = `${a.run}:` + a.layers.map((l) => l.index).join(",");
  const box = $("layers");
  if (key !== state.layerKey) { // another network: new panels
    state.layerKey = key;
    box.replaceChildren(...a.layers.map((l, k) => {
      const prev = k === 0 ? "the input" : "the maps before";
      const before = k === 0 ? 0 : a.layers[k - 1].index + 1; // layers between two panels, not drawn
      const all = state.info && state.info.id === a.run ? state.info.layers : [];
      const hidden = l.path !== undefined ? [] : all.slice(before, l.index).map((x) => x.layer.split("(")[0]);
      const note = hidden.length ? ` (after ${hidden.join(", ")}, not drawn)` : "";
      const canvas = el("canvas", {class: "mosaic", "data-layer": l.index, "aria-label": `feature maps of layer ${l.index}`});
      canvas.addEventListener("pointermove", (e) => probe(e, canvas, k));
      canvas.addEventListener("pointerdown", (e) => probe(e, canvas, k));
      canvas.addEventListener("pointerleave", () => clearProbe());
      return el("div", {class: `layer ${l.kind}`}, [
        el("h4", {}, [`layer ${l.path ?? l.index}: ${l.name.replace("->", "→")} `, el("span", {text: `→ ${l.shape.join("×")}`})]),
        el("p", {text: KIND_TEXT[l.kind](l, prev) + note}), canvas,
        el("p", {class: "scale"})]);
    }));
  }
  a.layers.forEach((l, k) => {
    const panel = box.children[k], canvas = panel.querySelector("canvas");
    drawMosaic(canvas, bytes(l.maps), l.shown, l.shape[1], l.shape[2], columnsFor(l.shown));
    panel.querySelector(".scale").textContent =
      `black = ${num(l.lo)}, white = ${num(l.hi)}` + (l.shown < l.shape[0] ? `; first ${l.shown} of ${l.shape[0]} maps` : "");
  });
}

// ------------------------------------------------------------------ receptive fields
function clearProbe() {
  for (const c of document.querySelectorAll("canvas.field")) c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

function probe(e, canvas, k) {
  const l = state.answer && state.answer.layers[k];
  if (!l || !l.field) return;
  const r = canvas.getBoundingClientRect();
  const px = Math.floor((e.clientX - r.left) / r.width * canvas.width);
  const py = Math.floor((e.clientY - r.top) / r.height * canvas.height);
  const h = +canvas.dataset.h, w = +canvas.dataset.w, cols = +canvas.dataset.cols;
  const col = Math.floor(px / (w + 1)), row = Math.floor(py / (h + 1));
  const x = px - col * (w + 1), y = py - row * (h + 1), map = row * cols + col;
  if (x >= w || y >= h || col >= cols || map >= +canvas.dataset.n) return; // a gap
  const f = l.field;
  const span = (a, u) => {
    const c = f.start[a] + u * f.jump[a], half = (f.size[a] - 1) / 2;
    return [Math.max(0, Math.ceil(c - half)), Math.min(27, Math.floor(c + half))];
  };
  const [y0, y1] = span(0, y), [x0, x1] = span(1, x);
  for (const c of document.querySelectorAll("canvas.field")) {
    const ctx = c.getContext("2d"), s = c.width / 28;
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.fillStyle = "rgba(37, 99, 201, 0.28)";
    ctx.fillRect(x0 * s, y0 * s, (x1 - x0 + 1) * s, (y1 - y0 + 1) * s);
    ctx.strokeStyle = "#3b82f6"; ctx.lineWidth = 2.5;
    ctx.strokeRect(x0 * s + 1, y0 * s + 1, (x1 - x0 + 1) * s - 2, (y1 - y0 + 1) * s - 2);
  }
  const v = l.lo + bytes(l.maps)[map * h * w + y * w + x] / 255 * (l.hi - l.lo);
  $("probe-text").textContent =
    `layer ${l.index}, map ${map}, unit (${y}, ${x}) = ${num(v)}: computed from input rows ${y0}–${y1}, ` +
    `columns ${x0}–${x1} (a ${f.size[0]}×${f.size[1]} receptive field, clipped to the picture)`;
}

// ------------------------------------------------------------------ drawing
const pad = $("pad"), ctx = pad.getContext("2d");
let drawing = false, last = null;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) / r.width * pad.width, (e.clientY - r.top) / r.height * pad.height];
}

function useDrawing() {
  if (!state.source || state.source.kind !== "drawing") {
    if (state.source && state.source.url) URL.revokeObjectURL(state.source.url);
    if (state.source) clearPad(); // after a photo: a fresh page
    state.source = {kind: "drawing", blob: () => new Promise((ok) => pad.toBlob(ok, "image/png"))};
  }
  $("pad-hint").hidden = true;
}

function strokeTo(p) {
  ctx.strokeStyle = "#111"; ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
  last = p;
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  useDrawing();
  drawing = true; last = padPoint(e);
  ctx.fillStyle = "#111"; // a dot: a stroke of length 0 draws nothing
  ctx.beginPath(); ctx.arc(last[0], last[1], 10, 0, 2 * Math.PI); ctx.fill();
  refresh();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) strokeTo(padPoint(ev));
  refresh();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (drawing) { drawing = false; refresh(); } });
}

$("clear").addEventListener("click", () => {
  clearPad();
  if (state.source && state.source.url) URL.revokeObjectURL(state.source.url);
  state.source = null; state.answer = null;
  $("pad-hint").hidden = false; $("pad-hint").textContent = "draw here";
  clearError(); drawBars(null); clearProbe();
  $("steps").replaceChildren();
});

// ------------------------------------------------------------------ photos
function usePicture(file) {
  if (!file) return;
  if (state.source && state.source.url) URL.revokeObjectURL(state.source.url);
  state.source = {kind: "upload", blob: () => Promise.resolve(file), url: URL.createObjectURL(file), name: file.name};
  clearPad();
  $("pad-hint").hidden = false; $("pad-hint").textContent = "showing your picture; draw here to draw instead";
  refresh();
}

$("file").addEventListener("change", (e) => { usePicture(e.target.files[0]); e.target.value = ""; });
const wrap = $("pad-wrap");
wrap.addEventListener("dragover", (e) => { e.preventDefault(); wrap.classList.add("dragging"); });
wrap.addEventListener("dragleave", () => wrap.classList.remove("dragging"));
wrap.addEventListener("drop", (e) => {
  e.preventDefault(); wrap.classList.remove("dragging");
  usePicture(e.dataTransfer.files[0]);
});

clearPad();
loadRuns().catch((e) => showError(`cannot load the runs: ${e.message}`));
