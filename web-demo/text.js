// The text page: type a surname, see which language kiln-wasm guesses as you type; press a button and
// a language model (a GRU or a small causal transformer, your choice) writes new names token by token
// (kiln-wasm's model.generate with onToken), with the time per token. The models were exported by kiln
// with their tokenizer (`export_onnx(..., tokenizer=tok)`, see notebooks/04-text.ipynb and
// scripts/train_text_demo.py) and run on kiln's own engine, which generates position by position (the
// GRU's state carried, the transformer's keys and values cached). `?language=URL`, `?generator=URL`
// and `?transformer=URL` open other models.
const KILN_URL = new URL("../wasm/pkg/index.js", import.meta.url).href;
const params = new URLSearchParams(location.search);
const LANGUAGE_URL = params.get("language") || "model/names-language.onnx";
const GENERATOR_URLS = {
  gru: params.get("generator") || "model/names-generator.onnx",
  transformer: params.get("transformer") || "model/names-transformer.onnx",
};
const HINTS = {
  gru: "A GRU language model, one character at a time (its state carried from token to token)",
  transformer: "A small causal transformer, one character at a time (its keys and values cached)",
};
const MAX_NEW_TOKENS = 20;

const $ = (id) => document.getElementById(id);
const formatMs = (ms) => (ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 1 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(3)} ms`);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN; };

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function showError(headline, detail) {
  $("error").replaceChildren(el("strong", {}, headline), el("span", { className: "detail" }, detail));
  $("error").hidden = false;
}

// What the page did last, for people poking in the console and for the browser tests.
const state = { language: null, generator: null, generators: {}, model: "gru", guesses: null, lastRun: null, runs: [] };
window.kilnText = state;

let language = null; // the classifier
const generators = {}; // the language models by choice
let generator = null; // the chosen one
let busy = false;

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// ---- which language ---------------------------------------------------------------------------
// The classifier reads a fixed window of T ids: the name's last T ids with <pad> (id 0) in front,
// as it was trained (left_pad in the notebook and in scripts/train_text_demo.py).
function windowIds(model, name) {
  const T = model.inputs[0].dims[1];
  const ids = model.tokenizer.encode(name).slice(-T);
  const x = new BigInt64Array(T); // zeros: <pad>
  x.set(ids, T - ids.length);
  return { x, T, ids };
}

function renderGuesses(name) {
  const list = $("lang-guesses");
  list.dataset.name = name;
  if (!name.trim()) {
    state.guesses = { name, ranked: [] };
    $("unknown-note").hidden = true;
    list.replaceChildren(el("li", { className: "empty" }, "Type a surname: the guesses change with every letter."));
    return;
  }
  const start = performance.now();
  const { x, T, ids } = windowIds(language, name);
  const ranked = language.classify(x, [1, T], { topK: language.labels.length });
  const ms = performance.now() - start;
  state.guesses = { name, ranked, ms };
  $("stat-classify").textContent = formatMs(ms);
  list.replaceChildren(...ranked.slice(0, 3).map((g) => el("li", { className: "guess" },
    el("span", { className: "label" }, g.label),
    el("span", { className: "track" }, Object.assign(el("span", { className: "fill" }), { style: `width: ${(g.score * 100).toFixed(1)}%` })),
    el("span", { className: "score" }, `${(g.score * 100).toFixed(1)}%`))));
  const unknown = Array.from(ids).filter((id) => id === 1n).length; // <unk>: characters the model never saw
  $("unknown-note").hidden = unknown === 0;
  $("unknown-note").textContent = unknown ? `${unknown} character${unknown > 1 ? "s" : ""} the model never saw in training (read as <unk>).` : "";
}

// ---- new names --------------------------------------------------------------------------------
function generateOptions() {
  const temperature = Number($("temperature").value);
  const k = Number($("topk").value);
  const seed = Number($("seed").value);
  return { model: state.model, prompt: $("prompt").value, maxNewTokens: MAX_NEW_TOKENS, temperature, topK: k > 0 ? k : undefined, seed };
}

async function writeName() {
  const opts = generateOptions();
  const writing = $("writing");
  writing.replaceChildren(el("span", { className: "prompt" }, opts.prompt));
  const pieces = [], tokenMs = [];
  let last = performance.now();
  const text = await generator.generate(opts.prompt, {
    maxNewTokens: opts.maxNewTokens, temperature: opts.temperature, topK: opts.topK, seed: opts.seed,
    onToken: (piece, id) => {
      const now = performance.now();
      tokenMs.push(now - last);
      pieces.push([piece, id]);
      writing.append(el("span", { className: "tok" }, piece));
      $("stat-tokens").textContent = String(pieces.length);
      last = now;
    },
  });
  const run = { ...opts, topK: opts.topK ?? null, text, pieces, tokenMs, msPerToken: median(tokenMs) };
  state.lastRun = run;
  state.runs.push(run);
  $("stat-token").textContent = pieces.length ? formatMs(run.msPerToken) : "–";
  $("stat-tokens").textContent = String(pieces.length);
  // where the new name sounds from, by the other model
  const guess = text.trim() ? language.classify(windowIds(language, text).x, [1, language.inputs[0].dims[1]], { topK: 1 })[0] : null;
  const settings = `${opts.model === "gru" ? "GRU" : "transformer"}, seed ${opts.seed}, temperature ${opts.temperature}, top k ${opts.topK ?? "all"}`;
  $("made").prepend(el("li", {}, el("span", { className: "name" }, text || "(nothing)"),
    el("span", { className: "meta" }, `${guess ? `sounds ${guess.label} · ` : ""}${settings} · ${pieces.length ? `${formatMs(run.msPerToken)}/token` : "ended at once"}`)));
  $("seed").value = String(opts.seed + 1); // the next press writes another name
  return run;
}

async function writeNames(count) {
  if (busy) return;
  busy = true;
  $("generate").disabled = $("generate-five").disabled = $("gen-model").disabled = true;
  $("error").hidden = true;
  document.body.dataset.generating = "1";
  try {
    for (let i = 0; i < count; i++) await writeName();
  } catch (e) {
    showError("Could not write a name", e.message);
  } finally {
    busy = false;
    $("generate").disabled = $("generate-five").disabled = $("gen-model").disabled = false;
    delete document.body.dataset.generating;
  }
}

// ---- start ------------------------------------------------------------------------------------
async function main() {
  $("status").textContent = "Loading kiln-wasm and the three models…";
  const start = performance.now();
  const kiln = await import(KILN_URL);
  const [langBytes, gruBytes, gptBytes] = await Promise.all([LANGUAGE_URL, GENERATOR_URLS.gru, GENERATOR_URLS.transformer].map(fetchBytes));
  language = await kiln.loadModel(langBytes);
  generators.gru = await kiln.loadModel(gruBytes);
  generators.transformer = await kiln.loadModel(gptBytes);
  for (const [m, what] of [[language, "the language model"], [generators.gru, "the GRU generator"], [generators.transformer, "the transformer generator"]]) {
    if (!m.tokenizer) throw new Error(`${what} carries no tokenizer: export it with export_onnx(..., tokenizer=tok)`);
  }
  if (!language.labels) throw new Error("the language model carries no labels: export it with export_onnx(..., labels=[...])");
  const loadMs = performance.now() - start;
  state.language = { engine: language.engine, labels: language.labels, bytes: langBytes.length, dims: language.inputs[0].dims, vocabSize: language.tokenizer.vocabSize };
  for (const [key, m, bytes] of [["gru", generators.gru, gruBytes], ["transformer", generators.transformer, gptBytes]]) {
    state.generators[key] = { engine: m.engine, cached: m.generatesCached(), bytes: bytes.length, dims: m.inputs[0].dims, vocabSize: m.tokenizer.vocabSize };
  }
  const choose = (key) => {
    state.model = key;
    generator = generators[key];
    state.generator = state.generators[key];
    $("gen-hint").textContent = HINTS[key];
  };
  choose($("gen-model").value);
  $("stat-lang-model").textContent = `${(langBytes.length / 1024).toFixed(0)} KB · ${language.engine}`;
  const engines = new Set([language, ...Object.values(generators)].map((m) => m.engine));
  $("status").textContent = `Loaded in ${formatMs(loadMs)}: classifier ${(langBytes.length / 1024).toFixed(0)} KB, GRU ${(gruBytes.length / 1024).toFixed(0)} KB and transformer ${(gptBytes.length / 1024).toFixed(0)} KB, on ${engines.size === 1 ? `kiln-wasm's ${language.engine} engine` : [...engines].join(" / ")}.`;
  $("gen-model").addEventListener("change", (e) => choose(e.target.value));

  const name = $("name");
  name.addEventListener("input", () => renderGuesses(name.value));
  $("generate").addEventListener("click", () => writeNames(1));
  $("generate-five").addEventListener("click", () => writeNames(5));
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") writeNames(1); });
  for (const id of ["name", "gen-model", "prompt", "temperature", "topk", "seed", "generate", "generate-five"]) $(id).disabled = false;
  renderGuesses(name.value);
  document.body.dataset.state = "ready";
  name.focus();
}

main().catch((e) => {
  showError("The text demo could not start", e.message);
  $("status").textContent = "";
  document.body.dataset.state = "error";
  console.error(e);
});
