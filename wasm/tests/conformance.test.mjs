// Every model in cases.json (kiln's own export, onnx.helper graphs and skl2onnx pipelines, built
// during the test run) through kiln-wasm — with the engine loadModel picks, and with tract forced —
// each output compared with onnxruntime's to 1e-4 (same dims, same element type, same values), and
// kiln's export also with kiln.InferenceSession's.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { loadModel } from '../pkg/index.js';
import { cases, modelBytes, typed, maxAbsDiff } from './helpers.mjs';

const TOLERANCE = 1e-4;

test('cases.json covers the tools and element types it should', () => {
  assert.ok(cases.length >= 10, `only ${cases.length} cases`);
  assert.ok(cases.some((c) => c.tool === 'skl2onnx'), 'no skl2onnx model');
  assert.ok(cases.some((c) => c.tool === 'kiln'), 'no model exported by kiln');
  const types = new Set(cases.flatMap((c) => [...c.inputs, ...c.outputs].map((t) => t.type)));
  for (const t of ['float16', 'float32', 'float64', 'int64', 'uint8', 'bool']) assert.ok(types.has(t), `no ${t} tensor in the cases`);
});

// The models kiln's own engine must run (the rest may go to tract).
const KILN_ENGINE = new Set(['kiln_digits.onnx', 'kiln_int8.onnx', 'kiln_resnet.onnx', 'kiln_two_inputs.onnx', 'digits_cnn.onnx', 'mlp.onnx', 'mlp_softmax.onnx', 'two_in_two_out.onnx', 'embedding.onnx']);

test("kiln's engine takes kiln's exports, plain MLPs/CNNs and token-id pooling, and declines the rest to tract", async () => {
  for (const c of cases) {
    const model = await loadModel(modelBytes(c.model));
    assert.equal(model.engine, KILN_ENGINE.has(c.model) ? 'kiln' : 'tract', c.model);
    model.free();
  }
  await assert.rejects(loadModel(modelBytes('typed_outputs.onnx'), { engine: 'kiln' }), /kiln's engine does not run this model \(operator ArgMax\)/);
  await assert.rejects(loadModel(modelBytes('mlp.onnx'), { engine: 'fast' }), TypeError);
});

for (const c of cases) for (const engine of ['auto', 'tract']) {
  test(`matches onnxruntime: ${c.name} (${c.model}, engine ${engine})`, async () => {
    const model = await loadModel(modelBytes(c.model), { engine });
    try {
      assert.deepEqual(model.inputs.map((i) => i.name), c.inputs.map((i) => i.name));
      assert.deepEqual(model.outputs.map((o) => o.name), c.outputs.map((o) => o.name));
      const feeds = Object.fromEntries(c.inputs.map((i) => [i.name, { data: typed(i), dims: i.dims }]));
      const got = model.runMany(feeds);
      assert.deepEqual(Object.keys(got), c.outputs.map((o) => o.name));
      for (const want of c.outputs) {
        const out = got[want.name];
        assert.deepEqual(out.dims, want.dims, `${want.name}: dims`);
        assert.equal(out.data.constructor, typed(want).constructor, `${want.name}: element type ${want.type}`);
        const diff = maxAbsDiff(out.data, want.data);
        assert.ok(diff <= TOLERANCE, `${want.name}: max |kiln - onnxruntime| = ${diff} > ${TOLERANCE}`);
      }
      if (c.labels) assert.deepEqual(model.labels, c.labels, 'labels from the ONNX metadata');
      for (const want of c.native ?? []) {
        // The same engine natively (kiln.InferenceSession): float rounding apart, the same numbers.
        const diff = maxAbsDiff(got[want.name].data, want.data);
        assert.ok(diff <= 1e-5, `${want.name}: max |kiln-wasm - kiln.InferenceSession| = ${diff}`);
      }
      if (c.inputs.length === 1) {
        // run() is runMany() for one input, returning the first output.
        const one = model.run(typed(c.inputs[0]), c.inputs[0].dims);
        assert.deepEqual(one.dims, c.outputs[0].dims);
        assert.ok(maxAbsDiff(one.data, c.outputs[0].data) <= TOLERANCE);
      }
    } finally {
      model.free();
    }
  });
}
