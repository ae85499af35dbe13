// kiln-wasm/worker: kiln-wasm's API with the model running in a Web Worker (a worker thread in
// Node), so a page's main thread stays free while a model runs. Same names, every method async:
//   const model = await loadModel(url); const out = await model.run(data, dims);
// No SharedArrayBuffer or threads inside wasm are used, so no COOP/COEP headers are needed.

import { isImage, portableImage } from './image.js';

const isNode = typeof process === 'object' && typeof process.versions?.node === 'string';

let worker = null; // one worker for every model, started on first use
let nextRequest = 1;
const pending = new Map(); // request id → { resolve, reject }

/** Starts the worker. Written so that Vite and webpack see `new Worker(new URL(…, import.meta.url))`. */
async function startWorker() {
  if (typeof Worker === 'function' && !isNode) {
    const w = new Worker(new URL('./kiln-worker.js', import.meta.url), { type: 'module' });
    w.addEventListener('message', (e) => settle(e.data));
    w.addEventListener('error', (e) => fail(w, new Error(`kiln-wasm: the worker failed: ${e.message ?? 'could not start kiln-worker.js'}`)));
    w.addEventListener('messageerror', () => fail(w, new Error('kiln-wasm: a message from the worker could not be read')));
    return { handle: w, post: (m, transfer) => w.postMessage(m, transfer), idle() {}, busy() {} };
  }
  const { Worker: NodeWorker } = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:worker_threads');
  const w = new NodeWorker(new URL('./kiln-worker.js', import.meta.url));
  w.on('message', settle);
  w.on('error', (e) => fail(w, new Error(`kiln-wasm: the worker failed: ${e.message}`)));
  w.on('exit', (code) => fail(w, new Error(`kiln-wasm: the worker exited (code ${code})`)));
  w.unref(); // an idle worker must not keep Node running; busy() holds it while requests are out
  return { handle: w, post: (m, transfer) => w.postMessage(m, transfer), idle: () => w.unref(), busy: () => w.ref() };
}

function settle({ id, ok, value, error, progress }) {
  const request = pending.get(id);
  if (!request) return;
  if (progress !== undefined) {
    request.onProgress?.(progress); // a fit's progress report; the answer comes later
    return;
  }
  pending.delete(id);
  if (pending.size === 0) worker?.then((w) => w.idle());
  if (ok) request.resolve(value);
  else request.reject(error.name === 'TypeError' ? new TypeError(error.message) : new Error(error.message));
}

/** The worker died: every request still out fails, and the next call starts a new worker. */
function fail(handle, error) {
  worker?.then((w) => {
    if (w.handle !== handle) return;
    worker = null;
    for (const request of pending.values()) request.reject(error);
    pending.clear();
  });
}

async function call(op, args, transfer = [], onProgress = undefined) {
  if (worker === null) worker = startWorker();
  const w = await worker;
  const id = nextRequest++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    w.busy();
    w.post({ id, op, args }, transfer);
  });
}

/** Loads the WebAssembly module in the worker (once). `loadModel` calls it for you. */
export function init(wasm) {
  return call('init', { wasm: typeof wasm === 'string' || wasm instanceof URL ? absolute(wasm) : wasm });
}

/** A URL relative to the page, made absolute: the worker's own location is kiln-worker.js. */
function absolute(url) {
  if (!isNode && typeof location !== 'undefined') return new URL(String(url), location.href).href;
  return String(url);
}

/** Loads an ONNX model into the worker: a URL string (a file path in Node), bytes, a Response or a Blob. */
export async function loadModel(source, options) {
  let payload = source;
  if (typeof source === 'string' || source instanceof URL) payload = absolute(source);
  else if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`kiln-wasm: cannot load the model from ${source.url || 'a Response'}: HTTP ${source.status} ${source.statusText}`.trim());
    payload = new Uint8Array(await source.arrayBuffer());
  }
  const info = await call('load', { source: payload, options });
  return new WorkerModel(info);
}

/** Ends the shared worker (models loaded in it are gone). The next call starts a new one. */
export async function terminate() {
  if (worker === null) return;
  const w = await worker;
  worker = null;
  for (const request of pending.values()) request.reject(new Error('kiln-wasm: the worker was terminated'));
  pending.clear();
  await w.handle.terminate();
}

/** An image the worker can receive (an <img> or a canvas is read here first). */
function portable(data) {
  return isImage(data) ? portableImage(data) : data;
}

/** A model loaded in the worker: the API of kiln-wasm's `Model`, with promises. */
export class WorkerModel {
  #id;

  constructor(info) {
    this.#id = info.id;
    this.inputs = info.inputs;
    this.outputs = info.outputs;
    this.labels = info.labels;
    this.metadata = info.metadata;
    this.engine = info.engine;
    this.simd = info.simd;
    const id = this.#id;
    /** The model's tokenizer, working in the worker (`encode` / `decode` resolve), or null. */
    this.tokenizer = info.tokenizer === null ? null : Object.freeze({
      ...info.tokenizer,
      encode: (text) => call('encode', { id, text }),
      decode: (ids) => call('decode', { id, ids }),
    });
    Object.freeze(this);
  }

  /** Generates in the worker with kiln-core's loop (the text Python generates for the same seed);
   * `onToken(text, id)` is called on the page's thread as tokens arrive. */
  generate(prompt, options = {}) {
    const { onToken, ...rest } = options ?? {};
    if (onToken !== undefined && typeof onToken !== 'function') {
      return Promise.reject(new TypeError('kiln-wasm: generate\'s onToken must be a function'));
    }
    const progress = onToken ? (p) => onToken(p.text, p.id) : undefined;
    return call('generate', { id: this.#id, prompt, options: rest, progress: Boolean(onToken) }, [], progress);
  }

  /** Runs a model that has one input; resolves to its first output `{ data, dims }`. `run(image)` takes an image. */
  run(data, dims) {
    return call('run', { id: this.#id, data: portable(data), dims });
  }

  /** Runs a model on named inputs; resolves to every output by name. */
  runMany(inputs) {
    return call('runMany', { id: this.#id, inputs });
  }

  /** Classifies one example: `[{ label, index, score }]`, best first. */
  classify(data, dims, options) {
    return call('classify', { id: this.#id, data: portable(data), dims, options });
  }

  /** Releases the model's memory in the worker. */
  free() {
    return call('free', { id: this.#id });
  }
}

/**
 * kiln-wasm's `Trainer` running in the worker: the same methods, each returning a Promise, so a
 * page stays responsive while a model trains. `onProgress` is called on the page's thread as the
 * worker reports; here it only observes (training runs on in the worker meanwhile), so its return
 * value cannot stop a fit: `terminate()` can.
 */
export class Trainer {
  #id;

  /** Loads a `.kiln` checkpoint into the worker: a URL (a file path in Node), bytes, a Response or a Blob. */
  static async fromKiln(source) {
    let payload = source;
    if (typeof source === 'string' || source instanceof URL) payload = absolute(source);
    else if (typeof Response !== 'undefined' && source instanceof Response) {
      if (!source.ok) throw new Error(`kiln-wasm: cannot load the checkpoint from ${source.url || 'a Response'}: HTTP ${source.status} ${source.statusText}`.trim());
      payload = new Uint8Array(await source.arrayBuffer());
    }
    const { id } = await call('trainerLoad', { source: payload });
    return new Trainer(id);
  }

  constructor(id) {
    this.#id = id;
  }

  #call(method, ...args) {
    return call('trainer', { id: this.#id, method, args });
  }

  /** Resolves to the layers, the parameters (name, shape, trainable) and the input shape. */
  describe() {
    return this.#call('describe');
  }

  freeze(prefix) {
    return this.#call('freeze', prefix);
  }

  unfreeze(prefix) {
    return this.#call('unfreeze', prefix);
  }

  compile(options) {
    return this.#call('compile', options);
  }

  fit(x, dims, labels, options = {}) {
    const { onProgress, ...rest } = options ?? {};
    if (onProgress !== undefined && typeof onProgress !== 'function') {
      return Promise.reject(new TypeError('kiln-wasm: fit: onProgress must be a function'));
    }
    return call('trainer', { id: this.#id, method: 'fit', args: [x, dims, labels, rest], progress: Boolean(onProgress) }, [], onProgress);
  }

  evaluate(x, dims, labels, options) {
    return this.#call('evaluate', x, dims, labels, options);
  }

  predict(x, dims) {
    return this.#call('predict', x, dims);
  }

  exportOnnx(options) {
    return this.#call('exportOnnx', options);
  }

  save() {
    return this.#call('save');
  }

  getFlatParameters() {
    return this.#call('getFlatParameters');
  }

  free() {
    return this.#call('free');
  }
}
