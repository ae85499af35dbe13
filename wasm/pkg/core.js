// The small module: kiln-core without tract and without backward code — kiln's own ONNX engine
// (which runs the models kiln exports), tokenizers and generation, preprocessing, drift. Loaded
// once, shared by index.js, text.js and drift.js; the Trainer has its own module (train.js).
// Private to the package.
//
// It comes in two builds of the same code, loaded through the same glue (kiln_core.js):
// kiln_core_relaxed_bg.wasm uses relaxed SIMD (fused multiply-adds in the convolution and matrix
// kernels), which an engine without relaxed SIMD refuses to compile at all, so it is chosen only
// where WebAssembly.validate accepts a probe using the same instruction; kiln_core_bg.wasm
// (simd128) everywhere else. One file is downloaded either way.
import initCoreWasm, * as core from './kiln_core.js';
import { moduleLoader, panicGuard } from './util.js';

// (module (func (result v128) (f32x4.relaxed_madd (f32x4.splat (f32.const 0)) ×3)))
const RELAXED_SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 28, 1, 26, 0,
  67, 0, 0, 0, 0, 253, 19, 67, 0, 0, 0, 0, 253, 19, 67, 0, 0, 0, 0, 253, 19, 253, 133, 2, 11,
]);

/** Whether this JavaScript engine runs relaxed SIMD (then `initKiln` loads kiln_core_relaxed_bg.wasm). */
export const relaxedSimd = WebAssembly.validate(RELAXED_SIMD_PROBE);

// Both URLs written out, so that bundlers (Vite, webpack) ship both files next to the code.
const plainUrl = new URL('./kiln_core_bg.wasm', import.meta.url);
const relaxedUrl = new URL('./kiln_core_relaxed_bg.wasm', import.meta.url);

/** Loads the small module (once): the relaxed-SIMD build where the engine runs it. `loadModel` calls it for you. */
export const initKiln = moduleLoader(initCoreWasm, relaxedSimd ? relaxedUrl : plainUrl);

/** Calls into the small module; a panic there restarts that module only. */
export const coreGuard = panicGuard(core.takeLastPanic, core.__wbg_reset_state);

export { core };
