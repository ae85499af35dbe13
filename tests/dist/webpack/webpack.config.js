// The smallest webpack 5 configuration an app has: an entry and an output folder. Nothing for
// kiln-wasm: webpack follows its `new URL('./x.wasm', import.meta.url)` (asset modules) and
// `new Worker(new URL('./kiln-worker.js', import.meta.url))` (a worker chunk) on its own.
import path from 'node:path';

export default {
  mode: 'production',
  entry: './src/main.js',
  output: { path: path.resolve(process.env.OUT_DIR || 'dist'), filename: 'main.js', clean: true },
};
