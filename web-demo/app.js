// The demo page: draw a digit, see kiln-wasm's top guesses, or drop any .onnx file to run that instead.
// Plain ES modules, no build step. kiln-wasm is imported from ../wasm/pkg/ (the repo layout, served as
// is by scripts/serve.py), dynamically so that a missing build gives a message instead of a blank page.
// `?model=URL` opens another model at start (the tests use it); the shipped one is model/digits.onnx.
import { strokesToPixels, inputTransform, toModelInput, GRID, MAX_VALUE } from "./preprocess.js";
import { readOnnxInfo, labelsFromMetadata } from "./onnx-metadata.js";
import { setupTeach } from "./teach.js";
import { setupDrift } from "./drift.js";

const KILN_URL = new URL("../wasm/pkg/index.js", import.meta.url).href;
const params = new URLSearchParams(location.search);
const MODEL_URL = params.get("model") || "model/digits.onnx";
const SAMPLES_URL = params.get("samples") || "model/digits.json";
// The checkpoint "teach it" fine-tunes: the shipped model's, unless another model was asked for.
const CHECKPOINT_URL = params.get("checkpoint") || (params.get("model") ? null : "model/digits.kiln");
const PEN_WIDTH = 18; // on-screen only: preprocessing re-draws the strokes at a fixed width

const $ = (id) => document.getElementById(id);
const pad = $("pad"), ctx = pad.getContext("2d");
const seen = $("seen"), seenCtx = seen.getContext("2d");

let kiln = null; // the kiln-wasm module
let current = null; // the open model and what the page knows about it
let shippedBytes = null; // the default model's bytes, to go back to after trying another file
let samples = []; // [{pixels, label}] test digits shipped next to the model
let replay = []; // [{pixels, label}] training digits "teach it" rehearses
let teach = null; // the teach panel
let drift = null; // the drift meter
let sampleIndex = 0;
let strokes = []; // [[x, y], ...] per stroke, in CSS pixels of the pad
let drawing = false;
let shownSample = null; // the test digit on the pad, if any, instead of strokes
let firstPredictionAt = null;

// ---- small DOM helpers ------------------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}
const formatBytes = (n) => (n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1024 ** 2).toFixed(2)} MB`);
const formatMs = (ms) => (ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 1 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(3)} ms`);
const formatDims = (dims) => `[${dims.map((d, i) => (d === null || d === undefined ? (i === 0 ? "N" : "?") : d)).join(", ")}]`;
const status = (text) => { $("status").textContent = text; };

function showError(headline, detail) {
  const box = $("error");
  box.replaceChildren(el("strong", {}, headline), el("span", { className: "detail" }, detail));
  box.hidden = false;
}
const hideError = () => { $("error").hidden = true; };

// ---- the model --------------------------------------------------------------------------------
// A model can be driven by the pad when it takes one float32 tensor of 64 values per image
// ([N, 1, 8, 8], [N, 8, 8] or [N, 64]); anything else is described and can be run on zeros.
function padDims(model) {
  if (model.inputs.length !== 1) return null;
  const { dims, type } = model.inputs[0];
  if (type && type !== "float32") return null;
  const runDims = dims.map((d) => d ?? 1);
  const perImage = runDims.slice(1).reduce((a, b) => a * b, 1);
  return dims.length >= 2 && runDims[0] === 1 && perImage === GRID * GRID ? runDims : null;
}

async function openModel(bytes, name, { loadStart = performance.now(), isShipped = false, taught = false } = {}) {
  hideError();
  if (!bytes.length) throw new Error("the file is empty");
  const model = await kiln.loadModel(bytes);
  const loadMs = performance.now() - loadStart;
  // kiln-wasm's model gives inputs, outputs, labels and metadata; the producer and opsets shown in
  // the description come from the file itself.
  let info = { producer: "", opsets: [], metadata: {} };
  try { info = readOnnxInfo(bytes); } catch { /* the engine accepted it; extras are optional */ }
  const metadata = model.metadata ?? info.metadata;
  let transform;
  try {
    transform = inputTransform(metadata);
  } catch (e) {
    model.free();
    throw e;
  }
  if (current) current.model.free();
  current = {
    model, name, size: bytes.length, loadMs, info, metadata, transform, isShipped, taught,
    labels: model.labels ?? labelsFromMetadata(metadata),
    dims: padDims(model),
  };
  renderModel();
  drift?.open(model, { taught });
  teach?.refresh();
  return current;
}

function renderModel() {
  const m = current;
  $("model-name").textContent = m.isShipped ? "shipped with the demo" : m.taught ? "taught in this tab" : "your file";
  $("stat-size").textContent = formatBytes(m.size);
  $("stat-load").textContent = formatMs(m.loadMs);
  $("stat-latency").textContent = "–";
  const rows = [["File", m.name], ["Size", m.size < 1024 ? formatBytes(m.size) : `${formatBytes(m.size)} (${m.size.toLocaleString("en")} bytes)`]];
  if (m.info.producer) rows.push(["Producer", m.info.producer]);
  rows.push(["Engine", m.model.engine === "kiln" ? "kiln's own (the ops that trained it)" : "tract (kiln's engine declined this file)"]);
  if (m.info.opsets.length) rows.push(["Opsets", m.info.opsets.map((o) => `${o.domain || "ai.onnx"} ${o.version}`).join(", ")]);
  if (m.labels) rows.push(["Labels", m.labels.length > 12 ? `${m.labels.slice(0, 12).join(", ")} … (${m.labels.length})` : m.labels.join(", ")]);
  if (m.dims) {
    const t = m.transform;
    rows.push(["Preprocessing", t.fromModel ? `ink 0–16 × ${t.scale} + ${t.offset} (from the model's metadata)` : "ink 0–16 as is (no kiln.input_scale in the metadata)"]);
  }
  const stats = m.metadata["kiln.drift"];
  if (stats) rows.push(["Training statistics", `${formatBytes(stats.length)} (kiln.drift): what the drift meter compares with`]);
  const table = (pairs) => el("table", {}, ...pairs.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  const io = (list) => el("table", { className: "io" }, ...list.map((t) => el("tr", {}, el("td", {}, t.name), el("td", { className: "mono" }, formatDims(t.dims)), el("td", {}, t.type ?? ""))));
  const other = Object.entries(m.metadata).filter(([k]) => !["kiln.labels", "kiln.input_scale", "kiln.input_offset", "kiln.drift"].includes(k));
  $("model-info").replaceChildren(
    table(rows),
    el("h3", {}, "Inputs"), io(m.model.inputs),
    el("h3", {}, "Outputs"), io(m.model.outputs),
    ...(other.length ? [el("h3", {}, "Metadata"), table(other)] : []),
  );
  $("back").hidden = m.isShipped || !shippedBytes;
  $("try-zeros").hidden = !!m.dims;
  $("run-output").hidden = true;
  $("sample").disabled = !m.dims || !samples.length;
  pad.classList.toggle("disabled", !m.dims);
  clearPad();
  if (!m.dims) {
    note(`This model's input ${formatDims(m.model.inputs[0]?.dims ?? [])} isn't one 8×8 image, so the pad can't drive it. Try “Run once with zeros”.`);
    $("guesses").replaceChildren(el("li", { className: "empty" }, "No guesses: this model doesn't take a drawing."));
    $("guess-hint").textContent = "";
  }
}

// ---- predicting -------------------------------------------------------------------------------
let busy = false, again = false;

// Runs the open model on 8x8 ink counts (0..16) and shows the top 3. `precise` times repeated runs
// after the shown one: the page's clock is coarsened to 0.1 ms, coarser than a small model's
// prediction, and the very first run of a model also pays one-off warm-up that isn't its latency.
async function predict(pixels, { precise = false } = {}) {
  if (!current?.dims) return null;
  const x = toModelInput(pixels, current.transform);
  let t0 = performance.now();
  const top = await current.model.classify(x, current.dims, { topK: 3 });
  let runs = 1, elapsed = performance.now() - t0;
  renderGuesses(top);
  // a finished drawing or a shown digit (not every pointer move) is one observation
  if (precise) drift?.observe(x, current.dims);
  if (firstPredictionAt === null) {
    // Navigation start is performance.now()'s zero: this is the page's cold start.
    firstPredictionAt = performance.now();
    performance.mark("kiln:first-prediction");
    $("stat-cold").textContent = formatMs(firstPredictionAt);
  }
  if (precise && elapsed < 50) {
    t0 = performance.now();
    runs = 0;
    do { await current.model.classify(x, current.dims, { topK: 3 }); runs++; } while (runs < 200 && performance.now() - t0 < 5);
    elapsed = performance.now() - t0;
  }
  $("stat-latency").textContent = formatMs(elapsed / runs);
  return top;
}

// Coalesces the pointer's many moves into at most one prediction in flight.
async function predictStrokes(precise = false) {
  if (busy) { again = true; return; }
  busy = true;
  try {
    do {
      again = false;
      const pixels = strokesToPixels(strokes);
      renderSeen(pixels);
      if (strokes.length) await predict(pixels, { precise }); else renderGuesses(null);
    } while (again);
  } catch (e) {
    showError("The model failed on this drawing.", e.message);
  } finally {
    busy = false;
  }
}

function renderGuesses(top) {
  const list = $("guesses");
  if (!top) {
    list.replaceChildren(el("li", { className: "empty" }, "Draw a digit to see what the model thinks."));
    $("guess-hint").textContent = "";
    return;
  }
  list.replaceChildren(...top.map((g) => {
    const pct = Math.max(0, Math.min(1, g.score)) * 100;
    const fill = el("div", { className: "fill" });
    fill.style.width = `${pct.toFixed(1)}%`;
    return el("li", { className: "guess" },
      el("span", { className: "label" }, g.label ?? String(g.index)),
      el("div", { className: "track" }, fill),
      el("span", { className: "score" }, `${pct.toFixed(1)}%`));
  }));
  $("guess-hint").textContent = "softmax of the model's outputs";
}

function renderSeen(pixels) {
  const img = seenCtx.createImageData(GRID, GRID);
  for (let i = 0; i < GRID * GRID; i++) {
    const v = 255 - Math.round((pixels[i] / MAX_VALUE) * 255);
    img.data.set([v, v, v, 255], i * 4);
  }
  seenCtx.putImageData(img, 0, 0);
  $("seen-text").textContent = `8×8 ink counts 0–16 (total ${Math.round(pixels.reduce((a, b) => a + b, 0))}), like scikit-learn's digits.`;
}

// ---- the pad ----------------------------------------------------------------------------------
function setupPad() {
  const dpr = window.devicePixelRatio || 1;
  pad.width = 280 * dpr; pad.height = 280 * dpr;
  ctx.scale(dpr, dpr);
}

function note(text) {
  $("pad-note").textContent = text ?? "";
  $("pad-note").hidden = !text;
}

function clearPad() {
  strokes = []; shownSample = null;
  ctx.clearRect(0, 0, 280, 280);
  pad.classList.remove("sample");
  note(null);
  renderSeen(new Float32Array(GRID * GRID));
  if (current?.dims) renderGuesses(null);
}

function drawSegment(a, b) {
  ctx.strokeStyle = "#1c1f24"; ctx.lineWidth = PEN_WIDTH; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
}

function pointOf(e) {
  const r = pad.getBoundingClientRect();
  return [((e.clientX - r.left) * 280) / r.width, ((e.clientY - r.top) * 280) / r.height];
}

pad.addEventListener("pointerdown", (e) => {
  if (!current?.dims || e.button > 0) return;
  if (shownSample) clearPad();
  drawing = true;
  // Keep the stroke when the pen leaves the square; synthetic events may carry no capturable id.
  try { pad.setPointerCapture(e.pointerId); } catch { /* drawing still works inside the pad */ }
  const p = pointOf(e);
  strokes.push([p]);
  drawSegment(p, p);
  e.preventDefault();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const stroke = strokes[strokes.length - 1];
  // Coalesced events keep fast pen strokes smooth where the browser batches them.
  for (const ev of e.getCoalescedEvents?.() ?? [e]) {
    const p = pointOf(ev);
    drawSegment(stroke[stroke.length - 1], p);
    stroke.push(p);
  }
  predictStrokes();
});
const endStroke = () => {
  if (!drawing) return;
  drawing = false;
  predictStrokes(true);
};
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

// A test digit from the shipped samples, drawn as its 8x8 image and predicted.
async function showPixels(pixels, caption) {
  clearPad();
  shownSample = pixels;
  pad.classList.add("sample");
  const cell = 280 / GRID;
  for (let i = 0; i < GRID * GRID; i++) {
    const v = 255 - Math.round((pixels[i] / MAX_VALUE) * 255);
    ctx.fillStyle = `rgb(${v},${v},${v})`;
    ctx.fillRect((i % GRID) * cell, Math.floor(i / GRID) * cell, cell + 0.5, cell + 0.5);
  }
  note(caption);
  renderSeen(pixels);
  return predict(Float32Array.from(pixels), { precise: true });
}

function showNextSample() {
  if (!samples.length) return null;
  const s = samples[sampleIndex++ % samples.length];
  return showPixels(s.pixels, `A test digit the model never trained on (true label ${s.label}). Draw to replace it.`);
}

// ---- other models: file picker and drag-and-drop ------------------------------------------------
async function openFile(file) {
  const start = performance.now();
  status(`Opening ${file.name}…`);
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    await openModel(bytes, file.name, { loadStart: start });
    status(`Loaded ${file.name}.`);
    if (current.dims && current.labels === null) status(`Loaded ${file.name}; it has no kiln.labels, so guesses show output indices.`);
  } catch (e) {
    status("");
    const hint = /\.onnx$/i.test(file.name) ? "" : " (it doesn't end in .onnx)";
    showError(`Couldn't run “${file.name}”${hint}. The model you had open is still loaded.`,
      `${String(e.message).replace(/[.\s]+$/, "")}. kiln runs ONNX files from kiln, PyTorch, Keras (tf2onnx) and scikit-learn (skl2onnx) whose operators tract supports.`);
  }
}

$("file").addEventListener("change", (e) => {
  const file = e.target.files?.[0];
  e.target.value = ""; // choosing the same file again should reload it
  if (file) openFile(file);
});
let dragDepth = 0;
document.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; $("drop-overlay").hidden = false; $("drop").classList.add("over"); });
document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; $("drop-overlay").hidden = true; $("drop").classList.remove("over"); } });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0; $("drop-overlay").hidden = true; $("drop").classList.remove("over");
  const file = e.dataTransfer?.files?.[0];
  if (file) openFile(file);
});

$("clear").addEventListener("click", () => { clearPad(); hideError(); });
$("sample").addEventListener("click", () => showNextSample());
$("back").addEventListener("click", async () => {
  await openModel(shippedBytes, MODEL_URL.split("/").pop(), { isShipped: true });
  teach?.reset();
  status("Back on the shipped digits model.");
  await showNextSample();
});
$("try-zeros").addEventListener("click", async () => {
  const out = $("run-output");
  try {
    const input = current.model.inputs[0];
    if (current.model.inputs.length !== 1) throw new Error(`it takes ${current.model.inputs.length} inputs; this button feeds one`);
    if (input.type && input.type !== "float32") throw new Error(`its input is ${input.type}; this button feeds float32`);
    const dims = input.dims.map((d) => d ?? 1);
    const t0 = performance.now();
    const res = await current.model.run(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
    const ms = performance.now() - t0;
    const head = Array.from(res.data.slice(0, 8), (v) => v.toPrecision(4)).join(", ");
    out.textContent = `input ${formatDims(dims)} of zeros → output ${formatDims(res.dims)} in ${formatMs(ms)}\nfirst values: ${head}${res.data.length > 8 ? ", …" : ""}`;
    $("stat-latency").textContent = formatMs(ms);
    hideError();
  } catch (e) {
    out.textContent = "";
    showError("Couldn't run this model on zeros.", e.message);
  }
  out.hidden = !out.textContent;
});

// ---- teach it ---------------------------------------------------------------------------------
// Opens a model "teach it" fine-tuned and predicts again what is on the pad.
async function swapIn(bytes, name) {
  const keptStrokes = strokes, keptSample = shownSample, keptNote = $("pad-note").textContent;
  await openModel(bytes, name, { taught: true });
  if (keptSample) {
    await showPixels(keptSample, keptNote);
  } else if (keptStrokes.length) {
    strokes = keptStrokes;
    for (const stroke of strokes) stroke.forEach((p, i) => drawSegment(stroke[Math.max(0, i - 1)], p));
    await predictStrokes(true);
  }
}

// ---- start ------------------------------------------------------------------------------------
async function start() {
  setupPad();
  clearPad();
  drift = setupDrift({ el, onDrift: (report) => teach?.driftNoticed(report) });
  teach = setupTeach({
    el, checkpointUrl: CHECKPOINT_URL, swapIn,
    kiln: () => kiln,
    drifted: () => drift?.drifted() ?? false,
    current: () => current,
    samples: () => samples,
    replay: () => replay,
    pixelsNow: () => shownSample ?? (strokes.length ? strokesToPixels(strokes) : null),
  });
  status("Loading kiln-wasm and the model…");
  const loadStart = performance.now();
  try {
    kiln = await import(KILN_URL);
  } catch (e) {
    throw new Error(`kiln-wasm could not be loaded from ../wasm/pkg/ (build it with \`make wasm\`): ${e.message}`);
  }
  performance.mark("kiln:module-imported");
  // Download and compile the .wasm while the model downloads, instead of after (loadModel would
  // otherwise start it). initKiln() starts the small module kiln's engine runs in; tract's module
  // is fetched only if a model needs it.
  const early = kiln.initKiln ?? kiln.init;
  const wasmReady = early ? early().then(() => performance.mark("kiln:wasm-ready")) : null;
  const [modelRes, samplesRes] = await Promise.all([fetch(MODEL_URL), fetch(SAMPLES_URL).catch(() => null), wasmReady]);
  if (!modelRes.ok) throw new Error(`${MODEL_URL}: HTTP ${modelRes.status}`);
  shippedBytes = new Uint8Array(await modelRes.arrayBuffer());
  if (samplesRes?.ok) {
    // The samples are a nicety: a missing or malformed file leaves an empty pad, not a broken page.
    try {
      const s = await samplesRes.json();
      samples = s.pixels.map((pixels, i) => ({ pixels, label: s.labels[i] })).filter((x) => x.pixels.length === GRID * GRID);
      replay = (s.replay?.pixels ?? []).map((pixels, i) => ({ pixels, label: s.replay.labels[i] })).filter((x) => x.pixels.length === GRID * GRID);
    } catch (e) {
      console.warn(`${SAMPLES_URL}: ${e.message}`);
    }
  }
  await openModel(shippedBytes, MODEL_URL.split("/").pop(), { loadStart, isShipped: true });
  performance.mark("kiln:model-loaded");
  status("");
  if (samples.length) await showNextSample();
}

// The browser tests drive the page through this, along the same path a drawing takes.
window.kilnDemo = {
  // Resolves to true once a model is open, false when the page could not start (the error is shown).
  ready: start().then(
    () => { document.body.dataset.state = "ready"; return true; },
    (e) => {
      document.body.dataset.state = "error";
      status("");
      showError("The demo couldn't start.", e.message);
      return false;
    },
  ),
  // 8x8 ink counts (0..16) -> what the page shows, plus the model's raw outputs for comparisons.
  async predictPixels(pixels) {
    const top = await showPixels(pixels, "Pixels from a test.");
    const raw = await current.model.run(toModelInput(pixels, current.transform), current.dims);
    return { top, output: Array.from(raw.data), dims: raw.dims };
  },
  // The drift meter's report (null when the model carries no training statistics).
  drift: () => drift?.report() ?? null,
  get model() { return current && { name: current.name, size: current.size, loadMs: current.loadMs, transform: current.transform, labels: current.labels, taught: current.taught }; },
};
