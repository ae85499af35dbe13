// Is the page's preprocessing faithful enough for the shipped model to read people's drawings? Every
// style in shapes.mjs goes through web-demo/preprocess.js and kiln-wasm in Node, as the page does it.
// The model only ever saw scikit-learn's scans, so a few odd styles may fail; most must not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { strokesToPixels, toModelInput, inputTransform } from "../../web-demo/preprocess.js";
import { DRAWN_DIGITS } from "./shapes.mjs";
import { REPO, KILN_PKG } from "./harness.mjs";

const MIN_ACCURACY = 0.8;

test(`the shipped model reads at least ${MIN_ACCURACY * 100}% of drawn digits, and every digit in some style`, async (t) => {
  const entry = path.join(KILN_PKG, "index.js");
  assert.ok(existsSync(entry), `${entry} is missing: build kiln-wasm with \`make wasm\``);
  const { loadModel } = await import(pathToFileURL(entry).href);
  const model = await loadModel(new Uint8Array(readFileSync(path.join(REPO, "web-demo/model/digits.onnx"))));
  try {
    const transform = inputTransform(model.metadata);
    let right = 0, total = 0;
    const misses = [], readDigits = new Set();
    for (const [digit, styles] of Object.entries(DRAWN_DIGITS)) {
      styles.forEach((strokes, style) => {
        // Canvas pixels of a 280-pixel pad, as the page records them.
        const pixels = strokesToPixels(strokes.map((s) => s.map(([x, y]) => [x * 280, y * 280])));
        const [top] = model.classify(toModelInput(pixels, transform), model.inputs[0].dims.map((d) => d ?? 1), { topK: 1 });
        total++;
        if (top.label === digit) { right++; readDigits.add(digit); } else misses.push(`${digit} (style ${style}) read as ${top.label}`);
      });
    }
    t.diagnostic(`${right}/${total} drawn digits read correctly${misses.length ? `; misses: ${misses.join(", ")}` : ""}`);
    assert.ok(right / total >= MIN_ACCURACY, `${right}/${total} < ${MIN_ACCURACY}: ${misses.join(", ")}`);
    assert.deepEqual([...readDigits].sort(), Object.keys(DRAWN_DIGITS).sort(), `digits never read: ${misses.join(", ")}`);
  } finally {
    model.free();
  }
});
