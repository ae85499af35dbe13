// Batch latency with more than one thread, in Node: kiln-wasm/worker's loadModel(file, { threads })
// (workers, each with its own copy of the model, a batch split by rows) against onnxruntime-web with
// ort.env.wasm.numThreads (its threaded wasm, which needs SharedArrayBuffer: in a page, a
// cross-origin-isolated one). Prints one JSON object as the last line.
//
//   node bench/infer/threads.mjs MODEL [--models bench/out/models] [--quick]
//
// Both sides' times include handing the batch over (kiln: copies to the workers and back; ORT: its
// own). Medians over 30 runs (10 with --quick) after 5 warm-up runs, batch 64.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';
import { otherCpuShare } from './cpu.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const args = process.argv.slice(2);
const name = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--models');
const modelsDir = resolve(args.includes('--models') ? args[args.indexOf('--models') + 1] : join(ROOT, 'bench/out/models'));
const quick = args.includes('--quick');
const model = JSON.parse(readFileSync(join(modelsDir, 'models.json'), 'utf8'))[name];
if (!model) throw new Error(`unknown model ${name}`);
const file = join(modelsDir, model.file);
const BATCH = 64;
const shape = [BATCH, ...model.shape]; // models.json: one example's shape
const x = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.37));

async function time(run) {
  for (let i = 0; i < 5; i++) await run();
  const t = [];
  for (let i = 0; i < (quick ? 10 : 30); i++) {
    const t0 = performance.now();
    await run();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)];
}

async function ortRow(threads) {
  const ort = await import(pathToFileURL(join(ROOT, 'wasm/node_modules/onnxruntime-web/dist/ort.node.min.mjs')).href);
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  const s = await ort.InferenceSession.create(new Uint8Array(readFileSync(file)), { executionProviders: ['wasm'] });
  const [input] = s.inputNames;
  const ms = await time(() => s.run({ [input]: new ort.Tensor('float32', x, shape) }));
  await s.release();
  return { engine: 'onnxruntime-web', threads, how: `ort.env.wasm.numThreads = ${threads}`, ms };
}

if (args.includes('--ort')) {
  // onnxruntime-web fixes its thread count when its wasm starts: one process per count
  console.log(JSON.stringify(await ortRow(Number(args[args.indexOf('--ort') + 1]))));
  process.exit(0);
}
const others = otherCpuShare();
const loadavg = os.loadavg()[0];
const rows = [];
const kiln = await import(pathToFileURL(join(KILN_PKG, 'worker.js')).href);
for (const threads of [1, 2]) {
  const m = await kiln.loadModel(file, { threads });
  rows.push({ engine: 'kiln-wasm/worker', threads, how: m.threads.reason, ms: await time(() => m.run(x, shape)) });
  await m.free();
}
await kiln.terminate();
for (const threads of [1, 2]) {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...args, '--ort', String(threads)], { encoding: 'utf8' });
  rows.push(JSON.parse(out.trim().split('\n').pop()));
}
console.log(JSON.stringify({ case: 'threads', env: 'node', env_version: process.versions.node, model: name, batch: BATCH, rows, cores: os.availableParallelism(),
  loadavg_start: loadavg, other_cpu_share: others.share() }));
