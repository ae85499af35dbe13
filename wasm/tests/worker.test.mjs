// kiln-wasm/worker: the same API, async, with the model in a worker (a worker thread in Node; a
// Web Worker in pages). Results and errors must match the in-thread package exactly.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import * as direct from '../pkg/index.js';
import { loadModel, terminate, WorkerModel } from '../pkg/worker.js';
import { modelBytes, modelPath, pixels } from './helpers.mjs';

after(() => terminate());

test('a worker model describes itself like a direct one and runs asynchronously', async () => {
  const [w, d] = await Promise.all([loadModel(modelPath('digits_cnn.onnx')), direct.loadModel(modelPath('digits_cnn.onnx'))]);
  assert.ok(w instanceof WorkerModel);
  for (const key of ['inputs', 'outputs', 'labels', 'metadata', 'engine', 'simd']) assert.deepEqual(w[key], d[key], key);
  assert.ok(['simd128', 'relaxed-simd'].includes(w.simd), `the worker's module says which build it is: ${w.simd}`);
  const pending = w.run(pixels(1), [1, 1, 8, 8]);
  assert.ok(pending instanceof Promise, 'run returns a promise');
  const got = await pending;
  assert.deepEqual(got, d.run(pixels(1), [1, 1, 8, 8]));
  const batch = await w.run(pixels(64, 3), [64, 1, 8, 8]);
  assert.deepEqual(batch.dims, [64, 10]);
  assert.deepEqual(await w.classify(pixels(1), [1, 1, 8, 8], { topK: 2 }), d.classify(pixels(1), [1, 1, 8, 8], { topK: 2 }));
  await w.free();
  d.free();
});

test('runMany, typed outputs and bytes as the source', async () => {
  const w = await loadModel(modelBytes('typed_outputs.onnx'));
  const out = await w.runMany({ x: { data: Float32Array.from([1, -2, 3, -4, 5, -6]), dims: [2, 3] } });
  assert.deepEqual(out.best, { data: BigInt64Array.from([2n, 1n]), dims: [2] });
  assert.deepEqual(out.positive.data, Uint8Array.from([1, 0, 1, 0, 1, 0]));
  await w.free();
  const r = await loadModel(new Response(modelBytes('mlp.onnx')));
  assert.deepEqual((await r.run(pixels(1), [1, 64])).dims, [1, 10]);
  await r.free();
});

test('the caller keeps its input buffers (they are copied, not moved)', async () => {
  const w = await loadModel(modelPath('mlp.onnx'));
  const x = pixels(1);
  await w.run(x, [1, 64]);
  assert.equal(x.length, 64, 'not detached');
  await w.free();
});

test('errors arrive as Errors with the same messages, and the worker keeps working', async () => {
  await assert.rejects(loadModel(new Uint8Array([1, 2, 3])), /kiln-wasm: not a valid ONNX model/);
  await assert.rejects(loadModel(modelPath('unsupported_op.onnx')), /unsupported ONNX operator "Col2Im"/);
  const w = await loadModel(modelPath('digits_cnn.onnx'));
  await assert.rejects(w.run(new Float32Array(63), [1, 1, 8, 8]), /need 64 values, the data has 63/);
  await assert.rejects(w.run(new Float32Array(64), [1, 64]), /expected shape \[\?, 1, 8, 8\]/);
  await assert.rejects(w.run(new Float64Array(64), [1, 1, 8, 8]), (e) => e instanceof TypeError && /wants float32/.test(e.message));
  assert.deepEqual((await w.run(pixels(1), [1, 1, 8, 8])).dims, [1, 10]);
  await w.free();
  await assert.rejects(w.run(pixels(1), [1, 1, 8, 8]), /freed/);
});

test('concurrent requests from several models are answered in full', async () => {
  const models = await Promise.all([loadModel(modelPath('mlp.onnx')), loadModel(modelPath('digits_cnn.onnx'))]);
  const runs = [];
  for (let i = 0; i < 20; i++) {
    runs.push(models[0].run(pixels(1, i), [1, 64]), models[1].run(pixels(1, i), [1, 1, 8, 8]));
  }
  const results = await Promise.all(runs);
  assert.equal(results.length, 40);
  for (const r of results) assert.deepEqual(r.dims, [1, 10]);
  await Promise.all(models.map((m) => m.free()));
});
