// The small module's two builds: kiln_core_relaxed_bg.wasm (relaxed SIMD) is loaded where the
// JavaScript engine runs relaxed SIMD, kiln_core_bg.wasm (simd128) elsewhere, and both predict
// what onnxruntime predicts. Node 20 runs relaxed SIMD only behind a V8 flag, so each choice is a
// child Node started with the flag on or off (simd-child.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { maxAbsDiff, simdCases as wanted } from './helpers.mjs';

const child = fileURLToPath(new URL('./simd-child.mjs', import.meta.url));
const run = (flag) => JSON.parse(execFileSync(process.execPath, [flag, child], { encoding: 'utf8', env: process.env }).trim().split('\n').pop());

const v8Options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
const hasFlag = v8Options.includes('--experimental-wasm-relaxed-simd');

test('this Node can switch relaxed SIMD on and off', () => {
  // Node 20's V8 has relaxed SIMD behind a flag; a Node without the flag cannot test both choices.
  assert.ok(hasFlag, `node ${process.version} has no --experimental-wasm-relaxed-simd`);
});

// int8 files: against kiln natively (the same integer sums; onnxruntime may round an inner value on a
// rounding boundary the other way), as conformance.test.mjs checks them. The two modules' integer
// tiles add in different orders (qtile.rs `rows2`): the same i32 sums, so the same outputs.
const reference = (c) => (c.model.includes('int8') ? c.native[0].data : c.outputs[0].data);

test('without relaxed SIMD the simd128 module runs; with it the relaxed one; both predict what onnxruntime does', () => {
  assert.ok(wanted.length >= 5, 'cases.json has kiln exports to run (the digits CNN and the residual graph, two batches each, and an int8 file)');
  assert.ok(wanted.some((c) => c.model.includes('int8')), 'an int8 file runs on both modules');
  const plain = run('--no-experimental-wasm-relaxed-simd');
  const relaxed = run('--experimental-wasm-relaxed-simd');
  assert.equal(plain.relaxedSimd, false, 'the probe says no without the flag');
  assert.equal(relaxed.relaxedSimd, true, 'the probe says yes with the flag');
  for (const [got, simd] of [[plain, 'simd128'], [relaxed, 'relaxed-simd']]) {
    assert.equal(got.results.length, wanted.length);
    for (const [r, c] of got.results.map((r, i) => [r, wanted[i]])) {
      assert.equal(r.engine, 'kiln', `${c.name}: kiln's engine runs kiln's export`);
      assert.equal(r.simd, simd, `${c.name}: the ${simd} module runs it`);
      const d = maxAbsDiff(r.data, reference(c));
      assert.ok(d < 1e-4, `${c.name} (${simd}): off ${c.model.includes('int8') ? 'kiln natively' : 'onnxruntime'} by ${d}`);
    }
  }
  for (const [p, r] of plain.results.map((p, i) => [p, relaxed.results[i]])) {
    // fused multiply-adds round once where mul + add rounds twice: the last bits may differ
    const d = maxAbsDiff(p.data, r.data);
    assert.ok(d < 1e-5, `${p.name}: the two modules differ by ${d}`);
  }
});
