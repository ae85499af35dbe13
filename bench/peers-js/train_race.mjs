// The in-browser training race (race.mjs) in Node: one engine and backend per process; prints one
// JSON object as the last line.
//
//   node bench/peers-js/train_race.mjs kiln|tfjs-cpu|tfjs-wasm MODELS_DIR [--epochs N]
//
// bench/make_models.py writes the inputs (race_*). TF.js 4.22's wasm backend registers no
// Conv2DBackpropFilter, so it cannot train this model: that row records the error TF.js gives,
// which is the measurement (its users train on the cpu backend, or WebGL: train_race_browser.mjs).
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';
import { race } from './race.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const [engine, dir] = process.argv.slice(2);
const epochs = process.argv.includes('--epochs') ? Number(process.argv[process.argv.indexOf('--epochs') + 1]) : 2;
const loadavg = os.loadavg()[0];
const result = await race({
  engine,
  epochs,
  read: async (name) => new Uint8Array(readFileSync(join(dir, name))),
  kilnUrl: pathToFileURL(join(KILN_PKG, 'index.js')).href,
});
console.log(JSON.stringify({ case: 'train_race', env: 'node', env_version: process.versions.node, loadavg_start: loadavg, ...result }));
