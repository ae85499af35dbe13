// The Trainer: fine-tuning in wasm must end where Python's fit ends (same checkpoint, data, options
// and seed → weights within 1e-5), its exports must run in loadModel, its checkpoints must load in
// Python, and bad input must be an Error that names the problem. The reference runs are written by
// make_models.py (kiln_finetune) into finetune.json and finetune/*.kiln.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Trainer, loadModel } from '../pkg/index.js';
import * as worker from '../pkg/worker.js';
import { modelPath, maxAbsDiff } from './helpers.mjs';

const ref = JSON.parse(readFileSync(modelPath('finetune.json'), 'utf8'));
const x = Float32Array.from(ref.x);
const y = Int32Array.from(ref.y);
const base = modelPath('finetune/base.kiln');
const options = { epochs: ref.epochs, batchSize: ref.batch_size };
const TOL = 1e-5;
const python = process.env.KILN_PYTHON;

/** The two reference runs, as Python did them (make_models.py). */
function setUp(trainer, run) {
  if (run === 'head') {
    trainer.freeze();
    trainer.unfreeze('8.');
    trainer.compile({ optimizer: 'adam', lr: 1e-2, metrics: ['accuracy'] });
  } else {
    trainer.compile({ optimizer: 'sgd', lr: 5e-2, momentum: 0.9, metrics: ['accuracy'] });
  }
}

for (const run of ['head', 'all']) {
  test(`fine-tuning (${run === 'head' ? 'the head, Adam' : 'every layer, SGD with momentum'}) ends where Python's fit ends`, async (t) => {
    const trainer = await Trainer.fromKiln(base);
    setUp(trainer, run);
    const want = ref.runs[run];
    const before = trainer.evaluate(x, ref.dims, y);
    assert.ok(Math.abs(before.loss - want.before.loss) < TOL, `loss before: wasm ${before.loss}, Python ${want.before.loss}`);
    const history = trainer.fit(x, ref.dims, y, options);
    assert.equal(history.epochs, ref.epochs);
    assert.equal(history.history.loss.length, ref.epochs);
    assert.equal(history.stoppedBy, null);
    const flat = trainer.getFlatParameters();
    assert.equal(flat.length, want.flat.length, 'same trainable parameters');
    const diff = maxAbsDiff(flat, want.flat);
    assert.ok(diff < TOL, `weights differ from Python's by ${diff}`);
    t.diagnostic(`${run}: ${flat.length} trainable values, max |wasm - Python| = ${diff.toExponential(2)}`);
    // predict runs in eval mode: batch norm's running statistics (buffers, not parameters) count too
    const out = trainer.predict(x.subarray(0, 3 * 64), [3, 1, 8, 8]);
    assert.deepEqual(out.dims, [3, 10]);
    assert.ok(maxAbsDiff(out.data, want.predict) < 1e-4, 'predictions after fine-tuning agree with Python');
    const after = trainer.evaluate(x, ref.dims, y);
    assert.ok(Math.abs(after.accuracy - want.after.accuracy) < 1e-9 && after.loss < before.loss, JSON.stringify({ before, after }));
    trainer.free();
  });
}

test('a graph checkpoint (a residual block, saved from an nn.Module) fine-tunes to where Python ends', async (t) => {
  const g = JSON.parse(readFileSync(modelPath('finetune_graph.json'), 'utf8'));
  const trainer = await Trainer.fromKiln(modelPath('finetune/resnet.kiln'));
  trainer.compile({ optimizer: 'sgd', lr: 5e-2, momentum: 0.9 });
  const gx = Float32Array.from(g.x);
  trainer.fit(gx, g.dims, Int32Array.from(g.y), { epochs: g.epochs, batchSize: g.batch_size });
  const flat = trainer.getFlatParameters();
  assert.equal(flat.length, g.flat.length, 'same trainable parameters');
  const diff = maxAbsDiff(flat, g.flat);
  t.diagnostic(`graph model: ${flat.length} trainable values, max |wasm - Python| = ${diff.toExponential(2)}`);
  assert.ok(diff < TOL, `weights differ from Python's by ${diff}`);
  const out = trainer.predict(gx.subarray(0, 3 * 64), [3, 1, 8, 8]);
  assert.ok(maxAbsDiff(out.data, g.predict) < 1e-4, 'predictions agree with Python');
  const model = await loadModel(trainer.exportOnnx({}));
  assert.equal(model.engine, 'kiln', 'the fine-tuned graph runs on kiln\'s engine');
  assert.ok(maxAbsDiff(model.run(gx.subarray(0, 3 * 64), [3, 1, 8, 8]).data, out.data) < 1e-5);
  model.free();
  trainer.free();
});

test("optimizers' default learning rates come from the core, the same as Python's", async () => {
  const want = JSON.parse(execFileSync(python, ['-c', 'import json, kiln.optim as o; print(json.dumps({k: getattr(o, c)().lr for k, c in [("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop")]}))'], { encoding: 'utf8' }));
  assert.deepEqual(Object.keys(want).sort(), ['adam', 'adamw', 'rmsprop', 'sgd']);
  for (const [optimizer, lr] of Object.entries(want)) {
    const trainer = await Trainer.fromKiln(base);
    trainer.compile({ optimizer });
    const h = trainer.fit(x, ref.dims, y, { epochs: 1, batchSize: 20 });
    assert.ok(Math.abs(h.history.lr[0] - lr) < 1e-9, `${optimizer}: wasm ${h.history.lr[0]}, Python ${lr}`);
    trainer.free();
  }
});

test('freeze and unfreeze choose what trains; frozen weights do not move', async () => {
  const trainer = await Trainer.fromKiln(base);
  const names = trainer.parameters.map((p) => p.name);
  assert.deepEqual(names, ['0.weight', '0.bias', '1.weight', '1.bias', '6.weight', '6.bias', '8.weight', '8.bias']);
  assert.equal(trainer.freeze(), names.length);
  assert.equal(trainer.unfreeze('8.'), 2);
  assert.equal(trainer.unfreeze('nothing.'), 0);
  assert.deepEqual(trainer.parameters.filter((p) => p.trainable).map((p) => p.name), ['8.weight', '8.bias']);
  assert.deepEqual(trainer.inputShape, [1, 8, 8]);
  assert.deepEqual(trainer.layers.map((l) => l.type), ['Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d', 'Flatten', 'Dropout', 'Linear', 'ReLU', 'Linear']);
  const frozenBefore = await Trainer.fromKiln(base);
  trainer.fit(x, ref.dims, y, { epochs: 2, batchSize: 8, lr: 1e-2 });
  trainer.unfreeze();
  frozenBefore.unfreeze();
  const a = trainer.getFlatParameters();
  const b = frozenBefore.getFlatParameters();
  const head = 10 * 32 + 10;
  assert.equal(maxAbsDiff(a.subarray(0, a.length - head), b.subarray(0, b.length - head)), 0, 'frozen layers unchanged');
  assert.ok(maxAbsDiff(a.subarray(a.length - head), b.subarray(b.length - head)) > 1e-4, 'the head trained');
});

test('onProgress sees every batch and epoch, can stop the fit, and its exceptions surface', async () => {
  const trainer = await Trainer.fromKiln(base);
  const seen = [];
  const history = trainer.fit(x, ref.dims, y, { epochs: 3, batchSize: 8, onProgress: (p) => void seen.push(p) });
  assert.equal(seen.filter((p) => p.type === 'batch').length, 3 * 3); // 20 examples, batches of 8
  assert.deepEqual(seen.filter((p) => p.type === 'epoch').map((p) => p.epoch), [1, 2, 3]);
  // fit compiled with Python's defaults: Adam at PyTorch's 1e-3 (from the core), no metrics
  assert.deepEqual(Object.keys(seen.at(-1).logs).sort(), ['loss', 'lr']);
  assert.ok(Math.abs(seen.at(-1).logs.lr - 1e-3) < 1e-9, `default lr ${seen.at(-1).logs.lr}`);
  assert.equal(seen[0].batches, 3);
  assert.equal(history.history.loss.at(-1), seen.at(-1).logs.loss);

  const stopped = trainer.fit(x, ref.dims, y, { epochs: 5, batchSize: 8, onProgress: (p) => p.type === 'epoch' && p.epoch === 2 });
  assert.equal(stopped.epochs, 2);
  assert.equal(stopped.stoppedBy, 'callback');

  const kept = trainer.getFlatParameters();
  assert.throws(() => trainer.fit(x, ref.dims, y, { onProgress: () => { throw new RangeError('from the callback'); } }), /from the callback/);
  assert.ok(maxAbsDiff(kept, trainer.getFlatParameters()) > 0, 'the batch before the exception was kept');
  assert.equal(trainer.fit(x, ref.dims, y).epochs, 1, 'the trainer still works');
});

test('exportOnnx runs in loadModel with the same outputs and the metadata the page reads', async () => {
  const trainer = await Trainer.fromKiln(base);
  setUp(trainer, 'head');
  trainer.fit(x, ref.dims, y, options);
  const bytes = trainer.exportOnnx({ labels: [...'0123456789'], inputScale: 1 / 16, inputOffset: 0 });
  assert.ok(bytes instanceof Uint8Array && bytes.length > 1000);
  const model = await loadModel(bytes);
  assert.deepEqual(model.labels, [...'0123456789']);
  assert.equal(Number(model.metadata['kiln.input_scale']), 1 / 16);
  assert.deepEqual(model.inputs[0].dims, [null, 1, 8, 8]);
  const batch = x.subarray(0, 5 * 64);
  const fromOnnx = model.run(batch, [5, 1, 8, 8]);
  const fromTrainer = trainer.predict(batch, [5, 1, 8, 8]);
  assert.ok(maxAbsDiff(fromOnnx.data, fromTrainer.data) < 1e-5);
  assert.equal(model.classify(x.subarray(0, 64), [1, 1, 8, 8], { topK: 1 })[0].index, argmax(fromTrainer.data.subarray(0, 10)));
  assert.throws(() => trainer.exportOnnx({ opset: 11 }), /opset must be 17 or later/);
  model.free();
});

test('save() is a checkpoint that the Trainer and Python kiln.load read back', async () => {
  const trainer = await Trainer.fromKiln(base);
  setUp(trainer, 'all');
  trainer.fit(x, ref.dims, y, options);
  const saved = trainer.save();
  const again = await Trainer.fromKiln(saved);
  assert.equal(maxAbsDiff(again.getFlatParameters(), trainer.getFlatParameters()), 0);

  assert.ok(python, 'KILN_PYTHON is set by wasm/test.sh');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-trainer-'));
  writeFileSync(join(dir, 'wasm.kiln'), saved);
  const script = `
import json, sys, numpy as np, kiln
m = kiln.load(sys.argv[1] + "/wasm.kiln")
x = np.asarray(json.load(open(sys.argv[2]))["x"], np.float32).reshape(-1, 1, 8, 8)[:3]
print(json.dumps(m.predict(x).ravel().tolist()))`;
  const fromPython = JSON.parse(execFileSync(python, ['-c', script, dir, modelPath('finetune.json')], { encoding: 'utf8' }));
  const fromWasm = trainer.predict(x.subarray(0, 3 * 64), [3, 1, 8, 8]).data;
  assert.ok(maxAbsDiff(fromPython, fromWasm) < 1e-5, 'Python predicts what the wasm trainer predicts');
  assert.ok(maxAbsDiff(fromPython, ref.runs.all.predict) < 1e-4, 'and what Python fine-tuning predicts');
});

test('bad checkpoints and bad data are Errors that say what is wrong', async () => {
  await assert.rejects(Trainer.fromKiln(new Uint8Array([1, 2, 3])), /not a kiln checkpoint/);
  const real = readFileSync(base);
  await assert.rejects(Trainer.fromKiln(real.subarray(0, real.length - 100)), /not a kiln checkpoint/);
  await assert.rejects(Trainer.fromKiln(modelPath('kiln_digits.onnx')), /not a kiln checkpoint/);
  await assert.rejects(Trainer.fromKiln(checkpoint({ layers: [{ type: 'Transformer', d_model: 4 }] })), /unknown layer "Transformer"/);
  await assert.rejects(Trainer.fromKiln(checkpoint(null)), /no kiln.architecture metadata/);
  await assert.rejects(Trainer.fromKiln(42), TypeError);

  const trainer = await Trainer.fromKiln(base);
  const two = new Float32Array(2 * 64);
  assert.throws(() => trainer.fit(new Float32Array(2 * 49), [2, 1, 7, 7], [1, 2]), /samples of shape \[1, 7, 7\], but the model was trained on samples of shape \[1, 8, 8\]/);
  assert.throws(() => trainer.fit(two, [2, 1, 8, 8], [1, 2, 3]), /2 examples but 3 labels/);
  assert.throws(() => trainer.fit(two, [3, 1, 8, 8], [1, 2]), /dims \[3, 1, 8, 8\] need 192 values, the data has 128/);
  assert.throws(() => trainer.fit(two, [2, 1, 8, 8], [1, 12]), /label 12 is out of range for 10 classes/);
  assert.throws(() => trainer.fit(two, [2, 1, 8, 8], [1, -1]), /whole numbers >= 0/);
  assert.throws(() => trainer.fit(two.fill(NaN), [2, 1, 8, 8], [1, 2]), /NaN/);
  assert.throws(() => trainer.fit(new Float32Array(128), [2, 1, 8, 8], [1, 2], { epoch: 3 }), /unknown option "epoch"/);
  assert.throws(() => trainer.fit(new Float32Array(128), [2, 1, 8, 8], [1, 2], { epochs: 0 }), /epochs must be a whole number >= 1/);
  assert.throws(() => trainer.fit('pixels', [2, 64], [1, 2]), /x must be a Float32Array/);
  assert.throws(() => trainer.compile({ optimizer: 'lion' }), /unknown optimizer "lion"/);
  assert.throws(() => trainer.compile({ loss: 'hinge' }), /unknown loss "hinge"/);
  assert.throws(() => trainer.compile({ optimizer: 'sgd', betas: [0.9, 0.99] }), /no option "betas"/);
  assert.throws(() => trainer.compile({ lr: -1 }), /learning rate must be a positive number/);
  // after all of that, it still trains
  assert.equal(trainer.fit(x, ref.dims, y).epochs, 1);
  trainer.free();
  assert.throws(() => trainer.predict(x, ref.dims), /freed/);
});

test('the Worker entry trains off the main thread and ends where Python does', async () => {
  const trainer = await worker.Trainer.fromKiln(base);
  await trainer.freeze();
  await trainer.unfreeze('8.');
  await trainer.compile({ optimizer: 'adam', lr: 1e-2, metrics: ['accuracy'] });
  const progress = [];
  const history = await trainer.fit(x, ref.dims, y, { ...options, onProgress: (p) => progress.push(p.type) });
  assert.equal(history.epochs, ref.epochs);
  assert.equal(progress.filter((t) => t === 'epoch').length, ref.epochs);
  const diff = maxAbsDiff(await trainer.getFlatParameters(), ref.runs.head.flat);
  assert.ok(diff < TOL, `weights differ from Python's by ${diff}`);
  const model = await worker.loadModel(await trainer.exportOnnx({ labels: [...'0123456789'] }));
  const out = await model.run(x.subarray(0, 3 * 64), [3, 1, 8, 8]);
  assert.ok(maxAbsDiff(out.data, ref.runs.head.predict) < 1e-4);
  await assert.rejects(trainer.fit(x, [3, 1, 8, 8], y), /need 192 values/);
  assert.equal((await trainer.describe()).parameters.length, 8);
  await trainer.free();
  await assert.rejects(trainer.save(), /freed/);
  await worker.terminate();
});

/** A safetensors file with no tensors and the given architecture (null: no kiln metadata). */
function checkpoint(architecture) {
  const meta = architecture === null ? { format: 'pt' } : { 'kiln.architecture': JSON.stringify(architecture) };
  const header = new TextEncoder().encode(JSON.stringify({ __metadata__: meta }));
  const bytes = new Uint8Array(8 + header.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
  bytes.set(header, 8);
  return bytes;
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

test('Trainer.fromOnnx fine-tunes an ONNX file kiln did not write, and the result ships again', async () => {
  // tests/fixtures/foreign/helper_cnn.onnx: a CNN written with onnx.helper (Conv, Relu, pooling, Gemm, Softmax)
  const bytes = new Uint8Array(readFileSync(new URL('../../tests/fixtures/foreign/helper_cnn.onnx', import.meta.url)));
  const original = await loadModel(bytes);
  const trainer = await Trainer.fromOnnx(bytes);
  const n = 24;
  const xs = Float32Array.from({ length: n * 64 }, (_, i) => ((i * 7919) % 17) / 17);
  const dims = [n, 1, 8, 8];
  const before = trainer.predict(xs, dims);
  assert.ok(maxAbsDiff(before.data, original.run(xs, dims).data) < 1e-5, 'the imported model is the file');
  assert.ok(trainer.parameters.some((p) => p.trainable), 'the file\'s weights train');
  // teach it to put all its probability on class 0
  const classes = before.dims[1];
  const target = Float32Array.from({ length: n * classes }, (_, i) => (i % classes === 0 ? 1 : 0));
  trainer.compile({ optimizer: 'adam', lr: 1e-2, loss: 'mse' });
  const h = trainer.fit(xs, dims, target, { epochs: 20, batchSize: n, shuffle: false });
  const losses = h.history.loss;
  assert.ok(losses[losses.length - 1] < 0.5 * losses[0], JSON.stringify(losses));
  const tuned = trainer.predict(xs, dims);
  const shipped = await loadModel(trainer.exportOnnx({}));
  assert.equal(shipped.engine, 'kiln');
  assert.ok(maxAbsDiff(shipped.run(xs, dims).data, tuned.data) < 1e-5, 'the export predicts what the trainer does');
  await assert.rejects(Trainer.fromOnnx(new Uint8Array([1, 2, 3])), /ONNX/);
  trainer.free();
});
