// The drift meter in headless Chromium: test digits keep it low; the same digits with thick strokes
// (each pixel the brightest of its 2x2 neighbourhood, as a fat pen draws) make it rise to a drift
// verdict, and "teach it" then offers to fine-tune. "Save feedback" downloads the corrected examples
// as one file, which Python's kiln.drift.load_feedback reads back.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { REPO, outDir, startServer, launchBrowser, openPage, waitForDemo } from "./harness.mjs";

const SHOTS = outDir("demo");
const SAMPLES = JSON.parse(readFileSync(path.join(REPO, "web-demo/model/digits.json"), "utf8"));

function thick(pixels) {
  const at = (r, c) => (r < 8 && c < 8 ? pixels[r * 8 + c] : 0);
  return pixels.map((_, i) => {
    const r = Math.floor(i / 8), c = i % 8;
    return Math.max(at(r, c), at(r + 1, c), at(r, c + 1), at(r + 1, c + 1));
  });
}

let server, browser, page, log;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  ({ page, log } = await openPage(browser.context, server.url("/web-demo/")));
  await waitForDemo(page, log);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const report = () => page.evaluate(() => window.kilnDemo.drift());
const meter = () => page.evaluate(() => Number(document.getElementById("drift-meter").value));

test("test digits keep the meter down; thick strokes raise it and teach-it offers to fine-tune", async () => {
  const start = await report();
  assert.ok(start, `the shipped model carries training statistics\n${log.join("\n")}`);
  assert.equal(start.window, 20);
  for (const pixels of SAMPLES.pixels.slice(1, 20)) await page.evaluate((p) => window.kilnDemo.predictPixels(p), pixels);
  const quiet = await report();
  assert.equal(quiet.observed, 20);
  assert.equal(quiet.drifted, false, `test digits: ${JSON.stringify(quiet.moved)} p=${quiet.p_value}`);
  const low = await meter();
  await page.screenshot({ path: path.join(SHOTS, "drift-quiet.png") });

  let drawn = 0;
  for (const pixels of SAMPLES.pixels.slice(0, 20).map(thick)) {
    await page.evaluate((p) => window.kilnDemo.predictPixels(p), pixels);
    drawn += 1;
    if ((await report()).drifted) break;
  }
  const moved = await report();
  assert.ok(moved.drifted, `20 thick digits: p=${moved.p_value}`);
  console.log(`# page: drift verdict after ${drawn} thick-stroked digits (window 20); meter ${low.toFixed(2)} -> ${(await meter()).toFixed(2)}; moved ${moved.moved.join(", ")}`);
  assert.ok((await meter()) === 1 && low < 1);
  assert.equal(await page.evaluate(() => document.getElementById("drift").dataset.state), "drift");
  assert.match(await page.locator("#drift-text").innerText(), /don't look like the training digits/);
  assert.match(await page.locator("#teach-result").innerText(), /drift meter/);
  assert.match(await page.locator("#teach-hint").innerText(), /fine-tune/);
  await page.screenshot({ path: path.join(SHOTS, "drift-raised.png") });
});

test("Save feedback downloads the corrected examples, and Python reads them", async () => {
  const labels = [];
  for (let i = 0; i < 3; i++) {
    await page.evaluate((p) => window.kilnDemo.predictPixels(p), thick(SAMPLES.pixels[i]));
    await page.click(`#teach-labels button[data-index="${SAMPLES.labels[i]}"]`);
    labels.push(SAMPLES.labels[i]);
  }
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#teach-save")]);
  assert.equal(download.suggestedFilename(), "feedback.kiln-data");
  const file = path.join(SHOTS, "feedback.kiln-data");
  await download.saveAs(file);
  const version = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch("model/digits.onnx")).arrayBuffer());
    const kiln = await import("../wasm/pkg/index.js");
    return kiln.modelVersion(bytes);
  });
  const out = execFileSync(process.env.PYTHON, ["-c", `
import json, sys, kiln
X, y = fb = kiln.drift.load_feedback(sys.argv[1])
print(json.dumps({"shape": list(X.shape), "y": y.tolist(), "version": fb.model_version, "max": float(X.max())}))
`, file], { encoding: "utf8" });
  const got = JSON.parse(out);
  assert.deepEqual(got.shape, [3, 1, 8, 8]);
  assert.deepEqual(got.y, labels);
  assert.equal(got.version, version, "the feedback names the model it was collected against");
  assert.ok(got.max > 0 && got.max <= 1, "inputs as the model takes them (ink / 16)");
});

test("a model taught on the page keeps the shipped model's statistics, so the meter goes on", async () => {
  // three corrected thick digits are in the teach panel from the test before
  await page.click("#teach-run");
  await page.waitForFunction(() => ["taught", "error"].includes(document.getElementById("teach").dataset.state), null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.getElementById("teach").dataset.state), "taught", await page.locator("#teach-result").innerText());
  const model = await page.evaluate(() => window.kilnDemo.model);
  assert.ok(model.taught);
  const fresh = await report();
  assert.ok(fresh, "the taught model is monitored");
  await page.evaluate((p) => window.kilnDemo.predictPixels(p), SAMPLES.pixels[5]);
  const after = await report();
  // a new window for the new model: swapIn re-predicted what was on the pad (1), then this digit
  assert.ok(fresh.seen <= 1, `${fresh.seen}`);
  assert.equal(after.seen, fresh.seen + 1);
});
