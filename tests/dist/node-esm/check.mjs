// A plain Node ESM script in a folder where `npm install kiln-wasm-VERSION.tgz` ran: the package is
// found by name (its "exports"), finds its own .wasm files on disk, and predicts what Python's
// kiln.InferenceSession predicted for the same five digits, on the main thread and in kiln-wasm/worker.
//   node check.mjs CASES_DIR
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel, version } from 'kiln-wasm';
import { loadModel as loadInWorker, terminate } from 'kiln-wasm/worker';

const dir = process.argv[2];
const cases = JSON.parse(readFileSync(path.join(dir, 'cases.json'), 'utf8'));
const pkg = JSON.parse(readFileSync(new URL(import.meta.resolve('kiln-wasm/package.json')), 'utf8'));
const installedFrom = path.dirname(new URL(import.meta.resolve('kiln-wasm')).pathname);
assert.ok(installedFrom.startsWith(path.resolve('node_modules')), `kiln-wasm resolved to ${installedFrom}, not this folder's node_modules`);

const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const model = await loadModel(path.join(dir, 'digits.onnx'));
const out = model.run(new Float32Array(cases.inputs), cases.dims);
assert.equal(model.engine, 'kiln', "kiln's engine runs kiln's export");
assert.ok(maxDiff(Array.from(out.data), cases.outputs) < 1e-4, `Node predicts ${out.data.slice(0, 4)}…, Python ${cases.outputs.slice(0, 4)}…`);

const remote = await loadInWorker(path.join(dir, 'digits.onnx'));
const fromWorker = await remote.run(new Float32Array(cases.inputs), cases.dims);
assert.ok(maxDiff(Array.from(fromWorker.data), cases.outputs) < 1e-4, 'the worker predicts what Python predicts');
await terminate();

const photo = await loadModel(path.join(dir, 'digits-images.onnx'));
const pixels = { data: Uint8ClampedArray.from(cases.photo.rgba), width: cases.photo.width, height: cases.photo.height };
assert.ok(maxDiff(Array.from(photo.preprocess(pixels)), cases.photo.input) <= 1e-6, "the photo becomes Python's tensor");
assert.ok(maxDiff(Array.from(photo.run(pixels).data), cases.photo.outputs) < 1e-4, 'run(pixels) predicts what Python predicts');

assert.equal(version, cases.version, `kiln-wasm says version ${version}, Python's kiln ${cases.version}`);
assert.equal(pkg.version, cases.version, `package.json says ${pkg.version}, Python's kiln ${cases.version}`);
assert.equal(model.metadata['kiln.version'], cases.version, 'the export records the version that wrote it');
console.log(`node: kiln-wasm ${version} from ${installedFrom} predicts what Python predicts (max |diff| ${maxDiff(Array.from(out.data), cases.outputs).toExponential(1)}), in a worker too`);
