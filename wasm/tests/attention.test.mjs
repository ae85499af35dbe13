// Attention in the page: a transformer kiln exported (MultiheadAttention as MatMul/Softmax/…, a
// key-padding mask as a 0/1 input, the causal mask as a constant) runs on kiln's own engine in the
// small kiln_core module, not on tract, and gives Python's predictions. attention.json is written
// by make_models.py (kiln_attention) from the kiln models themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../pkg/index.js';
import { modelPath, typed, maxAbsDiff } from './helpers.mjs';

const ref = JSON.parse(readFileSync(modelPath('attention.json'), 'utf8'));

for (const [name, want] of Object.entries(ref)) {
  test(`${name}: runs on kiln's engine and matches Python's predictions`, async () => {
    const model = await loadModel(modelPath(want.file));
    assert.equal(model.engine, 'kiln');
    const feeds = {};
    for (const [input, t] of Object.entries(want.inputs)) feeds[input] = { data: typed(t), dims: t.dims };
    const out = Object.values(model.runMany(feeds));
    assert.equal(out.length, want.outputs.length);
    want.outputs.forEach((w, i) => {
      assert.deepEqual(out[i].dims, w.dims);
      const err = maxAbsDiff(out[i].data, w.data);
      assert.ok(err <= 1e-5, `${name} output ${i}: max |kiln-wasm - Python| = ${err}`);
    });
    model.free();
  });
}

test('a key-padding mask of the wrong length is an Error naming it, and the model stays usable', async () => {
  const want = ref.attention_weights;
  const model = await loadModel(modelPath(want.file));
  const [xName, padName] = Object.keys(want.inputs);
  const x = want.inputs[xName];
  assert.throws(
    () => model.runMany({ [xName]: { data: typed(x), dims: x.dims }, [padName]: { data: new Float32Array(5 * 4), dims: [5, 4] } }),
    (e) => e instanceof Error && e.message.length > 0 && !/panicked|unreachable/.test(e.message),
  );
  const pad = want.inputs[padName];
  const ok = model.runMany({ [xName]: { data: typed(x), dims: x.dims }, [padName]: { data: typed(pad), dims: pad.dims } });
  assert.equal(Object.keys(ok).length, 2);
  model.free();
});
