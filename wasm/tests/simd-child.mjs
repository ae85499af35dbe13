// Run by simd.test.mjs in a Node started with or without relaxed SIMD: loads kiln's exports from
// cases.json with loadModel, as a user would, and prints which module ran them and their outputs.
import { loadModel, relaxedSimd } from '../pkg/index.js';
import { modelPath, simdCases, typed } from './helpers.mjs';

const results = [];
for (const c of simdCases) {
  const model = await loadModel(modelPath(c.model));
  const [input] = c.inputs;
  const out = model.run(typed(input), input.dims);
  results.push({ name: c.name, engine: model.engine, simd: model.simd, data: Array.from(out.data) });
  model.free();
}
console.log(JSON.stringify({ relaxedSimd, results }));
