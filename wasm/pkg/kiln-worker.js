// The script inside kiln-wasm's worker (started by worker.js): it loads models with index.js
// and answers { id, op, args } requests with { id, ok, value } or { id, ok: false, error }.
// Runs as a module Web Worker in pages and as a worker thread in Node.
import { init, loadModel } from './index.js';
import { Trainer } from './train.js';

// No top-level await here: Vite bundles worker scripts as classic scripts (format "iife") unless an
// app configures otherwise, and those cannot hold one (caught by tests/dist's Vite app). Node's
// parentPort queues the messages that arrive before its listener is attached.
const inPage = typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;
let port = inPage ? self : null;

const models = new Map(); // id → Model
let nextModel = 1;
const trainers = new Map(); // id → Trainer
const trainerMethods = ['freeze', 'unfreeze', 'compile', 'fit', 'evaluate', 'predict', 'exportOnnx', 'save', 'getFlatParameters', 'free'];

function model(id) {
  const m = models.get(id);
  if (!m) throw new Error('kiln-wasm: this model was freed; load it again to use it');
  return m;
}

function tokenizerOf(id) {
  const t = model(id).tokenizer;
  if (t === null) throw new Error('kiln-wasm: this model carries no tokenizer (no "kiln.tokenizer" metadata): export it with export_onnx(..., tokenizer=tok)');
  return t;
}

/** Output buffers move to the page instead of being copied a second time. */
function buffersOf(tensors) {
  return tensors.map((t) => t.data.buffer);
}

const handlers = {
  async init({ wasm }) {
    await init(wasm);
    return [undefined];
  },
  async load({ source, options }) {
    const m = await loadModel(source, options);
    const id = nextModel++;
    models.set(id, m);
    const { inputs, outputs, labels, metadata, engine, simd } = m;
    const tokenizer = m.tokenizer === null ? null : { kind: m.tokenizer.kind, vocabSize: m.tokenizer.vocabSize };
    return [{ id, inputs, outputs, labels, metadata, engine, simd, tokenizer }];
  },
  async generate({ id, prompt, options, progress }, request) {
    const onToken = progress ? (text, token) => void port.postMessage({ id: request, progress: { text, id: token } }) : undefined;
    return [await model(id).generate(prompt, { ...options, onToken })];
  },
  encode({ id, text }) {
    const ids = tokenizerOf(id).encode(text);
    return [ids, [ids.buffer]];
  },
  decode({ id, ids }) {
    return [tokenizerOf(id).decode(ids)];
  },
  run({ id, data, dims }) {
    const out = model(id).run(data, dims);
    return [out, buffersOf([out])];
  },
  runMany({ id, inputs }) {
    const out = model(id).runMany(inputs);
    return [out, buffersOf(Object.values(out))];
  },
  classify({ id, data, dims, options }) {
    return [model(id).classify(data, dims, options)];
  },
  free({ id }) {
    models.get(id)?.free();
    models.delete(id);
    return [undefined];
  },
  async trainerLoad({ source }) {
    const t = await Trainer.fromKiln(source);
    const id = nextModel++;
    trainers.set(id, t);
    return [{ id }];
  },
  trainer({ id, method, args, progress }, request) {
    const t = trainers.get(id);
    if (!t) throw new Error('kiln-wasm: this trainer was freed; load the checkpoint again to use it');
    if (method === 'describe') return [{ layers: t.layers, parameters: t.parameters, inputShape: t.inputShape }];
    if (!trainerMethods.includes(method)) throw new Error(`kiln-wasm worker: the Trainer has no method ${method}`);
    if (method === 'fit' && progress) {
      const [x, dims, labels, options] = args;
      args = [x, dims, labels, { ...options, onProgress: (p) => void port.postMessage({ id: request, progress: p }) }];
    }
    const value = t[method](...args);
    if (method === 'free') trainers.delete(id);
    // Exported bytes, parameters and predictions move to the page instead of being copied.
    const buffers = [value, value?.data].filter((v) => v instanceof Uint8Array || v instanceof Float32Array);
    return [value, buffers.map((v) => v.buffer)];
  },
};

async function answer({ id, op, args }) {
  try {
    const handler = handlers[op];
    if (!handler) throw new Error(`kiln-wasm worker: unknown request ${op}`);
    const [value, transfer = []] = await handler(args, id);
    port.postMessage({ id, ok: true, value }, transfer);
  } catch (e) {
    port.postMessage({ id, ok: false, error: { name: e?.name ?? 'Error', message: e?.message ?? String(e) } });
  }
}

if (inPage) {
  self.addEventListener('message', (e) => answer(e.data));
} else {
  import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:worker_threads').then(({ parentPort }) => {
    port = parentPort;
    port.on('message', answer);
  });
}
