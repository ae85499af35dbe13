// kiln-wasm: run ONNX models in the browser, in Web Workers and in Node >= 18, on kiln's tract
// engine compiled to WebAssembly. This file is the public face; kiln_wasm.js / kiln_wasm_bg.wasm
// are wasm-bindgen's output and private.
import initWasm, { Session, Feed, takeLastPanic, __wbg_reset_state } from './kiln_wasm.js';

let ready = null; // the one initialisation, shared by every loadModel (and retried after a failure)
let generation = 0; // bumped when a fresh wasm instance replaces one that aborted

const isNode = typeof process === 'object' && typeof process.versions?.node === 'string';

/**
 * Loads the WebAssembly module. `loadModel` calls this for you; call it yourself to start the
 * download early, or to say where the .wasm is when a server or bundler moved it.
 */
export function init(wasm) {
  if (ready === null) {
    ready = instantiate(wasm).catch((e) => {
      ready = null; // a failed download can be retried
      throw e;
    });
  }
  return ready;
}

async function instantiate(wasm) {
  let source = wasm;
  if (isNode && (typeof source === 'string' || source instanceof URL) && !/^https?:/i.test(String(source))) {
    source = await readNodeFile(String(source).startsWith('file:') ? new URL(String(source)) : String(source));
  }
  if (source === undefined) {
    // Bundlers (Vite, webpack) recognise this exact expression and ship the file next to the code.
    const url = new URL('./kiln_wasm_bg.wasm', import.meta.url);
    // Node's fetch cannot read file: URLs; a hidden dynamic import keeps bundlers from pulling
    // node:fs into a browser build.
    source = url.protocol === 'file:' && isNode ? await readNodeFile(url) : await fetchOk(url, 'kiln-wasm: cannot fetch its WebAssembly file');
  }
  await initWasm({ module_or_path: source });
}

async function readNodeFile(pathOrUrl) {
  const fs = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:fs/promises');
  return fs.readFile(pathOrUrl);
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`${what} ${url}: ${e.message}`);
  }
  if (!response.ok) throw new Error(`${what} ${url}: HTTP ${response.status} ${response.statusText}`.trim());
  return response;
}

/** The bytes of a model source: a URL or path string, URL, Response, Blob, ArrayBuffer or view. */
async function modelBytes(source) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`kiln-wasm: cannot load the model from ${source.url || 'a Response'}: HTTP ${source.status} ${source.statusText}`.trim());
    return new Uint8Array(await source.arrayBuffer());
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) return new Uint8Array(await source.arrayBuffer());
  if (typeof source === 'string' || source instanceof URL) {
    const text = String(source);
    // In Node a string is a file path unless it is an http(s) URL; in a page it is a URL.
    if (isNode && !/^(https?|data|blob):/i.test(text)) {
      try {
        return await readNodeFile(text.startsWith('file:') ? new URL(text) : text);
      } catch (e) {
        throw new Error(`kiln-wasm: cannot read the model file ${text}: ${e.message}`);
      }
    }
    const response = await fetchOk(text, 'kiln-wasm: cannot fetch the model from');
    return new Uint8Array(await response.arrayBuffer());
  }
  throw new TypeError(`kiln-wasm: loadModel takes a URL string, Uint8Array, ArrayBuffer, Response or Blob, not ${describeValue(source)}`);
}

/** Loads an ONNX model. `source`: URL string (a file path in Node), Uint8Array, ArrayBuffer, Response or Blob. */
export async function loadModel(source) {
  const bytes = await modelBytes(source);
  await init();
  return new Model(guard(() => new Session(bytes)));
}

/**
 * Calls into wasm. A Rust panic aborts the instance ("unreachable executed"); turn that into an
 * Error with the panic's message, and give the package a fresh instance so it keeps working.
 */
function guard(call) {
  try {
    return call();
  } catch (e) {
    if (!(e instanceof WebAssembly.RuntimeError)) throw e;
    let panic = null;
    try {
      panic = takeLastPanic();
    } catch {
      // the aborted instance could not even answer; the trap's own message will do
    }
    // Registry paths ("/root/.cargo/registry/src/index.crates.io-…/tract-core-0.23.9/src/…") say
    // nothing a user needs; keep the crate and file.
    panic = panic?.replace(/\S*\/registry\/src\/[^/]+\//g, '') ?? null;
    __wbg_reset_state();
    generation += 1;
    throw new Error(
      `kiln-wasm: internal error (${panic ?? `the engine aborted: ${e.message}; out of memory?`}). This is a bug in kiln or tract; please report it with the model. ` +
        'The engine has restarted: models loaded before this must be loaded again.',
      { cause: e },
    );
  }
}

const typedArrayTypes = [
  [Float32Array, 'float32', 'addF32'],
  [Float64Array, 'float64', 'addF64'],
  [BigInt64Array, 'int64', 'addI64'],
  [Int32Array, 'int32', 'addI32'],
  [Int8Array, 'int8', 'addI8'],
  [Uint8Array, 'uint8', 'addU8'],
];
// The typed array each input element type is passed as. kiln-core widens the types it has no
// tensor variant for (float16 → float32, int16 / uint16 → int32, uint32 → int64) and narrows
// them back for the model.
const arrayFor = {
  float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
  float16: Float32Array, int16: Int32Array, uint16: Int32Array, uint32: BigInt64Array,
};

function describeValue(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an Array';
  if (typeof v === 'object') return v.constructor?.name ?? 'an object';
  return typeof v;
}

/** The typed array the model's input `info` takes, from what the caller passed (converted where lossless). */
function inputArray(info, data) {
  const want = info.type;
  const Want = arrayFor[want];
  if (!Want) throw new Error(`kiln-wasm: input "${info.name}" has element type ${want}, which kiln-wasm cannot pass`);
  if (data instanceof Want) return data;
  if (Want === BigInt64Array && data instanceof Int32Array) return BigInt64Array.from(data, (v) => BigInt(v)); // token ids
  if (Array.isArray(data)) {
    if (Want === BigInt64Array) return BigInt64Array.from(data, (v) => BigInt(v));
    if (want === 'bool') return Uint8Array.from(data, (v) => (v ? 1 : 0));
    return Want.from(data);
  }
  const got = typedArrayTypes.find(([T]) => data instanceof T)?.[1];
  throw new TypeError(
    `kiln-wasm: input "${info.name}" wants ${want} values (${Want.name}${Want === BigInt64Array ? ' or Int32Array' : ''}), ` +
      `got ${got ? `${describeValue(data)} (${got})` : describeValue(data)}`,
  );
}

function checkDims(name, dims, length) {
  if (!Array.isArray(dims) && !ArrayBuffer.isView(dims)) {
    throw new TypeError(`kiln-wasm: input "${name}": dims must be an array of sizes such as [1, 64], not ${describeValue(dims)}`);
  }
  let count = 1;
  for (const d of dims) {
    if (!Number.isInteger(Number(d)) || Number(d) < 0) throw new TypeError(`kiln-wasm: input "${name}": dims [${[...dims].join(', ')}] must be whole numbers >= 0`);
    count *= Number(d);
  }
  if (count !== length) {
    throw new Error(`kiln-wasm: input "${name}": dims [${[...dims].join(', ')}] need ${count} values, the data has ${length}`);
  }
  return Uint32Array.from(dims, Number);
}

function softmax(values) {
  let max = -Infinity;
  for (const v of values) max = Math.max(max, v);
  const exps = values.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Values that already are a probability distribution: in [0, 1] and summing to 1. */
function isDistribution(values) {
  let sum = 0;
  for (const v of values) {
    if (!(v >= 0 && v <= 1)) return false;
    sum += v;
  }
  return Math.abs(sum - 1) < 1e-3;
}

/** A loaded model. Keep one per model file and call it many times; `free()` when done. */
export class Model {
  #session;
  #generation;

  constructor(session) {
    this.#session = session;
    this.#generation = generation;
    const info = JSON.parse(session.describe());
    const freeze = (list) => Object.freeze(list.map((t) => Object.freeze({ name: t.name, dims: Object.freeze(t.dims), type: t.type })));
    /** The graph's inputs: `[{ name, dims, type }]`, `null` for a free (batch) dimension. */
    this.inputs = freeze(info.inputs);
    /** The graph's outputs, described the same way. */
    this.outputs = freeze(info.outputs);
    /** The class labels stored by kiln's `export_onnx`, or null. */
    this.labels = info.labels ? Object.freeze(info.labels) : null;
    /** The model's ONNX metadata_props. */
    this.metadata = Object.freeze(info.metadata);
    Object.freeze(this);
  }

  #live() {
    if (this.#session === null) throw new Error('kiln-wasm: this model was freed; load it again to use it');
    if (this.#generation !== generation) {
      throw new Error('kiln-wasm: this model was lost when the engine restarted after an internal error; load it again');
    }
    return this.#session;
  }

  /** Runs a model with one input; returns its first output `{ data, dims }`. */
  run(data, dims) {
    if (this.inputs.length !== 1) {
      throw new Error(
        `kiln-wasm: the model has ${this.inputs.length} inputs (${this.inputs.map((i) => `"${i.name}"`).join(', ')}): ` +
          'use runMany({ name: { data, dims } })',
      );
    }
    return this.#execute([[this.inputs[0], data, dims]])[0];
  }

  /** Runs a model with named inputs; returns every output by name: `{ name: { data, dims } }`. */
  runMany(inputs) {
    if (inputs === null || typeof inputs !== 'object' || Array.isArray(inputs)) {
      throw new TypeError(`kiln-wasm: runMany takes an object { inputName: { data, dims } }, not ${describeValue(inputs)}`);
    }
    const feeds = Object.entries(inputs).map(([name, value]) => {
      const info = this.inputs.find((i) => i.name === name);
      if (!info) {
        throw new Error(`kiln-wasm: the model has no input "${name}" (its inputs: ${this.inputs.map((i) => `"${i.name}"`).join(', ')})`);
      }
      if (value === null || typeof value !== 'object' || !('data' in value) || !('dims' in value)) {
        throw new TypeError(`kiln-wasm: input "${name}" must be { data, dims }`);
      }
      return [info, value.data, value.dims];
    });
    const results = this.#execute(feeds);
    return Object.fromEntries(this.outputs.map((o, i) => [o.name, results[i]]));
  }

  /**
   * Classifies one example: the scores of the model's first float output, softmaxed unless they
   * already are probabilities, best first, paired with `labels`: `[{ label, index, score }]`.
   */
  classify(data, dims, { topK = Infinity } = {}) {
    if (this.inputs.length !== 1) throw new Error('kiln-wasm: classify takes models with one input; use runMany and read the scores');
    const all = this.#execute([[this.inputs[0], data, dims]]);
    const at = this.outputs.findIndex((o) => o.type === 'float32' || o.type === 'float64');
    if (at < 0) throw new Error('kiln-wasm: classify needs a float output of class scores; this model has none');
    const { data: scores, dims: outDims } = all[at];
    const examples = outDims.length > 1 ? outDims[0] : 1;
    if (examples !== 1) {
      throw new Error(`kiln-wasm: classify takes one example, got a batch of ${examples} (output dims [${outDims.join(', ')}]); use run for batches`);
    }
    const raw = Array.from(scores);
    const probs = isDistribution(raw) ? raw : softmax(raw);
    const ranked = probs.map((score, index) => ({ label: this.labels?.[index] ?? String(index), index, score }));
    ranked.sort((a, b) => b.score - a.score);
    return ranked.slice(0, Math.max(0, Math.floor(topK)));
  }

  /** Releases the model's wasm memory. The model cannot be used afterwards. */
  free() {
    if (this.#session === null) return;
    const session = this.#session;
    this.#session = null;
    if (this.#generation === generation) guard(() => session.free());
  }

  #execute(feeds) {
    const session = this.#live();
    const prepared = feeds.map(([info, data, dims]) => {
      const array = inputArray(info, data);
      const shape = checkDims(info.name, dims, array.length);
      const add = info.type === 'bool' ? 'addBool' : typedArrayTypes.find(([T]) => array instanceof T)[2];
      return [add, info.name, array, shape];
    });
    return guard(() => {
      const feed = new Feed();
      try {
        for (const [add, name, array, shape] of prepared) feed[add](name, array, shape);
      } catch (e) {
        if (!(e instanceof WebAssembly.RuntimeError)) feed.free();
        throw e;
      }
      const outputs = session.run(feed); // consumes feed
      try {
        const results = [];
        for (let i = 0; i < outputs.count(); i++) {
          const dims = Array.from(outputs.dims(i));
          results.push({ data: outputs.take(i), dims });
        }
        return results;
      } finally {
        outputs.free();
      }
    });
  }
}
