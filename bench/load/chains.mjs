// One engine loading one Relu chain in this Node process: `repeats` loads (parse + plan + first
// prediction), the median in seconds as one JSON line. bench/load/chains.py runs it per engine and size.
//
//   node bench/load/chains.mjs kiln|tract|onnxruntime-web FILE.onnx REPEATS
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const [engine, file, repeatsArg] = process.argv.slice(2);
const bytes = new Uint8Array(readFileSync(file));
const x = Float32Array.from({ length: 16 }, (_, i) => -1 + (2 * i) / 15);

let load;
if (engine === 'kiln' || engine === 'tract') {
  const kiln = await import(pathToFileURL(join(KILN_PKG, 'index.js')).href);
  await (engine === 'kiln' ? kiln.initKiln() : kiln.init()); // the module's start-up is not the graph's
  load = async () => {
    const model = await kiln.loadModel(bytes, { engine });
    const y = await model.run(x, [1, 16]);
    if (model.engine !== engine || y.data[15] !== 1 || y.data[0] !== 0) throw new Error(`wrong result on ${model.engine}`);
    model.free();
  };
} else if (engine === 'onnxruntime-web') {
  const ort = await import(pathToFileURL(join(ROOT, 'wasm/node_modules/onnxruntime-web/dist/ort.node.min.mjs')).href);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  const warm = await ort.InferenceSession.create(new Uint8Array(readFileSync(join(dirname(file), 'relu_chain_1.onnx'))));
  await warm.release(); // instantiate the wasm before the clock, as kiln's init above
  load = async () => {
    const s = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    const y = await s.run({ x: new ort.Tensor('float32', x, [1, 16]) });
    if (y.y.data[15] !== 1) throw new Error('wrong result');
    await s.release();
  };
} else {
  throw new Error(`engine must be kiln, tract or onnxruntime-web, not ${engine}`);
}
const runs = [];
for (let i = 0; i < Number(repeatsArg || 3); i++) {
  const t = performance.now();
  await load();
  runs.push((performance.now() - t) / 1000);
}
runs.sort((a, b) => a - b);
console.log(JSON.stringify({ engine, file, runs, seconds: runs[runs.length >> 1] }));
