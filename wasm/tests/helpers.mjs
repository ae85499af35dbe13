// What the kiln-wasm tests share: where the models are (built by make_models.py during the test
// run; test.sh sets KILN_WASM_MODELS) and how a case from cases.json becomes typed arrays.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const modelsDir = process.env.KILN_WASM_MODELS;
if (!modelsDir) {
  throw new Error('KILN_WASM_MODELS is not set: run the tests through wasm/test.sh, which builds the models first');
}

export const modelPath = (name) => join(modelsDir, name);
export const modelBytes = (name) => new Uint8Array(readFileSync(modelPath(name)));
export const cases = JSON.parse(readFileSync(join(modelsDir, 'cases.json'), 'utf8')).cases;
/** The cases simd.test.mjs runs on both small modules: kiln's exports (int8 too) with one input. */
export const simdCases = cases.filter((c) => c.tool === 'kiln' && c.inputs.length === 1);

// float16 travels as float32 (exact: every float16 is a float32).
const arrays = { float16: Float32Array, float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };

/** A cases.json tensor ({ type, data }) as the typed array kiln-wasm takes and returns. */
export function typed({ type, data }) {
  if (type === 'int64') return BigInt64Array.from(data, (v) => BigInt(v));
  const T = arrays[type];
  if (!T) throw new Error(`no typed array for ${type}`);
  return T.from(data);
}

/** Largest |a - b| over two equally long arrays of numbers or bigints. */
export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(Number(a[i]) - Number(b[i])));
  return worst;
}

/** 8x8 "pixels" in [0, 1], deterministic. */
export function pixels(batch = 1, seed = 1) {
  const data = new Float32Array(batch * 64);
  for (let i = 0; i < data.length; i++) data[i] = ((i * 31 + seed * 17) % 16) / 16;
  return data;
}
