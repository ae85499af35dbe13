// The small module, kiln_core_bg.wasm: kiln-core without tract and without backward code — kiln's
// own ONNX engine (which runs the models kiln exports), tokenizers and generation, preprocessing,
// drift. Loaded once, shared by index.js, text.js and drift.js; the Trainer has its own module
// (train.js). Private to the package.
import initCoreWasm, * as core from './kiln_core.js';
import { moduleLoader, panicGuard } from './util.js';

/** Loads kiln_core_bg.wasm (once). `loadModel` calls it for you. */
export const initKiln = moduleLoader(initCoreWasm, new URL('./kiln_core_bg.wasm', import.meta.url));

/** Calls into the small module; a panic there restarts that module only. */
export const coreGuard = panicGuard(core.takeLastPanic, core.__wbg_reset_state);

export { core };
