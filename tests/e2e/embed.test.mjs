// kiln-wasm embedded as a web developer would: tests/embed-vite depends on the package by path
// (file:../../wasm/pkg), Vite bundles it with no configuration at all, and the built app classifies
// an image in headless Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { REPO, KILN_PKG, outDir, startServer, launchBrowser, openPage } from "./harness.mjs";

const APP = path.join(REPO, "tests/embed-vite");
const OUT_DIR = outDir("embed-vite");
const DIST = path.join(OUT_DIR, "dist");

function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

test("a Vite app bundles kiln-wasm with no configuration and classifies an image in Chromium", { timeout: 240_000 }, async (t) => {
  assert.ok(existsSync(path.join(KILN_PKG, "package.json")), `${KILN_PKG}/package.json is missing: build kiln-wasm with \`make wasm\``);
  assert.ok(!existsSync(path.join(APP, "vite.config.js")) && !existsSync(path.join(APP, "vite.config.mjs")), "the app must need no Vite configuration");
  const vite = path.join(APP, "node_modules/vite/bin/vite.js");
  assert.ok(existsSync(vite), `${vite} is missing: tests/run.sh runs npm ci in tests/embed-vite`);

  const started = Date.now();
  try {
    execFileSync(process.execPath, [vite, "build", "--outDir", DIST, "--emptyOutDir", "--logLevel", "warn"], { cwd: APP, stdio: "pipe", timeout: 180_000 });
  } catch (e) {
    assert.fail(`vite build failed:\n${e.stdout}\n${e.stderr}`);
  }
  const files = filesUnder(DIST).map((f) => path.relative(DIST, f));
  const wasm = files.filter((f) => f.endsWith(".wasm"));
  // The modules ship as assets: kiln's small module (two builds, relaxed SIMD and simd128, one of
  // which a browser fetches), which runs this kiln model; the Trainer's, fetched only to train;
  // tract's, fetched only for a model kiln's engine declines.
  assert.deepEqual(wasm.map((f) => path.basename(f).split("-")[0]).sort(), ["kiln_core_bg", "kiln_core_relaxed_bg", "kiln_train_bg", "kiln_wasm_bg"], `the bundle carries kiln-wasm's .wasm files as assets: ${files.join(", ")}`);
  assert.ok(files.some((f) => f.endsWith(".onnx")), `the bundle carries the model: ${files.join(", ")}`);
  t.diagnostic(`vite build in ${((Date.now() - started) / 1000).toFixed(1)} s; ${files.length} files, wasm ${wasm.map((w) => `${path.basename(w)} ${(statSync(path.join(DIST, w)).size / 1e6).toFixed(2)} MB`).join(", ")}`);

  const server = await startServer({ root: DIST, landing: "/" });
  const browser = await launchBrowser();
  try {
    const requested = [];
    browser.context.on("request", (r) => requested.push(r.url()));
    const { page, log, outside } = await openPage(browser.context, server.url("/"));
    await page.waitForFunction(() => document.body.dataset.state, null, { timeout: 30_000 });
    const result = page.locator("#result");
    const state = await page.evaluate(() => document.body.dataset.state);
    assert.equal(state, "done", `the app failed: ${await result.textContent()}\n${log.join("\n")}`);
    assert.equal(await result.getAttribute("data-label"), "3", `the held-out 3 was classified as ${await result.textContent()}`);
    assert.deepEqual(outside, [], "the bundled app reaches nothing beyond 127.0.0.1");
    assert.ok(!requested.some((u) => u.includes("kiln_wasm_bg")), "kiln's engine ran the model: tract's module was never fetched");
    assert.ok(!requested.some((u) => u.includes("kiln_train_bg")), "the app only predicts: the Trainer's module was never fetched");
    // Chromium runs relaxed SIMD: the small module's relaxed build is fetched, and the simd128 one is not
    assert.ok(requested.some((u) => u.includes("kiln_core_relaxed_bg")), `the relaxed-SIMD build was fetched: ${requested.filter((u) => u.endsWith(".wasm")).join(", ")}`);
    assert.ok(!requested.some((u) => /kiln_core_bg[-.]/.test(u)), "the simd128 build was not fetched as well");
    await page.screenshot({ path: path.join(OUT_DIR, "app.png") });
    t.diagnostic(`the Vite app says: ${await result.textContent()}`);
  } finally {
    await browser.close();
    await server.stop();
  }
});
