// kiln-wasm against onnxruntime-web's wasm backend, on the same .onnx, in the same Node process.
//
//   node wasm/bench-node.mjs MODEL.onnx [--json OUT.json]
//
// Prints, for each runtime: the .wasm's raw / gzip / brotli size, the time from loadModel (or
// InferenceSession.create) to the first prediction — including the wasm's own initialisation,
// which is what a page waits for — the median latency of one call at batch 1 and batch 64, and the
// first call at batch 64 (kiln optimises a plan per new batch size then).
// The model's first input must be float32 with a free batch dimension (a digits CNN or MLP).
// onnxruntime-web is a devDependency for this comparison only, run with one thread (kiln has
// one, and threads need COOP/COEP headers that a page may not have).
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';

const args = process.argv.slice(2);
const modelPath = args.find((a) => !a.startsWith('--'));
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;
if (!modelPath) {
  console.error('usage: node bench-node.mjs MODEL.onnx [--json OUT.json]');
  process.exit(2);
}
const bytes = readFileSync(modelPath);
const require = createRequire(import.meta.url);

function sizes(file) {
  const b = readFileSync(file);
  const brotli = brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } });
  return { raw: b.length, gzip: gzipSync(b, { level: 9 }).length, brotli: brotli.length };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Median ms per call of `run`, after warm-up; calls are timed in groups so the clock's grain does
 * not matter. The warm-up lasts at least a second: V8 first runs wasm with its baseline compiler
 * and swaps in optimised code for hot functions in the background (twice as fast here).
 */
async function latency(run, { warmupMs = 1000, groups = 31, perGroup = 20 } = {}) {
  const until = performance.now() + warmupMs;
  for (let i = 0; i < 50 || performance.now() < until; i++) await run();
  const times = [];
  for (let g = 0; g < groups; g++) {
    const t0 = performance.now();
    for (let i = 0; i < perGroup; i++) await run();
    times.push((performance.now() - t0) / perGroup);
  }
  return median(times);
}

function inputFor(dims, batch) {
  const shape = dims.map((d, i) => (i === 0 ? batch : d ?? 1));
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 17) / 16; // deterministic pixels in [0, 1]
  return { data, shape };
}

// kiln-wasm twice: with the engine loadModel picks (kiln's own for kiln's exports, in the small
// module) and with tract forced (the path for every other model).
async function benchKiln(engine) {
  const t0 = performance.now();
  const { loadModel } = await import('./pkg/index.js');
  const model = await loadModel(bytes, { engine });
  const one = inputFor(model.inputs[0].dims, 1);
  const first = model.run(one.data, one.shape);
  const firstMs = performance.now() - t0;
  const b64 = inputFor(model.inputs[0].dims, 64);
  // kiln optimises a plan for each new batch size on its first run at that size (core/src/infer/plans.rs)
  const t64 = performance.now();
  model.run(b64.data, b64.shape);
  const first64Ms = performance.now() - t64;
  const result = {
    runtime: `kiln-wasm (${model.engine} engine)`,
    wasm: sizes(new URL(model.engine === 'kiln' ? './pkg/kiln_core_bg.wasm' : './pkg/kiln_wasm_bg.wasm', import.meta.url)),
    firstPredictionMs: firstMs,
    firstBatch64Ms: first64Ms,
    batch1Ms: await latency(() => model.run(one.data, one.shape)),
    batch64Ms: await latency(() => model.run(b64.data, b64.shape)),
    sample: Array.from(first.data.slice(0, 10)),
  };
  model.free();
  return result;
}

async function benchOrt() {
  const t0 = performance.now();
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = 1;
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  const name = session.inputNames[0];
  const meta = session.inputMetadata?.[0];
  const dims = meta?.shape?.map((d) => (typeof d === 'number' ? d : null)) ?? [null, 1, 8, 8];
  const feed = (x) => ({ [name]: new ort.Tensor('float32', x.data, x.shape) });
  const one = inputFor(dims, 1);
  const first = await session.run(feed(one));
  const firstMs = performance.now() - t0;
  const b64 = inputFor(dims, 64);
  const t64 = performance.now();
  await session.run(feed(b64));
  const first64Ms = performance.now() - t64;
  const wasmFile = new URL('./ort-wasm-simd-threaded.wasm', pathToFileURL(require.resolve('onnxruntime-web')));
  const result = {
    runtime: 'onnxruntime-web (wasm, 1 thread)',
    wasm: sizes(wasmFile),
    firstPredictionMs: firstMs,
    firstBatch64Ms: first64Ms,
    batch1Ms: await latency(() => session.run(feed(one))),
    batch64Ms: await latency(() => session.run(feed(b64))),
    sample: Array.from(first[session.outputNames[0]].data.slice(0, 10)),
  };
  await session.release();
  return result;
}

const kiln = await benchKiln('auto');
const kilnTract = await benchKiln('tract');
const ort = await benchOrt();
const maxDiff = Math.max(...kiln.sample.map((v, i) => Math.abs(v - ort.sample[i])));

const mb = (n) => (n / 1e6).toFixed(2);
const ms = (n) => n.toFixed(3);
console.log(`model: ${modelPath} (${bytes.length} bytes); Node ${process.versions.node}`);
console.log('| runtime | wasm raw MB | gzip MB | brotli MB | loadModel → first prediction ms | batch 1 ms | batch 64 ms |');
console.log('|---|---|---|---|---|---|---|');
for (const r of [kiln, kilnTract, ort]) {
  console.log(`| ${r.runtime} | ${mb(r.wasm.raw)} | ${mb(r.wasm.gzip)} | ${mb(r.wasm.brotli)} | ${r.firstPredictionMs.toFixed(0)} | ${ms(r.batch1Ms)} | ${ms(r.batch64Ms)} |`);
}
console.log(`first call at batch 64 (after batch 1): kiln-wasm ${kiln.firstBatch64Ms.toFixed(1)} ms, onnxruntime-web ${ort.firstBatch64Ms.toFixed(1)} ms`);
console.log(`gzip size ratio kiln / onnxruntime-web: ${(kiln.wasm.gzip / ort.wasm.gzip).toFixed(2)}; outputs agree to ${maxDiff.toExponential(1)}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ model: modelPath, node: process.versions.node, kiln, kilnTract, ort, maxDiff }, null, 1));
