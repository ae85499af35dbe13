// The JavaScript half of the journey: the 100 test images that tests/journey.py pushed through
// model.predict, onnxruntime and kiln.InferenceSession now go through kiln-wasm in Node and through
// the demo page in headless Chromium (with the page's own preprocessing). Every output must be within
// 1e-4 of every Python output, and the page must show the same top-1 labels. The figures are written
// to tests/out/agreement.json for the report.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { REPO, JOURNEY, KILN_PKG, OUT, readJourney, startServer, launchBrowser, openPage, waitForDemo } from "./harness.mjs";

const figures = {}; // runtime -> { vs each Python runtime: max |diff| }
after(() => {
  if (Object.keys(figures).length) writeFileSync(path.join(OUT, "agreement.json"), JSON.stringify(figures, null, 2));
});

/** Largest |a - b| over two flat lists, after checking they have one length. */
function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length, "output lengths differ");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const argmax = (row) => row.reduce((best, v, i) => (v > row[best] ? i : best), 0);

/** Compares one runtime's rows of outputs with every Python runtime's, records and asserts. */
function checkAgainstPython(t, name, rows, journey) {
  const result = {};
  for (const [ref, refRows] of Object.entries(journey.outputs)) {
    assert.equal(rows.length, refRows.length, `${name}: ${rows.length} rows vs ${refRows.length} from ${ref}`);
    result[ref] = Math.max(...rows.map((r, i) => maxAbsDiff(r, refRows[i])));
  }
  figures[name] = result;
  t.diagnostic(`${name}: max |diff| ${Object.entries(result).map(([k, v]) => `vs ${k} ${v.toExponential(2)}`).join(", ")}`);
  for (const [ref, d] of Object.entries(result)) {
    assert.ok(d <= journey.tolerance, `${name} differs from ${ref} by ${d} > ${journey.tolerance}`);
  }
}

test("the Python journey produced a model, 100 images and three agreeing outputs", () => {
  const j = readJourney();
  assert.equal(j.pixels.length, 100);
  assert.deepEqual(Object.keys(j.outputs).sort(), ["kiln_inference_session", "model_predict", "onnxruntime"]);
  for (const rows of Object.values(j.outputs)) assert.equal(rows.length, 100);
  figures.python = j.python_max_abs_diff;
  figures.accuracy = j.accuracy;
});

test("kiln-wasm in Node agrees with model.predict, onnxruntime and kiln.InferenceSession", async (t) => {
  const j = readJourney();
  const entry = path.join(KILN_PKG, "index.js");
  assert.ok(existsSync(entry), `${entry} is missing: build kiln-wasm with \`make wasm\``);
  const { loadModel } = await import(pathToFileURL(entry).href);
  const model = await loadModel(new Uint8Array(readFileSync(path.join(JOURNEY, "digits.onnx"))));
  try {
    assert.deepEqual(model.labels, j.labels, "labels read from the ONNX metadata");
    assert.equal(model.inputs[0].name, j.input_name);
    const [n, ...image] = j.input_dims;
    const per = image.reduce((a, b) => a * b, 1);
    // The same transform the page applies: ink counts * scale + offset, in float32.
    const x = Float32Array.from(j.pixels.flat(), (v) => v * j.scale + j.offset);

    const batch = model.run(x, j.input_dims);
    assert.deepEqual(Array.from(batch.dims), [n, j.labels.length]);
    const width = batch.dims[1];
    const rows = Array.from({ length: n }, (_, i) => Array.from(batch.data.subarray(i * width, (i + 1) * width)));
    checkAgainstPython(t, "kiln_wasm_node_batch", rows, j);

    // One image at a time, as the page runs it: batching must not change an answer.
    const single = Array.from({ length: n }, (_, i) => Array.from(model.run(x.subarray(i * per, (i + 1) * per), [1, ...image]).data));
    checkAgainstPython(t, "kiln_wasm_node_single", single, j);

    const top = model.classify(x.subarray(0, per), [1, ...image], { topK: 3 });
    assert.equal(top.length, 3);
    assert.equal(top[0].label, j.labels[argmax(j.outputs.onnxruntime[0])]);
    assert.ok(top[0].score >= top[1].score && top[1].score >= top[2].score, "classify sorts by score");
  } finally {
    model.free();
  }
});

test("the demo page in Chromium agrees and shows the same top-1 labels", { timeout: 180_000 }, async (t) => {
  const j = readJourney();
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const modelUrl = "/" + path.relative(REPO, path.join(JOURNEY, "digits.onnx")).split(path.sep).join("/");
    const { page, log } = await openPage(browser.context, server.url(`/web-demo/?model=${encodeURIComponent(modelUrl)}`));
    await waitForDemo(page, log);
    const model = await page.evaluate(() => window.kilnDemo.model);
    assert.equal(model.transform.scale, j.scale, "the page read the scale from the model's metadata");
    assert.equal(model.transform.offset, j.offset, "the page read the offset from the model's metadata");
    const rows = [], shown = [];
    for (const pixels of j.pixels) {
      // Through the page's own path: its preprocessing, its classify call, its DOM.
      const res = await page.evaluate((p) => window.kilnDemo.predictPixels(p), pixels);
      rows.push(res.output);
      shown.push(await page.locator("#guesses .guess:first-child .label").textContent());
    }
    checkAgainstPython(t, "demo_page_chromium", rows, j);
    const expected = j.outputs.onnxruntime.map((r) => j.labels[argmax(r)]);
    const mismatches = shown.map((s, i) => [i, s, expected[i]]).filter(([, s, e]) => s !== e);
    figures.demo_page_top1_matches = `${100 - mismatches.length}/100`;
    assert.deepEqual(mismatches, [], "top-1 label shown on the page vs onnxruntime's argmax");
    const correct = shown.filter((s, i) => s === String(j.true_labels[i])).length;
    t.diagnostic(`page top-1 = python top-1 on ${100 - mismatches.length}/100 images; ${correct}/100 equal the true label`);
  } finally {
    await browser.close();
    await server.stop();
  }
});
