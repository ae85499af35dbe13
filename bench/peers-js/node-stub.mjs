// What the benchmark page's import map gives for the Node built-ins (fs, os, path, perf_hooks) that
// tfjs-backend-wasm's ES-module build imports for its Node code path, as a bundler would stub them.
export default {};
