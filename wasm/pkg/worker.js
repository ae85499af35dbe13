// kiln-wasm/worker: kiln-wasm's API with the model running in a Web Worker (a worker thread in
// Node), so a page's main thread stays free while a model runs. Same names, every method async:
//   const model = await loadModel(url); const out = await model.run(data, dims);
// No SharedArrayBuffer or threads inside wasm are used, so no COOP/COEP headers are needed.

import { isImage, portableImage } from './image.js';

const isNode = typeof process === 'object' && typeof process.versions?.node === 'string';

// The workers: slot 0 serves every model and Trainer; a model loaded with { threads: n } also uses
// slots 1 … n-1, each holding its own copy of it. Started on first use.
const pool = []; // slot → Promise<handle>
let nextRequest = 1;
const pending = new Map(); // request id → { resolve, reject, onProgress, slot }
let initArgs = null; // what init() was given, for workers started later

/** Starts a worker. Written so that Vite and webpack see `new Worker(new URL(…, import.meta.url))`. */
async function startWorker(slot) {
  if (typeof Worker === 'function' && !isNode) {
    const w = new Worker(new URL('./kiln-worker.js', import.meta.url), { type: 'module' });
    w.addEventListener('message', (e) => settle(e.data));
    w.addEventListener('error', (e) => fail(slot, w, new Error(`kiln-wasm: the worker failed: ${e.message ?? 'could not start kiln-worker.js'}`)));
    w.addEventListener('messageerror', () => fail(slot, w, new Error('kiln-wasm: a message from the worker could not be read')));
    return { handle: w, post: (m, transfer) => w.postMessage(m, transfer), idle() {}, busy() {} };
  }
  const { Worker: NodeWorker } = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:worker_threads');
  const w = new NodeWorker(new URL('./kiln-worker.js', import.meta.url));
  w.on('message', settle);
  w.on('error', (e) => fail(slot, w, new Error(`kiln-wasm: the worker failed: ${e.message}`)));
  w.on('exit', (code) => fail(slot, w, new Error(`kiln-wasm: the worker exited (code ${code})`)));
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
  if (![...pending.values()].some((r) => r.slot === request.slot)) pool[request.slot]?.then((w) => w.idle());
  if (ok) request.resolve(value);
  else request.reject(error.name === 'TypeError' ? new TypeError(error.message) : new Error(error.message));
}

/** A worker died: every request still out to it fails, and the next call starts a new one. */
function fail(slot, handle, error) {
  pool[slot]?.then((w) => {
    if (w.handle !== handle) return;
    pool[slot] = undefined;
    for (const [id, request] of pending) {
      if (request.slot !== slot) continue;
      pending.delete(id);
      request.reject(error);
    }
  });
}

function workerAt(slot) {
  if (!pool[slot]) {
    pool[slot] = startWorker(slot).then(async (w) => {
      if (initArgs !== null) await send(w, slot, 'init', initArgs);
      return w;
    });
  }
  return pool[slot];
}

function send(w, slot, op, args, transfer = [], onProgress = undefined) {
  const id = nextRequest++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress, slot });
    w.busy();
    w.post({ id, op, args }, transfer);
  });
}

async function call(op, args, transfer = [], onProgress = undefined, slot = 0) {
  return send(await workerAt(slot), slot, op, args, transfer, onProgress);
}

/** Loads the WebAssembly module in the workers (once). `loadModel` calls it for you. */
export async function init(wasm) {
  initArgs = { wasm: typeof wasm === 'string' || wasm instanceof URL ? absolute(wasm) : wasm };
  const started = pool.flatMap((w, slot) => (w ? [call('init', initArgs, [], undefined, slot)] : []));
  await Promise.all(started.length ? started : [workerAt(0)]); // a new worker is sent initArgs first
}

/** A URL relative to the page, made absolute: the worker's own location is kiln-worker.js. */
function absolute(url) {
  if (!isNode && typeof location !== 'undefined') return new URL(String(url), location.href).href;
  return String(url);
}

/** How many workers `threads: "auto"` asks for: the machine's cores, at most 4. */
async function cores() {
  const n = globalThis.navigator?.hardwareConcurrency
    ?? (isNode ? (await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:os')).availableParallelism() : 1);
  return Math.max(1, Math.min(4, n));
}

/**
 * Loads an ONNX model into the worker: a URL string (a file path in Node), bytes, a Response or a
 * Blob. `threads` (default 1, or `"auto"`: the cores, at most 4): how many workers hold a copy of
 * the model; a batch then splits across them by rows (`model.threads` says what it got and why).
 */
export async function loadModel(source, options = {}) {
  const { threads = 1, ...rest } = options ?? {};
  if (!(threads === 'auto' || (Number.isInteger(threads) && threads >= 1 && threads <= 16))) {
    throw new TypeError(`kiln-wasm: threads must be a whole number from 1 to 16 or "auto", not ${JSON.stringify(threads)}`);
  }
  const count = threads === 'auto' ? await cores() : threads;
  let payload = source;
  if (typeof source === 'string' || source instanceof URL) payload = absolute(source);
  else if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`kiln-wasm: cannot load the model from ${source.url || 'a Response'}: HTTP ${source.status} ${source.statusText}`.trim());
    payload = new Uint8Array(await source.arrayBuffer());
  }
  if (count > 1 && typeof Blob !== 'undefined' && payload instanceof Blob) payload = new Uint8Array(await payload.arrayBuffer());
  const infos = await Promise.all(Array.from({ length: count }, (_, slot) => call('load', { source: payload, options: rest }, [], undefined, slot)));
  return new WorkerModel(infos[0], infos.map((info, slot) => ({ slot, id: info.id })), threads);
}

/** Ends the workers (models loaded in them are gone). The next call starts new ones. */
export async function terminate() {
  const live = pool.splice(0, pool.length);
  for (const request of pending.values()) request.reject(new Error('kiln-wasm: the worker was terminated'));
  pending.clear();
  await Promise.all(live.filter(Boolean).map(async (w) => (await w).handle.terminate()));
}

/** Whether a model's batches split by rows: one input, and a free first dimension in it and in
 * every output (each output row then belongs to one input row). */
function rowwise(model) {
  return model.inputs.length === 1 && model.inputs[0].dims[0] === null && model.outputs.every((o) => o.dims[0] === null);
}

/** The rows of `out` (one `{ data, dims }` per chunk) back in one tensor. */
function joinRows(parts) {
  const rest = parts[0].dims.slice(1);
  for (const p of parts) {
    if (p.dims.length !== rest.length + 1 || p.dims.slice(1).some((d, i) => d !== rest[i])) {
      throw new Error(`kiln-wasm: the workers' outputs do not stack (${JSON.stringify(parts.map((q) => q.dims))})`);
    }
  }
  const data = new parts[0].data.constructor(parts.reduce((n, p) => n + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { data, dims: [parts.reduce((n, p) => n + p.dims[0], 0), ...rest] };
}

/** An image the worker can receive (an <img> or a canvas is read here first). */
function portable(data) {
  return isImage(data) ? portableImage(data) : data;
}

/** A model loaded in the worker: the API of kiln-wasm's `Model`, with promises. */
export class WorkerModel {
  #id;
  #copies;
  #next = 0;
  #rowwise;

  constructor(info, copies = [{ slot: 0, id: info.id }], asked = 1) {
    this.#id = info.id;
    this.#copies = copies;
    this.inputs = info.inputs;
    this.outputs = info.outputs;
    this.labels = info.labels;
    this.metadata = info.metadata;
    this.engine = info.engine;
    const n = copies.length;
    const rows = rowwise(this);
    this.#rowwise = rows && n > 1;
    /** How many workers run the model, and why that many: `{ count, reason }`. */
    this.threads = Object.freeze({
      count: n,
      reason: n === 1
        ? (asked === 'auto' ? 'threads: "auto" found one core' : 'one worker (pass { threads: n } or "auto" for more)')
        : `${n} workers, each with its own copy of the model (kiln's wasm is built without shared memory, so ` +
          'no COOP/COEP headers are needed); ' + (rows
          ? 'run() splits a batch across them by rows, and calls spread across them'
          : 'the model has no free batch dimension in its input and outputs, so each call runs whole on one of them, calls spread across them'),
    });
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
    const n = this.#copies.length;
    // a batch of two or more rows in a typed array splits; anything else runs whole on one copy
    if (this.#rowwise && ArrayBuffer.isView(data) && Array.isArray(dims) && Number.isInteger(dims[0]) && dims[0] >= 2 && data.length % dims[0] === 0) {
      const batch = dims[0];
      const k = Math.min(n, batch);
      const row = data.length / batch;
      const parts = [];
      for (let i = 0, start = 0; i < k; i++) {
        const rows = Math.floor(batch / k) + (i < batch % k ? 1 : 0);
        const { slot, id } = this.#copies[i];
        // a copy of the rows, moved to the worker (a view would send its whole buffer)
        const chunk = data.slice(start * row, (start + rows) * row);
        parts.push(call('run', { id, data: chunk, dims: [rows, ...dims.slice(1)] }, [chunk.buffer], undefined, slot));
        start += rows;
      }
      return Promise.all(parts).then(joinRows);
    }
    const { slot, id } = this.#spread();
    return call('run', { id, data: portable(data), dims }, [], undefined, slot);
  }

  /** The next copy for a call that runs whole on one worker. */
  #spread() {
    const copy = this.#copies[this.#next % this.#copies.length];
    this.#next++;
    return copy;
  }

  /** Runs a model on named inputs; resolves to every output by name. */
  runMany(inputs) {
    const { slot, id } = this.#spread();
    return call('runMany', { id, inputs }, [], undefined, slot);
  }

  /** Classifies one example: `[{ label, index, score }]`, best first. */
  classify(data, dims, options) {
    const { slot, id } = this.#spread();
    return call('classify', { id, data: portable(data), dims, options }, [], undefined, slot);
  }

  /** Releases the model's memory in its workers. */
  async free() {
    await Promise.all(this.#copies.map(({ slot, id }) => call('free', { id }, [], undefined, slot)));
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
