// Per-step profile of kiln's engine in wasm, and the convolution kernel's GFLOP/s.
//
//   node bench/infer/profile-wasm.mjs MODEL.onnx [--batch 1,64] [--unfused] [--conv] [--check]
//
// --check: the fused plan's outputs against the unfused plan's (every node on its own, in float).
//
// Loads bench/wasm-profile's module (build it first: see bench/README.md), runs the model's plan
// with the engine's timer per step (median of the runs after a warm-up) and prints ms per step.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const model = args.find((a) => !a.startsWith('--') && a.endsWith('.onnx'));
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const batches = opt('--batch', '1,64').split(',').map(Number);
const wasmPath = opt('--wasm', new URL('../../target-wasm/profile/wasm32-unknown-unknown/release/kiln_wasm_profile.wasm', import.meta.url).pathname);
let memory;
const env = {
  now: () => performance.now(),
  print: (ptr, len) => console.log(new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len))),
};
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), { env });
memory = instance.exports.memory;
const k = instance.exports;

if (args.includes('--conv')) {
  // the ResNet-8's and the digits CNN's convolutions, batch 1 and 64
  const convs = [[3, 32, 16, 3, 1, 1], [16, 32, 16, 3, 1, 1], [16, 32, 32, 3, 2, 1], [32, 16, 32, 3, 1, 1],
    [16, 32, 32, 1, 2, 0], [32, 16, 64, 3, 2, 1], [64, 8, 64, 3, 1, 1], [1, 8, 16, 3, 1, 1], [16, 4, 32, 3, 1, 1]];
  for (const n of batches) {
    for (const [c, h, o, kk, s, p] of convs) {
      // the float kernel, then the integer one (int8) on the same geometry, back to back
      for (const run of [k.conv, k.qconv]) {
        for (let i = 0; i < 3; i++) run(n, c, h, o, kk, s, p, 3); // warm-up: V8 tiers up
        run(n, c, h, o, kk, s, p, n === 1 ? 201 : 21);
      }
    }
  }
}
if (model) {
  const bytes = readFileSync(model);
  const ptr = k.alloc(bytes.length);
  new Uint8Array(memory.buffer, ptr, bytes.length).set(bytes);
  if (k.load(ptr, bytes.length) !== 0) process.exit(1);
  if (args.includes('--check')) for (const b of batches) k.check(b);
  const fused = args.includes('--unfused') ? 0 : 1;
  for (const b of batches) {
    const until = performance.now() + 1500;
    while (performance.now() < until) k.profile(b, 1, fused, 0); // warm-up: V8 tiers up meanwhile
    console.log(`== ${model} batch ${b} (${fused ? 'fused plan' : 'unfused: every node on its own'})`);
    k.profile(b, b === 1 ? 101 : 11, fused, 1);
  }
}
