// Per-step profile of kiln's engine in wasm, and the convolution kernel's GFLOP/s.
//
//   node bench/infer/profile-wasm.mjs MODEL.onnx [--batch 1,64] [--unfused] [--conv] [--check]
//
//   node bench/infer/profile-wasm.mjs MODEL.onnx --against OTHER.wasm [--batch 1,64]
//
// --against: another build of the harness (the code before a change), loaded beside --wasm's in
// this process; both run the model in alternating groups (A B B A ...), and each batch prints
// both medians and the median of the rounds' ratios. --twin OTHER.onnx: the other side runs that
// model instead (an int8 file against its float twin), on --against's build or this one.
//
// Loads bench/wasm-profile's module (build it first: see bench/README.md), runs the model's plan
// with the engine's timer per step (median of the runs after a warm-up) and prints ms per step.
import { readFileSync } from 'node:fs';
import { alternate } from './alternate.mjs';

const args = process.argv.slice(2);
const model = args.find((a, i) => !a.startsWith('--') && a.endsWith('.onnx') && args[i - 1] !== '--twin');
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const batches = opt('--batch', '1,64').split(',').map(Number);
const wasmPath = opt('--wasm', new URL('../../target-wasm/profile/wasm32-unknown-unknown/release/kiln_wasm_profile.wasm', import.meta.url).pathname);
/** The harness at `path`, instantiated: its exports. */
async function harness(path) {
  let memory;
  const env = {
    now: () => performance.now(),
    print: (ptr, len) => console.log(new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len))),
  };
  const { instance } = await WebAssembly.instantiate(readFileSync(path), { env });
  memory = instance.exports.memory;
  return instance.exports;
}
/** Loads the model's bytes into harness `h`; exits when it declines them. */
function loadInto(h, bytes) {
  const ptr = h.alloc(bytes.length);
  new Uint8Array(h.memory.buffer, ptr, bytes.length).set(bytes);
  if (h.load(ptr, bytes.length) !== 0) process.exit(1);
}
const k = await harness(wasmPath);

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
  loadInto(k, bytes);
  if (args.includes('--against') || args.includes('--twin')) {
    const old = await harness(opt('--against', wasmPath));
    loadInto(old, args.includes('--twin') ? readFileSync(opt('--twin')) : bytes);
    for (const b of batches) {
      // an odd number of rounds: the median of the ratios' reciprocals is the median's reciprocal
      const r = alternate(k, old, b, 1500);
      console.log(`== ${model} batch ${b}: this build ${r.a.toFixed(4)} ms, --against ${r.b.toFixed(4)} ms, against / this ${(1 / r.ratio).toFixed(3)} (median of ${r.rounds} alternating rounds of ${r.reps} runs)`);
    }
    process.exit(0);
  }
  if (args.includes('--check')) for (const b of batches) k.check(b);
  const fused = args.includes('--unfused') ? 0 : 1;
  for (const b of batches) {
    const until = performance.now() + 1500;
    while (performance.now() < until) k.profile(b, 1, fused, 0); // warm-up: V8 tiers up meanwhile
    console.log(`== ${model} batch ${b} (${fused ? 'fused plan' : 'unfused: every node on its own'})`);
    k.profile(b, b === 1 ? 101 : 11, fused, 1);
  }
}
