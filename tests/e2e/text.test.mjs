// The text page as a person uses it, in headless Chromium: a surname typed letter by letter gets the
// language guesses Python gives for each prefix, and "Write a name" with a seed writes, token by token,
// exactly the text kiln.text.generate writes in Python for that seed. Python's side is computed here,
// from the very files the page loads (scripts/train_text_demo.py --reference, kiln.InferenceSession).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, outDir, startServer, launchBrowser, openPage, waitForDemo } from "./harness.mjs";

const SHOTS = outDir("text");
const PYTHON = process.env.PYTHON || path.join(REPO, ".venv/bin/python");
const MODELS = path.join(REPO, "web-demo/model");
const TYPED = "Virtanen";
const ODD = "Zoë☃ 42"; // characters the tokenizer never saw (☃, digits) are <unk>, not an error
const RUNS = [
  { model: "gru", prompt: "", maxNewTokens: 20, temperature: 0.8, topK: 5, seed: 7 },
  { model: "gru", prompt: "Ma", maxNewTokens: 20, temperature: 1.2, topK: null, seed: 3 },
  { model: "gru", prompt: "Zoë☃", maxNewTokens: 20, temperature: 0.5, topK: 3, seed: 11 },
  { model: "gru", prompt: "Ber", maxNewTokens: 20, temperature: 0, topK: null, seed: 0 },
  { model: "transformer", prompt: "", maxNewTokens: 20, temperature: 0.8, topK: 5, seed: 7 },
  { model: "transformer", prompt: "Ma", maxNewTokens: 20, temperature: 1.2, topK: null, seed: 3 },
  { model: "transformer", prompt: "Ber", maxNewTokens: 20, temperature: 0, topK: null, seed: 0 },
];

let server, browser, page, log, outside, python;

function pythonReference() {
  const prefixes = [...Array(TYPED.length)].map((_, i) => TYPED.slice(0, i + 1));
  const ask = {
    classifier: path.join(MODELS, "names-language.onnx"),
    generators: { gru: path.join(MODELS, "names-generator.onnx"), transformer: path.join(MODELS, "names-transformer.onnx") },
    names: [...prefixes, ODD],
    runs: RUNS,
  };
  const file = path.join(SHOTS, "ask.json");
  writeFileSync(file, JSON.stringify(ask));
  const out = execFileSync(PYTHON, [path.join(REPO, "scripts/train_text_demo.py"), "--reference", file], { encoding: "utf8", timeout: 120_000 });
  const ref = JSON.parse(out);
  return { ...ref, prefixes };
}

before(async () => {
  python = pythonReference();
  server = await startServer();
  browser = await launchBrowser();
  ({ page, log, outside } = await openPage(browser.context, server.url("/web-demo/text.html")));
  await waitForDemo(page, log);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function guessesFor(name) {
  await page.waitForFunction((n) => window.kilnText.guesses?.name === n, name);
  return page.evaluate(() => ({
    ranked: window.kilnText.guesses.ranked.map((g) => ({ label: g.label, score: g.score })),
    shown: [...document.querySelectorAll("#lang-guesses .guess .label")].map((e) => e.textContent),
  }));
}

function assertSameGuesses(got, i, what) {
  const want = python.ranked[i];
  assert.deepEqual(got.ranked.map((g) => g.label), want, `${what}: the page ranks the languages as Python does`);
  assert.deepEqual(got.shown, want.slice(0, 3), `${what}: the top three are shown`);
  for (const g of got.ranked) {
    const p = python.scores[i][python.labels.indexOf(g.label)];
    assert.ok(Math.abs(g.score - p) < 1e-4, `${what}: ${g.label} ${g.score} vs Python's ${p}`);
  }
}

test("the page opens offline with its three models on kiln's own engine, both generators stepping position by position", async (t) => {
  assert.deepEqual(outside, [], "the page must not reach beyond 127.0.0.1");
  const info = await page.evaluate(() => ({
    language: window.kilnText.language, generators: window.kilnText.generators,
    wasm: performance.getEntriesByType("resource").filter((r) => r.name.endsWith(".wasm")).map((r) => ({ file: r.name.split("/").pop(), bytes: r.decodedBodySize })),
  }));
  assert.ok(info.wasm.length >= 1, "kiln-wasm's module was fetched");
  assert.ok(info.wasm.every((w) => !/^kiln_(wasm|train)/.test(w.file)), `neither tract's module nor the Trainer's is fetched: ${JSON.stringify(info.wasm)}`);
  writeFileSync(path.join(SHOTS, "wasm.json"), JSON.stringify(info.wasm, null, 2));
  t.diagnostic(`wasm fetched: ${JSON.stringify(info.wasm)}`);
  assert.equal(info.language.engine, "kiln");
  for (const key of ["gru", "transformer"]) {
    assert.equal(info.generators[key].engine, "kiln", key);
    assert.equal(info.generators[key].cached, true, `${key}: generated position by position, not by rerunning the window`);
  }
  assert.deepEqual(info.language.labels, python.labels);
  assert.deepEqual(python.engines, ["kiln", "kiln", "kiln"]);
});

test("typing a surname letter by letter: the guesses after every letter are Python's", async () => {
  await page.click("#name");
  for (let i = 0; i < TYPED.length; i++) {
    await page.keyboard.type(TYPED[i]);
    assertSameGuesses(await guessesFor(TYPED.slice(0, i + 1)), i, JSON.stringify(TYPED.slice(0, i + 1)));
  }
  const top = python.ranked[TYPED.length - 1][0];
  assert.equal(top, "Finnish", `a model that learnt anything calls ${TYPED} Finnish (Python says ${top})`);
  await page.screenshot({ path: path.join(SHOTS, "typed.png"), fullPage: true });
});

test("unknown characters are read as <unk>, and an empty box clears the guesses", async () => {
  await page.fill("#name", ODD);
  assertSameGuesses(await guessesFor(ODD), python.prefixes.length, JSON.stringify(ODD));
  assert.match(await page.locator("#unknown-note").innerText(), /never saw/);
  await page.fill("#name", "");
  await guessesFor("");
  assert.equal(await page.locator("#lang-guesses .guess").count(), 0);
  assert.match(await page.locator("#lang-guesses").innerText(), /Type a surname/);
});

test("Write a name: token by token, exactly Python's text for each seed, with the per-token latency shown", async (t) => {
  const record = [];
  for (const [i, run] of RUNS.entries()) {
    await page.selectOption("#gen-model", run.model);
    await page.fill("#prompt", run.prompt);
    await page.fill("#temperature", String(run.temperature));
    await page.fill("#topk", String(run.topK ?? 0));
    await page.fill("#seed", String(run.seed));
    const before = await page.evaluate(() => window.kilnText.runs.length);
    await page.click("#generate");
    await page.waitForFunction((n) => window.kilnText.runs.length > n && !document.body.dataset.generating, before);
    const got = await page.evaluate(() => window.kilnText.lastRun);
    assert.equal(got.model, run.model, "the chosen model wrote it");
    const want = python.runs[i];
    assert.equal(got.text, want.text, `${JSON.stringify(run)}: the page writes Python's name`);
    assert.deepEqual(got.pieces, want.pieces, "token by token, the same pieces and ids as Python's on_token");
    assert.equal(got.text, run.prompt + got.pieces.map(([p]) => p).join(""), "the prompt, then the pieces");
    assert.equal(got.tokenMs.length, got.pieces.length, "one latency per token");
    assert.equal(await page.locator("#writing").innerText(), want.text, "the name is on the page");
    if (got.pieces.length) assert.match(await page.locator("#stat-token").innerText(), /^\d+(\.\d+)? ms$/);
    else assert.equal(await page.locator("#stat-token").innerText(), "–", "no token, no latency");
    assert.equal(await page.inputValue("#seed"), String(run.seed + 1), "the next press takes the next seed");
    record.push({ ...run, text: got.text, tokens: got.pieces.length, ms_per_token: got.msPerToken });
  }
  assert.ok(record.filter((r) => r.tokens >= 3).length >= 2, `names written token by token: ${JSON.stringify(record)}`);
  // the greedy run (temperature 0) and a seeded one differ from each other: the settings reach the loop
  assert.notEqual(python.runs[0].text, python.runs[3].text);
  // the two models write different names for the same settings: the choice reaches the page's loop
  const pairs = [[0, 4], [1, 5], [3, 6]]; // the same settings on the GRU and on the transformer
  assert.ok(pairs.some(([g, t]) => python.runs[g].text !== python.runs[t].text), "the GRU and the transformer differ");
  assert.equal(await page.locator("#made li").count(), RUNS.length);
  assert.equal(await page.locator("#error").isHidden(), true);
  writeFileSync(path.join(SHOTS, "generate.json"), JSON.stringify(record, null, 2));
  t.diagnostic(`per-token latency in the page (ms, median per name): ${record.map((r) => `${r.model} ${r.ms_per_token.toFixed(3)}`).join(", ")}`);
  await page.screenshot({ path: path.join(SHOTS, "generated.png"), fullPage: true });
});

test("a temperature below 0 is refused with the core's message, and the page keeps working", async () => {
  await page.selectOption("#gen-model", "gru");
  await page.fill("#prompt", "Ma");
  await page.fill("#temperature", "-1");
  await page.click("#generate");
  await page.waitForFunction(() => !document.querySelector("#error").hidden);
  assert.match(await page.locator("#error").innerText(), /temperature must be 0/);
  await page.fill("#temperature", "0.8");
  await page.fill("#topk", "5");
  await page.fill("#seed", "7");
  await page.fill("#prompt", "");
  const before = await page.evaluate(() => window.kilnText.runs.length);
  await page.click("#generate");
  await page.waitForFunction((n) => window.kilnText.runs.length > n && !document.body.dataset.generating, before);
  assert.equal(await page.evaluate(() => window.kilnText.lastRun.text), python.runs[0].text, "seed 7 again: the same name");
  assert.deepEqual(outside, []);
});
