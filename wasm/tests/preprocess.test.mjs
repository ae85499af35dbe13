// Images straight in: a model exported with kiln.Preprocess takes RGBA pixels ({ data, width, height },
// the shape of an ImageData) in run / classify / preprocess, on the main thread and in the worker, and
// prepares them into the same tensor as Python's kiln.Preprocess.apply (py-bindings/tests/image_case.py).
// The browser's image types (canvas, <img>, ImageBitmap, VideoFrame…) are tests/e2e/image.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../pkg/index.js';
import { loadModel as loadInWorker, terminate } from '../pkg/worker.js';
import { maxAbsDiff, modelPath } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
let dir;
let image;
let expected;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kiln-image-'));
  execFileSync(process.env.KILN_PYTHON, [path.join(here, '../../py-bindings/tests/image_case.py'), dir]);
  const img = JSON.parse(readFileSync(path.join(dir, 'image.json'), 'utf8'));
  image = { data: Uint8ClampedArray.from(img.rgba), width: img.width, height: img.height };
  expected = JSON.parse(readFileSync(path.join(dir, 'expected.json'), 'utf8'));
});
after(async () => {
  await terminate();
  rmSync(dir, { recursive: true, force: true });
});

test("an image becomes the tensor Python's kiln.Preprocess.apply makes, to 1e-6", async () => {
  const model = await loadModel(path.join(dir, 'model.onnx'));
  const x = model.preprocess(image);
  assert.equal(x.length, expected.input.length);
  assert.ok(maxAbsDiff(x, expected.input) <= 1e-6, `max |diff| ${maxAbsDiff(x, expected.input)}`);
  const fromImage = model.run(image);
  assert.deepEqual(fromImage.dims, [1, 5]);
  assert.deepEqual(Array.from(fromImage.data), Array.from(model.run(x, expected.dims).data));
  assert.ok(maxAbsDiff(fromImage.data, expected.output) < 1e-5, 'and the output is Python\'s predict');
  const top = model.classify(image, { topK: 2 });
  assert.equal(top.length, 2);
  assert.equal(top[0].label, 'abcde'[expected.output.indexOf(Math.max(...expected.output))]);
  const plain = { data: Uint8Array.from(image.data), width: image.width, height: image.height };
  assert.deepEqual(Array.from(model.preprocess(plain)), Array.from(x), 'Uint8Array pixels too');
});

test('in the worker, run(image) and classify(image) give the same', async () => {
  const model = await loadInWorker(path.join(dir, 'model.onnx'));
  const out = await model.run(image);
  assert.ok(maxAbsDiff(out.data, expected.output) < 1e-5);
  assert.equal((await model.classify(image, { topK: 1 })).length, 1);
});

test('an image for a model that declares no preprocessing, or pixels that do not add up, say what is wrong', async () => {
  const model = await loadModel(path.join(dir, 'model.onnx'));
  assert.throws(() => model.run({ data: new Uint8ClampedArray(10), width: 3, height: 3 }), /Float32Array|expects|dims|length|image/);
  const plain = await loadModel(modelPath('mlp.onnx'));
  assert.throws(() => plain.run(image), /declares no preprocessing.*export_onnx\(\.\.\., preprocess=kiln\.Preprocess/);
  assert.throws(() => model.preprocess({ width: 2 }), /ImageData, ImageBitmap, canvas, OffscreenCanvas, <img> or VideoFrame/);
});
