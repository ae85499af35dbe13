// kiln-wasm's public API in Node: every way to load a model, the model's description, run,
// runMany, classify and free.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

import { init, loadModel, Model } from '../pkg/index.js';
import { modelBytes, modelPath, pixels, maxAbsDiff } from './helpers.mjs';

let server;
let baseUrl;
before(async () => {
  // A loopback server: loadModel(url) fetches over HTTP as it does in a page.
  server = createServer((req, res) => {
    const name = req.url.slice(1);
    if (!/^[a-z_0-9]+\.onnx$/.test(name)) return res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(readFileSync(modelPath(name)));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

test('init happens once and is shared', async () => {
  const a = init();
  const b = init();
  assert.equal(a, b, 'two init() calls return the same promise');
  await a;
  const [m1, m2] = await Promise.all([loadModel(modelPath('mlp.onnx')), loadModel(modelPath('mlp.onnx'))]);
  assert.equal(init(), a, 'loadModel reuses the initialisation');
  m1.free();
  m2.free();
});

test('loadModel accepts every documented source and they agree', async () => {
  const bytes = modelBytes('mlp.onnx');
  const sources = {
    'file path': modelPath('mlp.onnx'),
    'file: URL string': pathToFileURL(modelPath('mlp.onnx')).href,
    'URL object': pathToFileURL(modelPath('mlp.onnx')),
    'http URL': `${baseUrl}/mlp.onnx`,
    Uint8Array: bytes,
    ArrayBuffer: bytes.slice().buffer,
    'Node Buffer': readFileSync(modelPath('mlp.onnx')),
    'Uint8Array view into a larger buffer': (() => {
      const big = new Uint8Array(bytes.length + 16);
      big.set(bytes, 8);
      return big.subarray(8, 8 + bytes.length);
    })(),
    Response: new Response(bytes),
    'fetch Response': await fetch(`${baseUrl}/mlp.onnx`),
    Blob: new Blob([bytes]),
  };
  const x = pixels(1);
  let reference = null;
  for (const [what, source] of Object.entries(sources)) {
    const model = await loadModel(source);
    assert.ok(model instanceof Model, what);
    const out = model.run(x, [1, 64]);
    reference ??= out.data;
    assert.deepEqual(out.data, reference, `${what} gives the same model`);
    model.free();
  }
});

test('inputs, outputs, labels and metadata describe the graph', async () => {
  const model = await loadModel(modelPath('digits_cnn.onnx'));
  assert.deepEqual(model.inputs, [{ name: 'x', dims: [null, 1, 8, 8], type: 'float32' }]);
  assert.deepEqual(model.outputs, [{ name: 'logits', dims: [null, 10], type: 'float32' }]);
  assert.deepEqual(model.labels, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  assert.equal(model.metadata['kiln.version'], 'test');
  assert.ok(Object.isFrozen(model) && Object.isFrozen(model.inputs) && Object.isFrozen(model.inputs[0].dims));
  const typedOut = await loadModel(modelPath('typed_outputs.onnx'));
  assert.deepEqual(typedOut.outputs.map((o) => [o.name, o.type, o.dims]), [['best', 'int64', [null]], ['positive', 'bool', [null, 3]]]);
  assert.equal(typedOut.labels, null);
  model.free();
  typedOut.free();
});

test('run returns { data, dims } copied out of wasm memory once', async () => {
  const model = await loadModel(modelPath('digits_cnn.onnx'));
  const a = model.run(pixels(1, 1), [1, 1, 8, 8]);
  assert.ok(a.data instanceof Float32Array);
  assert.deepEqual(a.dims, [1, 10]);
  // Its own buffer, exactly as large as the data: not a view of wasm memory that the next
  // call (or memory growth) would overwrite or detach.
  assert.equal(a.data.buffer.byteLength, a.data.byteLength);
  const kept = Float32Array.from(a.data);
  const b = model.run(pixels(64, 2), [64, 1, 8, 8]);
  assert.deepEqual(b.dims, [64, 10]);
  assert.deepEqual(a.data, kept, 'an earlier result is untouched by later runs');
  // Batch rows are independent: row 0 of a batch equals the same example alone.
  const alone = model.run(pixels(64, 2).subarray(0, 64), [1, 1, 8, 8]);
  assert.ok(maxAbsDiff(b.data.subarray(0, 10), alone.data) < 1e-5);
  model.free();
});

test('run converts plain arrays, and int64 inputs take BigInt64Array, Int32Array or numbers', async () => {
  const mlp = await loadModel(modelPath('mlp.onnx'));
  const x = pixels(1);
  assert.deepEqual(mlp.run(Array.from(x), [1, 64]).data, mlp.run(x, [1, 64]).data);
  mlp.free();
  const emb = await loadModel(modelPath('embedding.onnx'));
  const ids = [3, 1, 4, 1, 5, 9];
  const want = emb.run(BigInt64Array.from(ids, BigInt), [2, 3]);
  assert.deepEqual(want.dims, [2, 4]);
  assert.deepEqual(emb.run(Int32Array.from(ids), [2, 3]), want);
  assert.deepEqual(emb.run(ids, [2, 3]), want);
  emb.free();
  const u8 = await loadModel(modelPath('pixels_u8.onnx'));
  const y = u8.run(new Uint8Array([0, 51, 102, 255]), [1, 4]);
  assert.ok(maxAbsDiff(y.data, [0, 0.2, 0.4, 1]) < 1e-6);
  u8.free();
});

test('runMany takes named inputs and returns every output by name', async () => {
  const model = await loadModel(modelPath('two_in_two_out.onnx'));
  const a = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const b = Float32Array.from([8, 7, 6, 5, 4, 3, 2, 1]);
  const out = model.runMany({ b: { data: b, dims: [2, 4] }, a: { data: a, dims: [2, 4] } });
  assert.deepEqual(Object.keys(out), ['sum', 'mixed']);
  assert.deepEqual(Array.from(out.sum.data), [9, 9, 9, 9, 9, 9, 9, 9]);
  assert.deepEqual(out.mixed.dims, [2, 4]);
  const typedOut = await loadModel(modelPath('typed_outputs.onnx'));
  const t = typedOut.runMany({ x: { data: Float32Array.from([1, -2, 3, -4, 5, -6]), dims: [2, 3] } });
  assert.deepEqual(t.best.data, BigInt64Array.from([2n, 1n]));
  assert.deepEqual(t.positive.data, Uint8Array.from([1, 0, 1, 0, 1, 0]));
  model.free();
  typedOut.free();
});

test('classify softmaxes logits, pairs scores with labels and honours topK', async () => {
  const model = await loadModel(modelPath('mlp.onnx'));
  const x = pixels(1, 3);
  const all = model.classify(x, [1, 64]);
  assert.equal(all.length, 10);
  assert.ok(Math.abs(all.reduce((s, p) => s + p.score, 0) - 1) < 1e-6, 'scores are probabilities');
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].score >= all[i].score, 'best first');
  const logits = model.run(x, [1, 64]).data;
  const best = logits.indexOf(Math.max(...logits));
  assert.equal(all[0].index, best);
  assert.equal(all[0].label, model.labels[best]);
  const top3 = model.classify(x, [1, 64], { topK: 3 });
  assert.deepEqual(top3, all.slice(0, 3));
  model.free();
});

test('classify keeps probabilities that the model already outputs, and falls back to indices', async () => {
  const model = await loadModel(modelPath('mlp_softmax.onnx'));
  const x = pixels(1, 5);
  const probs = model.run(x, [1, 64]).data;
  const top = model.classify(x, [1, 64], { topK: 10 });
  for (const p of top) {
    assert.ok(Math.abs(p.score - probs[p.index]) < 1e-6, 'not softmaxed twice');
    assert.equal(p.label, String(p.index), 'no labels in the model: the index is the label');
  }
  model.free();
  // skl2onnx classifiers output an int64 label first and the probabilities second.
  const sk = await loadModel(modelPath('sk_logreg.onnx'));
  const [first] = sk.classify(Float32Array.from([6.3, 3.3, 6.0, 2.5]), [1, 4]); // an iris virginica
  assert.equal(first.index, 2);
  assert.ok(first.score > 0.5);
  sk.free();
});

test('free releases the model; using it afterwards is an error, freeing twice is not', async () => {
  const model = await loadModel(modelPath('mlp.onnx'));
  model.free();
  model.free();
  assert.throws(() => model.run(pixels(1), [1, 64]), /freed/);
  assert.throws(() => model.classify(pixels(1), [1, 64]), /freed/);
});
