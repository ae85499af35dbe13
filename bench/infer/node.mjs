// One wasm engine on one model in this (fresh) Node process; prints one JSON object as the last line.
//
//   node bench/infer/node.mjs kiln-wasm|onnxruntime-web|tfjs-wasm MODEL [--models bench/out/models] [--quick]
//
// The cold start (import + wasm init + model load + first prediction) is the median over 5 fresh
// processes (2 with --quick): this one and children started with --cold-only.
//
// MODEL is a name in models.json (bench/make_models.py writes both). The engines load as a Node user
// would import them: wasm/pkg/index.js, and onnxruntime-web's Node entry (what `import
// 'onnxruntime-web'` resolves to in Node; the package is a devDependency in wasm/node_modules).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';
import { otherCpuShare } from './cpu.mjs';
import { measure, summariseCold } from './measure.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// KILN_WASM_PKG: another copy of the package (run.sh benchmarks a snapshot of wasm/pkg, so a rebuild
// during the run cannot mix two builds into one report).
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
export const NODE_ENTRIES = {
  'kiln-wasm': join(KILN_PKG, 'index.js'),
  'onnxruntime-web': join(ROOT, 'wasm/node_modules/onnxruntime-web/dist/ort.node.min.mjs'),
  // imports TF.js by package name, resolved from bench/peers-js/node_modules
  'tfjs-wasm': join(ROOT, 'bench/peers-js/tfjs.mjs'),
};
const VERSION_FILES = {
  'kiln-wasm': join(KILN_PKG, 'package.json'),
  'onnxruntime-web': join(ROOT, 'wasm/node_modules/onnxruntime-web/package.json'),
  'tfjs-wasm': join(ROOT, 'bench/peers-js/node_modules/@tensorflow/tfjs-core/package.json'),
};

function usage(message) {
  console.error(`node.mjs: ${message}\nusage: node bench/infer/node.mjs kiln-wasm|onnxruntime-web|tfjs-wasm MODEL [--models DIR] [--quick]`);
  process.exit(2);
}

async function main() {
  const args = process.argv.slice(2);
  const [engine, modelName] = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--models');
  const modelsDir = args.includes('--models') ? args[args.indexOf('--models') + 1] : join(ROOT, 'bench/out/models');
  if (!NODE_ENTRIES[engine]) usage(`unknown engine ${engine}`);
  const models = JSON.parse(readFileSync(join(modelsDir, 'models.json'), 'utf8'));
  const model = models[modelName];
  if (!model) usage(`unknown model ${modelName}; models.json has ${Object.keys(models).join(', ')}`);
  // the TF.js peer takes the same model as a layer list with the same weights (bench/tfjs_spec.py)
  const bytes = new Uint8Array(readFileSync(join(modelsDir, engine === 'tfjs-wasm' ? model.tfjs_file : model.file)));

  // an int8 file's float model (models.json "fp32"), timed against it in this process (kiln-wasm)
  const twin = model.fp32 && engine === 'kiln-wasm' && !args.includes('--cold-only')
    ? { name: model.fp32, bytes: new Uint8Array(readFileSync(join(modelsDir, models[model.fp32].file))) }
    : null;
  const loadavg = os.loadavg()[0];
  const others = otherCpuShare();
  const result = await measure({
    engine,
    url: pathToFileURL(NODE_ENTRIES[engine]).href,
    bytes,
    shape: model.shape,
    quick: args.includes('--quick'),
    coldOnly: args.includes('--cold-only'),
    twin,
  });
  if (args.includes('--cold-only')) {
    console.log(JSON.stringify(result.cold));
    return;
  }
  const otherShare = others.share();
  const colds = [result.cold];
  for (let i = 1; i < (args.includes('--quick') ? 2 : 5); i++) {
    const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), engine, modelName, '--models', modelsDir, '--cold-only'], { encoding: 'utf8' });
    colds.push(JSON.parse(out.trim().split('\n').pop()));
  }
  console.log(JSON.stringify({
    env: 'node',
    env_version: process.versions.node,
    engine,
    engine_version: JSON.parse(readFileSync(VERSION_FILES[engine], 'utf8')).version,
    model: modelName,
    threads: 1,
    ...result,
    cold: summariseCold(colds),
    rss_mb: process.memoryUsage().rss / 2 ** 20,
    loadavg_start: loadavg,
    // share of all cores' time other processes took during the measurement (0 = undisturbed)
    other_cpu_share: otherShare,
  }));
}

main().catch((e) => {
  console.error(e?.stack ?? e);
  process.exit(1);
});
