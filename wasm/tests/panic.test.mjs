// The last line of defence: a panic inside an engine aborts its wasm instance (panic = abort on
// wasm32). kiln-wasm must turn it into an Error that names the panic — never a bare "unreachable
// executed" — and keep working with a fresh instance. kiln-core checks inputs so that no
// well-formed call panics, so this test makes the next run call the crate's deliberate panic
// (__kilnPanicForTests) — in tract's module and in the small one — and goes through the public
// API around it. Its own file: the restart drops every model loaded before it.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { loadModel } from '../pkg/index.js';
import { Session, __kilnPanicForTests } from '../pkg/kiln_wasm.js';
import { KilnSession, __kilnPanicForTests as corePanic } from '../pkg/kiln_core.js';
import { modelPath, pixels } from './helpers.mjs';

/** Makes the next run (of `Class`, method `method`) panic inside Rust; later runs are normal again. */
function panicOnNextRun(Class = Session, method = 'runF32', panic = __kilnPanicForTests) {
  const run = Class.prototype[method];
  Class.prototype[method] = function panicking() {
    Class.prototype[method] = run;
    return panic();
  };
}

/** Runs `call` with console.error captured (console_error_panic_hook reports there). */
function capturingConsole(call) {
  const logged = [];
  const consoleError = console.error;
  console.error = (...args) => logged.push(args.join(' '));
  try {
    call();
  } finally {
    console.error = consoleError;
  }
  return logged;
}

function assertPanicError(e) {
  assert.ok(e instanceof Error && !(e instanceof WebAssembly.RuntimeError), e.name);
  assert.match(e.message, /^kiln-wasm: internal error \(panicked at .*src\/panic\.rs.*deliberate panic for the tests/s);
  assert.match(e.message, /models loaded before this must be loaded again/);
  assert.doesNotMatch(e.message, /registry\/src/, 'cargo registry paths are trimmed');
  assert.ok(e.cause instanceof WebAssembly.RuntimeError, 'the trap is kept as the cause');
  return true;
}

test('a panic becomes an Error, and the package keeps working', async () => {
  const tract = { engine: 'tract' };
  const mlp = await loadModel(modelPath('mlp.onnx'), tract);
  const cnn = await loadModel(modelPath('digits_cnn.onnx'), tract);
  const before = cnn.run(pixels(1), [1, 1, 8, 8]).data;

  panicOnNextRun();
  const logged = capturingConsole(() => assert.throws(() => mlp.run(pixels(1), [1, 64]), assertPanicError));
  assert.ok(logged.some((l) => l.includes('deliberate panic')), 'the panic hook reported to the console');

  // Models of the aborted instance say so instead of touching a dead instance.
  assert.throws(() => cnn.run(pixels(1), [1, 1, 8, 8]), /lost when the engine restarted/);
  assert.throws(() => mlp.classify(pixels(1), [1, 64]), /lost when the engine restarted/);
  cnn.free(); // a no-op, not a crash

  // A fresh instance: loading again works and gives the same answers.
  const again = await loadModel(modelPath('digits_cnn.onnx'), tract);
  assert.deepEqual(again.run(pixels(1), [1, 1, 8, 8]).data, before);

  // And a second panic is survived the same way.
  panicOnNextRun();
  capturingConsole(() => assert.throws(() => again.run(pixels(1), [1, 1, 8, 8]), assertPanicError));
  const third = await loadModel(modelPath('digits_cnn.onnx'), tract);
  assert.deepEqual(third.run(pixels(1), [1, 1, 8, 8]).data, before);
});

test("a panic in kiln's engine restarts the small module only", async () => {
  const onTract = await loadModel(modelPath('digits_cnn.onnx'), { engine: 'tract' });
  const onKiln = await loadModel(modelPath('digits_cnn.onnx'));
  assert.equal(onKiln.engine, 'kiln');
  const before = onKiln.run(pixels(1), [1, 1, 8, 8]).data;
  panicOnNextRun(KilnSession, 'runF32', corePanic);
  capturingConsole(() => assert.throws(() => onKiln.run(pixels(1), [1, 1, 8, 8]), assertPanicError));
  assert.throws(() => onKiln.run(pixels(1), [1, 1, 8, 8]), /lost when the engine restarted/);
  assert.ok(onTract.run(pixels(1), [1, 1, 8, 8]).data.length === 10, "tract's module was not touched");
  const again = await loadModel(modelPath('digits_cnn.onnx'));
  assert.deepEqual(again.run(pixels(1), [1, 1, 8, 8]).data, before);
});

test('an input kiln-core checks (a token id past the table) is an ordinary error, not a panic', async () => {
  const emb = await loadModel(modelPath('embedding.onnx'));
  assert.throws(() => emb.run([25, 1], [1, 2]), (e) => {
    assert.doesNotMatch(e.message, /internal error|unreachable/);
    assert.match(e.message, /index 25 is out of range/);
    return true;
  });
  assert.deepEqual(emb.run([19, 0], [1, 2]).dims, [1, 4], 'the model still works');
});
