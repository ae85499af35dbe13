// Attention in the page: a transformer kiln exported (MultiheadAttention as MatMul/Softmax/…, a
// key-padding mask as a 0/1 input, the causal mask as a constant) runs on kiln's own engine in the
// small kiln_core module, not on tract, and gives Python's predictions. attention.json is written
// by make_models.py (kiln_attention) from the kiln models themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, Trainer } from '../pkg/index.js';
import { modelPath, typed, maxAbsDiff } from './helpers.mjs';

const ref = JSON.parse(readFileSync(modelPath('attention.json'), 'utf8'));

for (const [name, want] of Object.entries(ref).filter(([n]) => n !== 'trainer')) {
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

test("the Trainer fine-tunes a transformer checkpoint as Python's fit does, and exports it for kiln's engine", async (t) => {
  const g = ref.trainer;
  const trainer = await Trainer.fromKiln(modelPath(g.checkpoint));
  trainer.compile({ optimizer: 'sgd', lr: 5e-2, momentum: 0.9 });
  const x = Float32Array.from(g.x);
  trainer.fit(x, g.dims, Int32Array.from(g.y), { epochs: g.epochs, batchSize: g.batch_size });
  const flat = trainer.getFlatParameters();
  assert.equal(flat.length, g.flat.length, 'same trainable parameters');
  const diff = maxAbsDiff(flat, g.flat);
  t.diagnostic(`transformer: ${flat.length} trainable values, max |wasm - Python| = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-5, `weights differ from Python's by ${diff}`);
  const per = g.dims.slice(1).reduce((a, b) => a * b, 1);
  const out = trainer.predict(x.subarray(0, 3 * per), [3, ...g.dims.slice(1)]);
  assert.ok(maxAbsDiff(out.data, g.predict) < 1e-4, 'predictions agree with Python');
  const model = await loadModel(trainer.exportOnnx({}));
  assert.equal(model.engine, 'kiln');
  assert.ok(maxAbsDiff(model.run(x.subarray(0, 3 * per), [3, ...g.dims.slice(1)]).data, out.data) < 1e-5);
  model.free();
  trainer.free();
});
