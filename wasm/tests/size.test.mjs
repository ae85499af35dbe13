// The download a predicting page pays: kiln's predict-only module, in both builds, stays at or under
// 0.5 MB gzip (issue 18's and issue 14's size target; the figure build.sh prints and BENCHMARKS.md
// reports). This is a size budget, not a timing: a change that links something big into the small
// module (a serde derive, ndarray's n-d machinery, a second copy of a kernel) fails here, not later.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, constants } from 'node:zlib';

const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '../pkg');
const BUDGET = 500_000; // bytes, gzip at level 9

for (const name of ['kiln_core_bg.wasm', 'kiln_core_relaxed_bg.wasm']) {
  test(`${name} is at most 0.5 MB gzip`, () => {
    const raw = readFileSync(path.join(pkg, name));
    const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION }).length;
    assert.ok(gz <= BUDGET, `${name}: ${gz.toLocaleString('en')} B gzip -9 (raw ${raw.length.toLocaleString('en')} B), `
      + `over the ${BUDGET.toLocaleString('en')} B budget: find what grew with twiggy (wasm/README.md)`);
    // and it is the real module, not an empty stub: a wasm magic number and a body
    assert.deepEqual([...raw.subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d]);
    assert.ok(raw.length > 100_000, `${name} is ${raw.length} B: not a built module`);
  });
}
