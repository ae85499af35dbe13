// "Teach it" in headless Chromium: three test digits get a different label from the one the model
// gives them, the page fine-tunes the model's last layer in a Web Worker with kiln-wasm's Trainer,
// swaps the new model in, and now predicts what it was taught. Also times the Trainer in the page
// (20 examples × 10 epochs, the yardstick) into tests/out/demo/teach.json.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, outDir, startServer, launchBrowser, openPage, waitForDemo } from "./harness.mjs";

const SHOTS = outDir("demo");
const SAMPLES = JSON.parse(readFileSync(path.join(REPO, "web-demo/model/digits.json"), "utf8"));

let server, browser, page, log;
const requested = []; // every URL the page and its workers asked for

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  browser.context.on("request", (r) => requested.push(r.url()));
  ({ page, log } = await openPage(browser.context, server.url("/web-demo/")));
  await waitForDemo(page, log);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const topLabel = () => page.evaluate(() => document.querySelector("#guesses .guess .label")?.textContent);
const tractFetched = () => requested.some((u) => u.includes("kiln_wasm_bg.wasm"));
const trainerFetched = () => requested.some((u) => u.includes("kiln_train_bg.wasm"));

test("teaching three corrected digits changes what the page predicts for them", async (t) => {
  assert.equal(await page.locator("#teach-labels button").count(), 10, "one button per label");
  assert.ok(await page.locator("#teach-run").isDisabled(), "nothing to teach yet");
  assert.equal(tractFetched(), false, "kiln's engine runs the shipped model: tract's module is never downloaded");
  assert.equal(trainerFetched(), false, "predicting needs no backward code: the Trainer's module waits for the first lesson");

  // The start-up showed the first test digit; show the next ones with the page's own button.
  const taught = [];
  for (let i = 0; i < 3; i++) {
    if (i > 0) await page.click("#sample");
    await page.waitForFunction(() => document.querySelectorAll("#guesses .guess").length === 3);
    const predicted = Number(await topLabel());
    const label = (predicted + 1) % 10; // "no, that is a …": a correction the model disagrees with
    await page.click(`#teach-labels button[data-index="${label}"]`);
    taught.push({ pixels: SAMPLES.pixels[i], predicted, label });
  }
  assert.equal(await page.locator("#teach-examples .example").count(), 3);
  assert.ok(await page.locator("#teach-run").isEnabled());

  await page.click("#teach-run");
  await page.waitForFunction(() => ["taught", "error"].includes(document.getElementById("teach").dataset.state), null, { timeout: 60_000 });
  const result = await page.locator("#teach-result").innerText();
  assert.equal(await page.evaluate(() => document.getElementById("teach").dataset.state), "taught", `${result}\n${log.join("\n")}`);
  assert.match(result, /Your examples: 0\/3 right before → 3\/3 after/);
  assert.match(result, /Shipped test digits: \d+\/24 → \d+\/24/);
  assert.equal(tractFetched(), false, "teaching needs no tract");
  assert.equal(trainerFetched(), true, "the lesson fetched the Trainer's module");
  const model = await page.evaluate(() => window.kilnDemo.model);
  assert.ok(model.taught && /taught 3 examples/.test(model.name), JSON.stringify(model));

  // The last digit is still on the pad, re-predicted by the new model: it says what it was taught.
  assert.equal(await topLabel(), String(taught[2].label));
  for (const { pixels, predicted, label } of taught) {
    const { top } = await page.evaluate((p) => window.kilnDemo.predictPixels(p), pixels);
    assert.equal(top[0].label, String(label), `taught ${label} (the model had said ${predicted})`);
  }
  const fitMs = await page.evaluate(() => Number(document.getElementById("teach").dataset.fitMs));
  t.diagnostic(`teach: ${result.replace(/\n/g, " | ")}`);
  await page.screenshot({ path: path.join(SHOTS, "teach.png"), fullPage: true });

  // Back on the shipped model, it predicts what it did before teaching.
  await page.click("#back");
  const { top } = await page.evaluate((p) => window.kilnDemo.predictPixels(p), taught[0].pixels);
  assert.equal(top[0].label, String(taught[0].predicted));
  writeRecord({ page_teach_round_fit_ms: fitMs, page_teach_result: result });
});

test("the Trainer in Chromium: 20 examples × 10 epochs, on the main thread and in a Worker", async (t) => {
  const timing = await page.evaluate(async () => {
    const x = new Float32Array(20 * 64).map((_, i) => ((i * 7) % 17) / 16);
    const y = Array.from({ length: 20 }, (_, i) => i % 10);
    const main = await import("/wasm/pkg/index.js");
    const trainer = await main.Trainer.fromKiln("/web-demo/model/digits.kiln");
    trainer.freeze();
    trainer.unfreeze("7.");
    const runs = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      trainer.fit(x, [20, 1, 8, 8], y, { epochs: 10, batchSize: 8 });
      runs.push(performance.now() - t0);
    }
    const worker = await import("/wasm/pkg/worker.js");
    const remote = await worker.Trainer.fromKiln("/web-demo/model/digits.kiln");
    await remote.freeze();
    await remote.unfreeze("7.");
    const remoteRuns = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await remote.fit(x, [20, 1, 8, 8], y, { epochs: 10, batchSize: 8 });
      remoteRuns.push(performance.now() - t0);
    }
    const same = Math.max(...Array.from(await remote.getFlatParameters(), (v, i) => Math.abs(v - trainer.getFlatParameters()[i])));
    const median = (a) => [...a].sort((p, q) => p - q)[2];
    return { main_thread_ms: median(runs), worker_ms: median(remoteRuns), worker_vs_main_max_diff: same };
  });
  assert.ok(timing.worker_vs_main_max_diff < 1e-6, JSON.stringify(timing));
  t.diagnostic(`20 examples x 10 epochs (head only): ${JSON.stringify(timing)}`);
  writeRecord({ head_20x10_chromium: timing });
});

function writeRecord(fields) {
  const file = path.join(SHOTS, "teach.json");
  let record = {};
  try { record = JSON.parse(readFileSync(file, "utf8")); } catch { /* first field */ }
  writeFileSync(file, JSON.stringify({ ...record, ...fields }, null, 2));
}
