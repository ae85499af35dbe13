// One version across the package, and a model from a newer kiln that neither engine runs: loadModel's
// error keeps what failed and asks for an update (the rule is kiln-core's onnx::compat, as in Python).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, version } from '../pkg/index.js';
import { loadModel as loadInWorker, terminate } from '../pkg/worker.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const python = process.env.KILN_PYTHON;

test('the package, its version export and the models it loads agree on one version', async () => {
  const pkg = JSON.parse(readFileSync(path.join(here, '../pkg/package.json'), 'utf8'));
  assert.equal(version, pkg.version);
  const fromPython = execFileSync(python, ['-c', 'import kiln; print(kiln.__version__)'], { encoding: 'utf8' }).trim();
  assert.equal(version, fromPython, "kiln-wasm and Python's kiln are one version");
});

test('a model from a newer kiln that neither engine runs asks to update kiln-wasm', async () => {
  assert.ok(python, 'KILN_PYTHON is set by wasm/test.sh');
  const dir = mkdtempSync(path.join(tmpdir(), 'kiln-version-'));
  try {
    execFileSync(python, [path.join(here, '../../py-bindings/tests/future_model.py'), dir]);
    await assert.rejects(loadModel(path.join(dir, 'future.onnx')), (e) => {
      assert.match(e.message, /SoftReluV2/, 'what failed stays in the message');
      assert.ok(e.message.includes(`exported by kiln 99.0.0, newer than this kiln-wasm (${version})`), e.message);
      assert.ok(e.message.includes('npm install kiln-wasm@99.0.0'), e.message);
      return true;
    });
    await assert.rejects(loadModel(path.join(dir, 'future.onnx'), { engine: 'kiln' }), /newer than this kiln-wasm/);
    await assert.rejects(loadInWorker(path.join(dir, 'future.onnx')), /npm install kiln-wasm@99\.0\.0/);
    await assert.rejects(loadModel(path.join(dir, 'same.onnx')), (e) => {
      assert.match(e.message, /SoftReluV2/);
      assert.ok(!e.message.includes('newer'), `a model from this very kiln gets no update hint: ${e.message}`);
      return true;
    });
  } finally {
    await terminate();
    rmSync(dir, { recursive: true, force: true });
  }
});
