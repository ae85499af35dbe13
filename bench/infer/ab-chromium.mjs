// Two builds of bench/wasm-profile's harness timed against each other in one headless Chromium page:
// what profile-wasm.mjs --against does in Node, in the browser's V8 (a newer V8 than Node 20's,
// whose code for the same wasm can be faster or slower: bench/README.md).
//
//   node bench/infer/ab-chromium.mjs A.wasm B.wasm MODEL.onnx [--batch 1,64]
//
// Both harnesses load the model in the same page and are timed as alternate.mjs times them (2 s of
// warm-up); the line printed per batch has both medians and the median of the groups' ratios A / B.
// Needs Chromium and playwright-core, which `make test` and `make bench` install.
// Chromium as bench/infer/browser.mjs runs it: Debian's /usr/bin/chromium, a fresh profile,
// playwright-core from tests/node_modules, no traffic off the machine.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { alternate } from './alternate.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { chromium } = createRequire(join(ROOT, 'tests/package.json'))('playwright-core');

const args = process.argv.slice(2);
const [wasmA, wasmB, model] = args.filter((a) => !a.startsWith('--') && (a.endsWith('.wasm') || a.endsWith('.onnx')));
if (!wasmA || !wasmB || !model) {
  console.error('usage: node bench/infer/ab-chromium.mjs A.wasm B.wasm MODEL.onnx [--batch 1,64]');
  process.exit(2);
}
const batches = (args.includes('--batch') ? args[args.indexOf('--batch') + 1] : '1,64').split(',').map(Number);
const profile = mkdtempSync(join(tmpdir(), 'kiln-ab-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'],
});
try {
  const page = await context.newPage();
  page.on('console', (m) => console.log(m.text()));
  const base64 = (f) => readFileSync(f).toString('base64');
  await page.evaluate(async ([a, b, m, batches, name, source]) => {
    const alternate = new Function(`return (${source})`)();
    const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    const modelBytes = bytes(m);
    async function harness(wasm) {
      const env = { now: () => performance.now(), print: () => {} };
      const { instance } = await WebAssembly.instantiate(bytes(wasm), { env });
      const h = instance.exports;
      const ptr = h.alloc(modelBytes.length);
      new Uint8Array(h.memory.buffer, ptr, modelBytes.length).set(modelBytes);
      if (h.load(ptr, modelBytes.length) !== 0) throw new Error(`${name}: the harness declined the model`);
      return h;
    }
    const [A, B] = [await harness(a), await harness(b)];
    for (const n of batches) {
      const r = alternate(A, B, n, 2000);
      console.log(`${name} batch ${n}: A ${r.a.toFixed(4)} ms, B ${r.b.toFixed(4)} ms, A / B ${r.ratio.toFixed(3)} (median of ${r.rounds} alternating groups of ${r.reps} runs)`);
    }
  }, [base64(wasmA), base64(wasmB), base64(model), batches, model, alternate.toString()]);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
