// The page's preprocessing and ONNX metadata reader, in Node (no browser): the same modules the page
// imports, checked against what scikit-learn's digits look like.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import {
  strokesToPixels, normalizeStrokes, boundingBox, inputTransform, toModelInput, BITMAP, FIT, TARGET_INK, MAX_VALUE,
} from "../../web-demo/preprocess.js";
import { readOnnxInfo, labelsFromMetadata } from "../../web-demo/onnx-metadata.js";
import { REPO, OUT } from "./harness.mjs";

const ring = (cx, cy, r, n = 40) => Array.from({ length: n + 1 }, (_, i) => [cx + r * Math.cos((2 * Math.PI * i) / n), cy + r * 1.4 * Math.sin((2 * Math.PI * i) / n)]);
const sum = (a) => a.reduce((x, y) => x + y, 0);

test("strokes are fitted and centred in the 32x32 box whatever their size and place", () => {
  const norm = normalizeStrokes([ring(500, 300, 40)]);
  const box = boundingBox(norm);
  assert.ok(Math.abs(box.maxY - box.minY - FIT) < 1e-9, "the longer side spans FIT");
  assert.ok(Math.abs((box.minX + box.maxX) / 2 - BITMAP / 2) < 1e-9 && Math.abs((box.minY + box.maxY) / 2 - BITMAP / 2) < 1e-9);
  const small = strokesToPixels([ring(50, 60, 10)]);
  const big = strokesToPixels([ring(140, 140, 100)]);
  assert.deepEqual(Array.from(small), Array.from(big), "drawing small in a corner or big in the middle gives one image");
});

test("a drawing becomes 8x8 ink counts 0..16 with the originals' amount of ink", () => {
  const zero = strokesToPixels([ring(140, 140, 80)]);
  assert.equal(zero.length, 64);
  assert.ok(zero.every((v) => Number.isInteger(v) && v >= 0 && v <= MAX_VALUE));
  assert.ok(Math.abs(sum(zero) - TARGET_INK) < 25, `ink ${sum(zero)} near ${TARGET_INK}`);
  assert.equal(zero[3 * 8 + 3] + zero[3 * 8 + 4] + zero[4 * 8 + 3] + zero[4 * 8 + 4], 0, "a 0 has a hole in the middle");
  // A vertical bar (a 1) fills the middle columns top to bottom and nothing at the sides.
  const one = strokesToPixels([[[100, 20], [100, 260]]]);
  for (let r = 0; r < 8; r++) {
    assert.ok(one[r * 8 + 3] + one[r * 8 + 4] >= 16, `row ${r} has ink in the middle`);
    assert.equal(one[r * 8] + one[r * 8 + 7], 0, `row ${r} is empty at the edges`);
  }
});

test("edge cases: no strokes, a single tap, bad points", () => {
  assert.equal(sum(strokesToPixels([])), 0);
  assert.equal(sum(strokesToPixels([[]])), 0);
  const tap = strokesToPixels([[[10, 10]]]);
  assert.ok(sum(tap) > 0 && tap.every(Number.isFinite), "a tap is a dot in the middle");
  assert.ok(tap[3 * 8 + 3] > 0 && tap[0] === 0);
  assert.throws(() => strokesToPixels([[[0, 0], [NaN, 3]]]), /not a number/);
});

test("the input transform comes from the model's metadata", () => {
  assert.deepEqual(inputTransform({ "kiln.input_scale": "0.0625", "kiln.input_offset": "-0.5" }), { scale: 0.0625, offset: -0.5, fromModel: true });
  assert.deepEqual(inputTransform({}), { scale: 1, offset: 0, fromModel: false }, "no metadata: raw 0..16");
  assert.throws(() => inputTransform({ "kiln.input_scale": "a lot" }), /kiln.input_scale="a lot" is not a number/);
  assert.deepEqual(Array.from(toModelInput([0, 8, 16], { scale: 1 / 16, offset: -0.5 })), [-0.5, 0, 0.5]);
});

test("the shipped model's metadata is readable and the page can preprocess for it", () => {
  const info = readOnnxInfo(readFileSync(path.join(REPO, "web-demo/model/digits.onnx")));
  assert.deepEqual(labelsFromMetadata(info.metadata), ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  const t = inputTransform(info.metadata);
  assert.ok(t.fromModel && t.scale > 0, `shipped model declares its input scale: ${JSON.stringify(info.metadata)}`);
  assert.ok(info.opsets.some((o) => o.domain === "" && o.version >= 17), "opset >= 17");
  const samples = JSON.parse(readFileSync(path.join(REPO, "web-demo/model/digits.json"), "utf8"));
  assert.equal(samples.pixels.length, samples.labels.length);
  for (const p of samples.pixels) assert.ok(p.length === 64 && p.every((v) => v >= 0 && v <= 16));
});

test("the metadata reader reads other tools' files and refuses garbage", () => {
  const iris = readOnnxInfo(readFileSync(path.join(OUT, "picker/iris.onnx")));
  assert.deepEqual(labelsFromMetadata(iris.metadata), ["setosa", "versicolor", "virginica"]);
  assert.equal(iris.producer, "kiln-tests");
  assert.throws(() => readOnnxInfo(readFileSync(path.join(OUT, "picker/broken.onnx"))), /past the end|truncated/);
  assert.throws(() => readOnnxInfo(new TextEncoder().encode("This is a note, not an ONNX model.\n")));
  assert.equal(labelsFromMetadata({ "kiln.labels": "{not json" }), null);
});
