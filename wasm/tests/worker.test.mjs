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

test('threads: a batch splits across workers by rows and comes back as one batch run alone would give', async () => {
  const one = await loadModel(modelPath('digits_cnn.onnx'));
  const two = await loadModel(modelPath('digits_cnn.onnx'), { threads: 2 });
  assert.equal(one.threads.count, 1);
  assert.match(one.threads.reason, /one worker/);
  assert.equal(two.threads.count, 2);
  assert.match(two.threads.reason, /2 workers, each with its own copy of the model.*splits a batch across them by rows/);
  for (const batch of [1, 2, 5, 64]) {
    const x = pixels(batch, 7);
    const [a, b] = await Promise.all([one.run(x, [batch, 1, 8, 8]), two.run(x, [batch, 1, 8, 8])]);
    assert.deepEqual(b.dims, [batch, 10]);
    assert.ok(b.data instanceof Float32Array);
    assert.deepEqual(Array.from(b.data), Array.from(a.data), `batch ${batch}`);
    assert.equal(x.length, batch * 64, 'the caller keeps its input');
  }
  // single examples spread over the copies and give the same answers
  const singles = await Promise.all([0, 1, 2, 3].map((s) => two.classify(pixels(1, s), [1, 1, 8, 8], { topK: 1 })));
  const direct1 = await Promise.all([0, 1, 2, 3].map((s) => one.classify(pixels(1, s), [1, 1, 8, 8], { topK: 1 })));
  assert.deepEqual(singles, direct1);
  await assert.rejects(two.run(pixels(2), [2, 1, 8, 9]), /8|9|shape|dimension/, 'a wrong shape still gets the error');
  await two.free();
  await assert.rejects(two.run(pixels(1), [1, 1, 8, 8]), /freed/);
  const auto = await loadModel(modelPath('mlp.onnx'), { threads: 'auto' });
  assert.ok(auto.threads.count >= 1 && auto.threads.count <= 4);
  await auto.free();
  await one.free();
});

test('threads: bad values are refused; integer outputs join too', async () => {
  for (const bad of [0, 1.5, -1, 17, 'two', null]) {
    await assert.rejects(loadModel(modelPath('mlp.onnx'), { threads: bad }), (e) => e instanceof TypeError && /threads must be a whole number from 1 to 16 or "auto"/.test(e.message), String(bad));
  }
  const typed = await loadModel(modelPath('typed_outputs.onnx'), { threads: 2 });
  const x = Float32Array.from([1, -2, 3, -4, 5, -6, 0.5, 9, -1]);
  assert.deepEqual(await typed.run(x, [3, 3]), { data: BigInt64Array.from([2n, 1n, 1n]), dims: [3] });
  const out = await typed.runMany({ x: { data: x.slice(0, 6), dims: [2, 3] } });
  assert.deepEqual(out.best, { data: BigInt64Array.from([2n, 1n]), dims: [2] });
  await typed.free();
});
