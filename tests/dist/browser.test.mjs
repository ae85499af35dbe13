// The app of tests/dist/app, built by a fresh Vite app and a fresh webpack 5 app that npm-installed the
// kiln-wasm tarball, and served unbundled from a plain static folder, each opened in headless Chromium:
// on the main thread and in a Worker it must predict what Python's kiln.InferenceSession predicted for
// the same five digits. tests/dist/run.sh prepares the folders under $KILN_DIST_WORK and runs this.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { startServer, launchBrowser, openPage } from '../e2e/harness.mjs';

const WORK = process.env.KILN_DIST_WORK;
if (!WORK) throw new Error('KILN_DIST_WORK is not set: run tests/dist/run.sh');
const cases = JSON.parse(readFileSync(path.join(WORK, 'shared/cases.json'), 'utf8'));
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/** Python's own http.server, as someone serving a folder would: not kiln's serve.py. */
async function plainServer(root) {
  const child = spawn(process.env.PYTHON || 'python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', root], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`http.server printed no port in 10 s: ${out}`)), 10_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/port (\d+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`http.server exited (${code})`)); });
  });
  return {
    url: (p) => new URL(p, `http://127.0.0.1:${port}`).href,
    stop: () => new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); }),
  };
}

const pages = [
  { name: 'Vite', root: path.join(WORK, 'vite/dist'), server: (root) => startServer({ root, landing: '/' }) },
  { name: 'webpack 5', root: path.join(WORK, 'webpack/dist'), server: (root) => startServer({ root, landing: '/' }) },
  { name: 'a static folder (no bundler)', root: path.join(WORK, 'static'), server: plainServer },
];

const browser = await launchBrowser();
test.after(() => browser.close());

for (const { name, root, server: serve } of pages) {
  test(`${name}: the installed package predicts in Chromium what Python predicted, on the main thread and in a Worker`, { timeout: 120_000 }, async (t) => {
    const wasm = readdirSync(root, { recursive: true }).filter((f) => String(f).endsWith('.wasm'));
    // the predicting module (simd128 and relaxed-SIMD builds), the Trainer's and tract's
    assert.equal(wasm.length, 4, `${name}: the four .wasm files are shipped with the app: ${wasm.join(', ')}`);
    const server = await serve(root);
    try {
      const requested = [];
      const onRequest = (r) => requested.push(r.url());
      browser.context.on('request', onRequest);
      const { page, log, outside } = await openPage(browser.context, server.url('/'));
      await page.waitForFunction(() => document.body.dataset.state, null, { timeout: 60_000 });
      const result = await page.evaluate(() => window.kilnResult);
      browser.context.off('request', onRequest);
      assert.ok(!result.error, `${name}: the app failed: ${result.error}\n${log.join('\n')}`);
      assert.equal(result.engine, 'kiln', "kiln's engine runs kiln's export");
      assert.equal(result.simd, 'relaxed-simd', 'Chromium runs relaxed SIMD, so the relaxed build of the small module is loaded');
      assert.ok(maxDiff(result.main, cases.outputs) < 1e-4, `${name}: main thread ${result.main.slice(0, 3)}…, Python ${cases.outputs.slice(0, 3)}…`);
      assert.ok(maxDiff(result.worker, cases.outputs) < 1e-4, `${name}: worker ${result.worker.slice(0, 3)}…, Python ${cases.outputs.slice(0, 3)}…`);
      assert.ok(maxDiff(result.photoInput, cases.photo.input) <= 1e-6, `${name}: the photo's tensor differs from Python's by ${maxDiff(result.photoInput, cases.photo.input)}`);
      assert.ok(maxDiff(result.photoOut, cases.photo.outputs) < 1e-4, `${name}: run(ImageData) ${result.photoOut.slice(0, 3)}…, Python ${cases.photo.outputs.slice(0, 3)}…`);
      assert.equal(result.version, cases.version, `kiln-wasm ${result.version}, Python's kiln ${cases.version}`);
      assert.equal(result.modelVersion, cases.version, 'the model records the kiln that exported it');
      assert.deepEqual(outside, [], 'nothing beyond 127.0.0.1 is requested');
      assert.ok(!requested.some((u) => u.includes('kiln_wasm_bg')), "tract's module is fetched only for models kiln's engine declines");
      assert.ok(!requested.some((u) => u.includes('kiln_train_bg')), "the Trainer's module is fetched only to train");
      assert.ok(!requested.some((u) => /kiln_core_bg[^/]*\.wasm/.test(u)), 'the simd128 build of the small module is not fetched where the relaxed one runs');
      await page.close();
      t.diagnostic(`${name}: top-1 ${result.top}, max |diff| main ${maxDiff(result.main, cases.outputs).toExponential(1)}, worker ${maxDiff(result.worker, cases.outputs).toExponential(1)}`);
    } finally {
      await server.stop();
    }
  });
}
