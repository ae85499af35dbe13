// Every error path of kiln-wasm: each is an Error whose message says what was wrong, and the
// module (and the same model) keeps working after it.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';

import { loadModel } from '../pkg/index.js';
import { modelBytes, modelPath, pixels } from './helpers.mjs';

let cnn;
let reference;
before(async () => {
  cnn = await loadModel(modelPath('digits_cnn.onnx'));
  reference = cnn.run(pixels(1), [1, 1, 8, 8]).data;
});

/** After an error, the model still answers, and answers the same. */
function stillWorks() {
  assert.deepEqual(cnn.run(pixels(1), [1, 1, 8, 8]).data, reference);
}

async function rejectsLoad(source, pattern, type = Error) {
  await assert.rejects(loadModel(source), (e) => {
    assert.ok(e instanceof type, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    assert.doesNotMatch(e.message, /unreachable/);
    return true;
  });
  stillWorks();
}

function throwsRun(call, pattern, type = Error) {
  assert.throws(call, (e) => {
    assert.ok(e instanceof type, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
  stillWorks();
}

test('empty, random, truncated and non-ONNX bytes', async () => {
  await rejectsLoad(new Uint8Array(0), /not a valid ONNX model: the data is empty/);
  const noise = new Uint8Array(4096);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
  await rejectsLoad(noise, /not a valid ONNX model/);
  const whole = modelBytes('digits_cnn.onnx');
  for (const cut of [10, whole.length >> 1, whole.length - 7]) {
    await rejectsLoad(whole.subarray(0, cut), /not a valid ONNX model|truncated/);
  }
  await rejectsLoad(new TextEncoder().encode('{"this": "is JSON, not ONNX"}'), /not a valid ONNX model/);
});

test('an unsupported operator is named, with its node', async () => {
  await rejectsLoad(modelPath('unsupported_op.onnx'), /unsupported ONNX operator "Col2Im".*"fold"/);
});

test('sources that cannot be read', async () => {
  await rejectsLoad(42, /loadModel takes a URL string, Uint8Array, ArrayBuffer, Response or Blob, not number/, TypeError);
  await rejectsLoad({ bytes: 1 }, /not Object/, TypeError);
  await rejectsLoad(modelPath('no_such_model.onnx'), /cannot read the model file .*no_such_model\.onnx/);
  await rejectsLoad(new Response('gone', { status: 410, statusText: 'Gone' }), /HTTP 410 Gone/);
  const server = createServer((req, res) => res.writeHead(404, 'Not Found').end());
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await rejectsLoad(`http://127.0.0.1:${server.address().port}/model.onnx`, /cannot fetch the model from .*model\.onnx: HTTP 404 Not Found/);
  } finally {
    server.close();
  }
});

test('data that does not fill dims: expected vs got', () => {
  throwsRun(() => cnn.run(new Float32Array(63), [1, 1, 8, 8]), /input "x": dims \[1, 1, 8, 8\] need 64 values, the data has 63/);
  throwsRun(() => cnn.run(new Float32Array(64), [1, 1, 8, -8]), /dims \[1, 1, 8, -8\] must be whole numbers/, TypeError);
  throwsRun(() => cnn.run(new Float32Array(64), 64), /dims must be an array/, TypeError);
});

test('wrong rank or a wrong fixed dimension: the expected shape and the one given', () => {
  throwsRun(() => cnn.run(new Float32Array(64), [1, 64]), /input "x": expected shape \[\?, 1, 8, 8\] \(float32\), got \[1, 64\]/);
  throwsRun(() => cnn.run(new Float32Array(64), [1, 1, 4, 16]), /expected shape \[\?, 1, 8, 8\].*got \[1, 1, 4, 16\]/);
  throwsRun(() => cnn.run(new Float32Array(64), [1, 8, 8]), /expected shape \[\?, 1, 8, 8\].*got \[1, 8, 8\]/);
});

test('the wrong element type', () => {
  throwsRun(() => cnn.run(new Float64Array(64), [1, 1, 8, 8]), /input "x" wants float32 values \(Float32Array\), got Float64Array/, TypeError);
  throwsRun(() => cnn.run('pixels', [1, 1, 8, 8]), /wants float32 values/, TypeError);
});

test('int64 inputs refuse floats', async () => {
  const emb = await loadModel(modelPath('embedding.onnx'));
  throwsRun(() => emb.run(new Float32Array(4), [2, 2]), /input "ids" wants int64 values \(BigInt64Array or Int32Array\), got Float32Array/, TypeError);
  emb.free();
});

test('runMany: unknown, missing and mismatched inputs', async () => {
  const two = await loadModel(modelPath('two_in_two_out.onnx'));
  const a = { data: new Float32Array(8), dims: [2, 4] };
  throwsRun(() => two.run(new Float32Array(8), [2, 4]), /the model has 2 inputs \("a", "b"\): use runMany/);
  throwsRun(() => two.runMany({ a, c: a }), /the model has no input "c" \(its inputs: "a", "b"\)/);
  throwsRun(() => two.runMany({ a }), /missing input "b"/);
  throwsRun(() => two.runMany({ a, b: { data: new Float32Array(12), dims: [3, 4] } }), /input "b": dimension 0 is 3 but input "a" sets the same free dimension to 2/);
  throwsRun(() => two.runMany({ a, b: new Float32Array(8) }), /input "b" must be \{ data, dims \}/, TypeError);
  throwsRun(() => two.runMany([a]), /runMany takes an object/, TypeError);
  assert.deepEqual(two.runMany({ a, b: a }).sum.dims, [2, 4], 'the model itself still works');
  two.free();
});

test('classify on something that is not one example of class scores', async () => {
  throwsRun(() => cnn.classify(pixels(2), [2, 1, 8, 8]), /classify takes one example, got a batch of 2/);
  const typedOut = await loadModel(modelPath('typed_outputs.onnx'));
  assert.throws(() => typedOut.classify(new Float32Array(3), [1, 3]), /classify needs a float output of class scores/);
  typedOut.free();
  stillWorks();
});

test("a long graph kiln's engine declines: loadModel warns before tract's slow load, and it still runs", async () => {
  const warnings = [];
  const warn = console.warn;
  console.warn = (...a) => warnings.push(a.join(' '));
  try {
    const model = await loadModel(modelPath('long_chain.onnx'));
    assert.equal(model.engine, 'tract', 'kiln has no Sin: tract runs it');
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /declined this model, so tract loads it; its 2,001 nodes will take a while/);
    assert.match(warnings[0], /kiln-wasm\/worker/);
    const y = await model.run(new Float32Array([-1, 0, 0.5, 2]), [1, 4]);
    assert.deepEqual(Array.from(y.data, (v) => Math.round(v * 1e6) / 1e6), [0, 0, 0.479426, 0.909297]);
    model.free();
    warnings.length = 0;
    (await loadModel(modelPath('unsupported_op.onnx')).catch(() => null));
    assert.deepEqual(warnings, [], 'a short declined graph loads without a word');
  } finally {
    console.warn = warn;
  }
});
