// model.monitor(): the drift monitor in wasm against Python's kiln.drift (same stream, same
// report to 1e-6), its false-alarm and detection rates on digits (measured and printed), bad
// observations, auto mode and onDrift, the feedback file Python reads, and mutated bytes.
// Material from make_models.py's kiln_drift (drift_digits.onnx, drift_plain.onnx, drift.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { loadModel, saveFeedback, loadFeedback, modelVersion, Monitor, Trainer } from '../pkg/index.js';
import { modelsDir, modelBytes } from './helpers.mjs';

const material = JSON.parse(readFileSync(join(modelsDir, 'drift.json'), 'utf8'));
const per = material.dims.reduce((a, b) => a * b, 1);
const examples = (flat) => Array.from({ length: flat.length / per }, (_, i) => Float32Array.from(flat.slice(i * per, (i + 1) * per)));
const held = examples(material.held);
const one = [1, ...material.dims];

/** Every number in `a` within `tol` of the same place in `b`; everything else equal. */
function assertClose(a, b, tol, path = 'report') {
  if (typeof a === 'number' && typeof b === 'number') {
    assert.ok(Math.abs(a - b) <= tol, `${path}: ${a} vs ${b}`);
  } else if (Array.isArray(a)) {
    assert.equal(a.length, b.length, `${path}: lengths`);
    a.forEach((v, i) => assertClose(v, b[i], tol, `${path}[${i}]`));
  } else if (a && typeof a === 'object') {
    assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${path}: keys`);
    for (const k of Object.keys(a)) assertClose(a[k], b[k], tol, `${path}.${k}`);
  } else {
    assert.equal(a, b, path);
  }
}

/** A seeded shuffle-sample of `n` distinct examples. */
function sample(list, n, seed) {
  let s = seed >>> 0;
  const idx = list.map((_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).map((i) => list[i]);
}

async function alarmRate(model, list, window, windows, seed) {
  const mon = model.monitor({ window });
  let alarms = 0;
  for (let w = 0; w < windows; w++) {
    mon.reset();
    for (const x of sample(list, window, seed + w)) mon.observe(x, one);
    alarms += mon.report().drifted ? 1 : 0;
  }
  mon.free();
  return alarms / windows;
}

test('the same stream gives the same report as Python (1e-6)', async () => {
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const mon = model.monitor({ window: material.window });
  const stream = examples(material.stream);
  let worst = 0;
  for (const { after, report } of material.checkpoints) {
    while (mon.report().seen < after) mon.observe(stream[mon.report().seen], one);
    const ours = mon.report();
    assertClose(ours, report, 1e-6, `after ${after}`);
    worst = Math.max(worst, Math.abs(ours.psi - report.psi), Math.abs(ours.p_value - report.p_value));
  }
  const last = material.checkpoints.at(-1).report;
  assert.ok(last.drifted, 'the stream ends in thick strokes: Python saw drift');
  assert.ok(!material.checkpoints[3].report.drifted, 'and no drift on its first 100 held-back digits');
  console.log(`# Python vs wasm: ${material.checkpoints.length} reports agree; largest |psi|/|p| difference ${worst.toExponential(2)}`);
  model.free();
});

test('held-back digits stay quiet; three kinds of shift are caught within 50 observations', async () => {
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const quiet = await alarmRate(model, held, 50, 100, 1);
  console.log(`# false alarms: ${quiet} of 100 windows of 50 held-back digits`);
  assert.ok(quiet <= 0.03, `false-alarm rate ${quiet}`);
  for (const [kind, flat] of Object.entries(material.shifts)) {
    const caught = await alarmRate(model, examples(flat), 50, 40, 7);
    console.log(`# ${kind}: detected in ${caught} of 40 windows of 50`);
    assert.ok(caught >= 0.95, `${kind}: ${caught}`);
  }
  model.free();
});

test('a model without the statistics gives a clear error', async () => {
  const model = await loadModel(modelBytes('drift_plain.onnx'));
  assert.throws(() => model.monitor(), /no training statistics.*reference=X_train/);
  model.free();
});

test('NaN and wrongly shaped observations throw and leave the window alone', async () => {
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const mon = model.monitor({ window: 30 });
  for (const x of held.slice(0, 20)) mon.observe(x, one);
  const before = mon.report();
  const bad = Float32Array.from(held[20]);
  bad[13] = NaN;
  assert.throws(() => mon.observe(bad, one), /observation 0 has a non-finite value \(NaN\) at position 13/);
  assert.throws(() => mon.observe(held[21], [1, 64]), /\[1, 64\] do not match the model's input \[batch, 1, 8, 8\]/);
  assert.throws(() => mon.observe(held[21].subarray(0, 60)), /shape \[1, 1, 8, 8\] needs 64 values, got 60/);
  assert.throws(() => mon.observe([1, 2, 3]), TypeError);
  const after = mon.report();
  assert.equal(after.rejected, 3);
  assertClose({ ...after, rejected: 0 }, { ...before, rejected: 0 }, 0);
  mon.observe(held[21], one); // still usable
  assert.equal(mon.report().observed, 21);
  assert.throws(() => model.monitor({ window: 0 }), /window must be between 1/);
  assert.throws(() => model.monitor({ window: 'big' }), TypeError);
  model.free();
});

test('auto: every run is observed, and onDrift fires once when drift starts', async () => {
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const mon = model.monitor({ window: 40, auto: true });
  const fired = [];
  mon.onDrift((r) => fired.push(r));
  // (held[0..40] is no good here: by chance it is mostly 2s, 3s, 6s and 9s, whose bottom-right
  // corners are inked, and the monitor rightly says so: p = 0.003)
  for (const x of held.slice(100, 140)) model.run(x, one);
  assert.equal(mon.report().observed, 40);
  assert.equal(fired.length, 0, JSON.stringify(fired[0]?.moved));
  const thick = examples(material.shifts['thick strokes']);
  for (const x of thick.slice(0, 40)) model.classify(x, one);
  assert.equal(fired.length, 1, 'one callback per episode');
  assert.ok(fired[0].drifted && fired[0].moved.length > 0);
  const nan = new Float32Array(per).fill(NaN);
  model.run(nan, one); // the run goes on; the monitor counts the refusal
  assert.equal(mon.report().rejected, 1);
  mon.free();
  model.run(held[0], one);
  assert.throws(() => mon.report(), /freed/);
  model.free();
});

test('monitor cost per observation (wasm)', async () => {
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const mon = model.monitor({ window: 200 });
  const xs = held.slice(0, 200);
  for (const x of xs) mon.observe(x, one); // warm up
  // Rounds alternate observe (which runs the model) and a bare run, timed in this process's CPU time
  // (ms per call), and medians over rounds: on a busy machine wall-clock time mostly measures the others.
  const time = (f) => {
    const t = process.cpuUsage();
    for (const x of xs) f(x);
    const d = process.cpuUsage(t);
    return (d.user + d.system) / 1000 / xs.length;
  };
  const observes = [], runs = [], extra = [];
  for (let round = 0; round < 9; round++) {
    const o = time((x) => mon.observe(x, one));
    const r = time((x) => model.run(x, one));
    observes.push(o); runs.push(r); extra.push(o - r);
  }
  const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
  const [observe, run, added] = [median(observes), median(runs), median(extra)];
  const t = process.cpuUsage();
  for (let r = 0; r < 200; r++) mon.report();
  const d = process.cpuUsage(t);
  const report = (d.user + d.system) / 1000 / 200;
  console.log(`# observe ${(observe * 1000).toFixed(1)} µs (CPU time, median of 9 rounds of 200; a bare model run ${(run * 1000).toFixed(1)} µs, so the monitor adds ~${(added * 1000).toFixed(1)} µs); report() ${(report * 1000).toFixed(1)} µs (11 features, window 200)`);
  assert.ok(observe < 1, `observe took ${observe} ms`);
  model.free();
});

test('feedback saved here is what Python reads', async () => {
  const bytes = modelBytes('drift_digits.onnx');
  const model = await loadModel(bytes);
  assert.equal(model.version, material.model_version);
  assert.equal(await modelVersion(bytes), material.model_version);
  const inputs = new Float32Array(3 * per);
  held.slice(0, 3).forEach((x, i) => inputs.set(x, i * per));
  const file = await saveFeedback({ inputs, dims: [3, ...material.dims], labels: [7, 0, 3], modelVersion: model.version });
  const back = await loadFeedback(file);
  assert.deepEqual(Array.from(back.labels), [7, 0, 3]);
  assert.deepEqual(back.dims, [3, 1, 8, 8]);
  assert.equal(back.modelVersion, model.version);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-feedback-'));
  writeFileSync(join(dir, 'f.kiln-data'), file);
  const py = execFileSync(process.env.KILN_PYTHON, ['-c', `
import json, sys, kiln
X, y = fb = kiln.drift.load_feedback(sys.argv[1])
print(json.dumps({"shape": list(X.shape), "y": y.tolist(), "version": fb.model_version, "x0": X[0].ravel().tolist()}))
`, join(dir, 'f.kiln-data')], { encoding: 'utf8' });
  const got = JSON.parse(py);
  assert.deepEqual(got, { shape: [3, 1, 8, 8], y: [7, 0, 3], version: model.version, x0: Array.from(held[0]) });
  await assert.rejects(saveFeedback({ inputs, dims: [3, 1, 8, 8], labels: [1, 2] }), /3 examples but 2 labels/);
  await assert.rejects(saveFeedback({ inputs, dims: [3, 1, 8, 8], labels: [1, 2, 1.5] }), TypeError);
  model.free();
});

test('mutated feedback files and statistics throw Errors, never crash the module', async () => {
  const file = await saveFeedback({ inputs: Float32Array.from(held[0]), dims: one, labels: [4] });
  const model = await loadModel(modelBytes('drift_digits.onnx'));
  const meta = model.metadata['kiln.drift'];
  let s = 12345;
  const rand = (n) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % n);
  let refused = 0;
  let accepted = 0;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let trial = 0; trial < 300; trial++) {
    const b = trial % 2 ? file.slice(0, rand(file.length)) : Uint8Array.from(file, (v, i) => (i === rand(file.length) ? rand(256) : v));
    try {
      await loadFeedback(b);
    } catch (e) {
      assert.doesNotMatch(e.message, /internal error/);
      refused += 1;
    }
    const at = rand(meta.length);
    const m = meta.slice(0, at) + alphabet[rand(64)] + meta.slice(at + 1);
    try {
      const mon = new Monitor(model, (x, dims) => model.run(x, dims), m, { window: 5 });
      mon.observe(held[0], one);
      mon.report();
      mon.free();
      accepted += 1;
    } catch (e) {
      assert.doesNotMatch(e.message, /internal error/);
    }
  }
  console.log(`# mutated bytes: ${refused} of 300 feedback files refused; ${300 - accepted} of 300 statistics refused`);
  assert.ok(refused > 100 && accepted < 300, `${refused} ${accepted}`);
  model.free();
});

test('a model fine-tuned on the device carries the statistics on (Trainer.exportOnnx statistics)', async () => {
  const original = await loadModel(modelBytes('drift_digits.onnx'));
  const statistics = original.metadata['kiln.drift'];
  const trainer = await Trainer.fromKiln(modelBytes('finetune/base.kiln'));
  const tuned = await loadModel(trainer.exportOnnx({ labels: original.labels, statistics }));
  assert.equal(tuned.metadata['kiln.drift'], statistics);
  const mon = tuned.monitor({ window: 20 });
  for (const x of held.slice(0, 20)) mon.observe(x, one);
  assert.equal(mon.report().observed, 20);
  assert.throws(() => trainer.exportOnnx({ statistics: 'not a summary' }), /kiln.drift metadata is not base64/);
  assert.throws(() => trainer.exportOnnx({ statistics: 3 }), TypeError);
  const plain = await loadModel(trainer.exportOnnx({}));
  assert.equal(plain.metadata['kiln.drift'], undefined);
  for (const m of [original, tuned, plain]) m.free();
  trainer.free();
});
