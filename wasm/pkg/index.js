// kiln-wasm: run ONNX models in the browser, in Web Workers and in Node >= 18, compiled to
// WebAssembly. Two engines: kiln's own (kiln_core_bg.wasm, 0.3 MB gzip: the models kiln exports,
// on the ops that trained them) and tract (kiln_wasm_bg.wasm, 2 MB gzip: any other ONNX model),
// fetched only when kiln's engine declines a model. This file is the public face; kiln_*.js and
// the .wasm files are wasm-bindgen's output and private.
import initWasm, { Session, Feed, takeLastPanic, simdLevel, __wbg_reset_state } from './kiln_wasm.js';
import { moduleLoader, sourceBytes, panicGuard, describeValue, checkDims } from './util.js';
import { initKiln, coreGuard, core, relaxedSimd } from './core.js';
import { Monitor } from './drift.js';
import { Tokenizer, TOKENIZER_KEY, generateOptions, nextTurn } from './text.js';
import { isImage, imagePixels } from './image.js';

export { Trainer, initTrainer } from './train.js';
export { Monitor, saveFeedback, loadFeedback, modelVersion } from './drift.js';
export { initKiln, relaxedSimd, Tokenizer };
export { version } from './version.js';

/**
 * Loads tract's WebAssembly module, which runs the models kiln's engine declines. `loadModel`
 * calls this for you when it needs it; call it yourself to start the download early, or to say
 * where the .wasm is when a server or bundler moved it. (`initKiln` does the same for the small
 * module every `loadModel` starts with.)
 */
export const init = moduleLoader(initWasm, new URL('./kiln_wasm_bg.wasm', import.meta.url));

const tract = { ...panicGuard(takeLastPanic, __wbg_reset_state), Feed, name: 'tract', simd: simdLevel };
const kiln = { ...coreGuard, Feed: core.EngineFeed, name: 'kiln', simd: () => core.simdLevel() };

/**
 * Loads an ONNX model. `source`: URL string (a file path in Node), Uint8Array, ArrayBuffer,
 * Response or Blob. `engine`: `"auto"` (kiln's engine when it runs the model, tract otherwise),
 * `"kiln"` or `"tract"`.
 */
export async function loadModel(source, { engine = 'auto' } = {}) {
  if (!['auto', 'kiln', 'tract'].includes(engine)) throw new TypeError(`kiln-wasm: engine must be "auto", "kiln" or "tract", not ${JSON.stringify(engine)}`);
  const bytes = await sourceBytes(source);
  let newer = null;
  let slow = null;
  if (engine !== 'tract') {
    await initKiln();
    const loaded = kiln.guard(() => core.EngineLoad.parse(bytes));
    const session = loaded.session();
    const declined = loaded.declined();
    newer = loaded.newerHint() ?? null;
    slow = loaded.slowFallback() ?? null;
    loaded.free();
    if (session) return new Model(session, kiln, kiln.guard(() => core.modelVersion(bytes)));
    if (engine === 'kiln') throw new Error(`kiln-wasm: kiln's engine does not run this model (${declined}); ${newer ?? 'load it with engine "auto" or "tract"'}`);
  }
  await init();
  if (slow) console.warn(`kiln-wasm: ${slow}`);
  try {
    const session = tract.guard(() => new Session(bytes));
    // the tokenizer and image preprocessing are kiln-core's code in the small module, whichever
    // engine runs the model
    const metadata = JSON.parse(session.describe()).metadata;
    if (TOKENIZER_KEY in metadata || metadata['kiln.preprocess']) await initKiln();
    return new Model(session, tract);
  } catch (e) {
    // A model from a newer kiln that neither engine runs: say so, rather than only the operator's name.
    if (newer) throw new Error(`${e.message}; ${newer}`);
    throw e;
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

const CALLING_THREAD = Object.freeze({
  count: 1,
  reason: "the calling thread (kiln-wasm/worker's loadModel(source, { threads: n }) splits batches across n workers)",
});

/** A loaded model. Keep one per model file and call it many times; `free()` when done. */
export class Model {
  #session;
  #engine;
  #generation;
  #fast;
  #watching = new Set();

  constructor(session, engine, version = null) {
    this.#session = session;
    this.#engine = engine;
    this.#generation = engine.generation();
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
    /** Which engine runs the model: `"kiln"` (kiln's own) or `"tract"`. */
    this.engine = engine.name;
    /** How many threads run the model, and why: here always the calling one. */
    this.threads = CALLING_THREAD;
    /** The SIMD instructions of the module running it: `"relaxed-simd"` (kiln's engine in
     * kiln_core_relaxed_bg.wasm, chosen where the JavaScript engine runs relaxed SIMD) or `"simd128"`. */
    this.simd = engine.simd();
    /** A fingerprint of the model's bytes (what feedback files record), or null on tract's engine. */
    this.version = version;
    /** The tokenizer kiln's `export_onnx(..., tokenizer=tok)` stored (`kiln.tokenizer`), or null. Its
     * `encode` returns the model's id type: a BigInt64Array for an int64 input. */
    const ids = this.inputs.length === 1 && this.inputs[0].type !== 'int64' ? 'int32' : 'int64';
    this.tokenizer = TOKENIZER_KEY in info.metadata ? new Tokenizer(info.metadata[TOKENIZER_KEY], ids) : null;
    // One call into wasm per prediction for the common case: one float32 input, float32 output.
    this.#fast = this.inputs.length === 1 && this.inputs[0].type === 'float32' && this.outputs[0]?.type === 'float32' && typeof session.runF32 === 'function';
    Object.freeze(this);
  }

  #live() {
    if (this.#session === null) throw new Error('kiln-wasm: this model was freed; load it again to use it');
    if (this.#generation !== this.#engine.generation()) {
      throw new Error('kiln-wasm: this model was lost when the engine restarted after an internal error; load it again');
    }
    return this.#session;
  }

  /**
   * The model's `[1, C, H, W]` input for an image (ImageData, ImageBitmap, canvas, OffscreenCanvas,
   * <img>, VideoFrame, or `{ data, width, height }` RGBA): resized to the input's size and prepared by
   * the `kiln.preprocess` spec the export declared, as Python's `kiln.Preprocess.apply` does.
   */
  preprocess(image) {
    const spec = this.metadata['kiln.preprocess'];
    if (!spec) throw new Error('kiln-wasm: this model declares no preprocessing for images; export it with export_onnx(..., preprocess=kiln.Preprocess(...)), or pass a Float32Array and dims');
    const dims = this.inputs[0]?.dims ?? [];
    if (this.inputs.length !== 1 || dims.length !== 4 || dims.slice(1).some((d) => typeof d !== 'number')) {
      throw new Error(`kiln-wasm: run(image) takes a model with one [batch, channels, height, width] input, not ${JSON.stringify(this.inputs.map((i) => i.dims))}`);
    }
    const [, channels, height, width] = dims;
    const p = { scale: 1 / 255, offset: 0, mean: [], std: [], channels: 'rgb', ...JSON.parse(spec) };
    const want = p.channels === 'gray' ? 1 : 3;
    if (channels !== want) throw new Error(`kiln-wasm: the preprocessing gives ${want} channel(s), the model's input takes ${channels}`);
    const px = imagePixels(image);
    return coreGuard.guard(() =>
      core.preprocessImage(px.data, px.width, px.height, height, width, p.scale, p.offset, Float32Array.from(p.mean), Float32Array.from(p.std), String(p.channels)),
    );
  }

  /** Runs a model with one input; returns its first output `{ data, dims }`. `run(image)` takes an image. */
  run(data, dims) {
    if (dims === undefined && isImage(data)) return this.run(this.preprocess(data), [1, ...this.inputs[0].dims.slice(1)]);
    if (this.inputs.length !== 1) {
      throw new Error(
        `kiln-wasm: the model has ${this.inputs.length} inputs (${this.inputs.map((i) => `"${i.name}"`).join(', ')}): ` +
          'use runMany({ name: { data, dims } })',
      );
    }
    if (this.#fast && data instanceof Float32Array) {
      const session = this.#live();
      const shape = checkDims(this.inputs[0].name, dims, data.length);
      const out = this.#engine.guard(() => ({ data: session.runF32(data, shape), dims: Array.from(session.lastDims()) }));
      return this.#watched(data, shape, out);
    }
    return this.#watched(data, dims, this.#execute([[this.inputs[0], data, dims]])[0]);
  }

  #watched(data, dims, out) {
    for (const m of this.#watching) m.seen(data, dims, out);
    return out;
  }

  /**
   * A drift monitor over this model's live inputs, against the training statistics kiln's
   * `export_onnx(..., reference=X_train)` stored in it (an `Error` says so when it has none).
   * `window` (default 200) examples; `auto: true` observes every `run` and `classify`.
   * `alpha` (0.01) and `minPsi` (0.1) set how sure and how large a shift the verdict wants.
   * `statistics`: the `kiln.drift` text to compare against when the model carries none (a model
   * fine-tuned on the device keeps its original's).
   */
  monitor({ window, auto = false, alpha, minPsi, statistics } = {}) {
    if (this.inputs.length !== 1) throw new Error('kiln-wasm: monitor watches models with one input');
    const run = (data, dims) => {
      const saved = this.#watching;
      this.#watching = new Set(); // observe's own run is not observed twice
      try {
        return this.run(data, dims);
      } finally {
        this.#watching = saved;
      }
    };
    const detach = (m) => this.#watching.delete(m);
    const m = new Monitor(this, run, statistics ?? this.metadata['kiln.drift'], { window, alpha, minPsi }, detach);
    if (auto) this.#watching.add(m);
    return m;
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
  classify(data, dims, options = {}) {
    if (isImage(data) && (dims === undefined || !Array.isArray(dims))) {
      return this.classify(this.preprocess(data), [1, ...this.inputs[0].dims.slice(1)], dims ?? {});
    }
    const { topK = Infinity } = options;
    if (this.inputs.length !== 1) throw new Error('kiln-wasm: classify takes models with one input; use runMany and read the scores');
    const fast = this.#fast && data instanceof Float32Array;
    const all = fast ? [this.run(data, dims)] : this.#execute([[this.inputs[0], data, dims]]);
    if (!fast) this.#watched(data, dims, all[0]);
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

  /**
   * Generates text from `prompt` with kiln-core's sampling loop (the same as Python's
   * `kiln.text.generate`: the same seed gives the same text): up to `maxNewTokens` (32) tokens,
   * fewer when the model picks end-of-text; `temperature` (1; 0 always takes the most likely token),
   * `topK` (all when omitted), `seed` (0). `onToken(text, id)` sees each token as it comes; the loop
   * yields to the event loop between tokens so a page can show them. Resolves to the prompt
   * followed by the generated text.
   */
  async generate(prompt, options = {}) {
    const { maxNewTokens, temperature, topK, seed, onToken } = generateOptions(prompt, options);
    if (this.tokenizer === null) {
      throw new Error(`kiln-wasm: this model carries no tokenizer (no "${TOKENIZER_KEY}" metadata): export it with export_onnx(..., tokenizer=tok)`);
    }
    const session = this.#live();
    const tok = this.tokenizer.toJSONString();
    const gen = this.#engine.guard(() => session.generator(tok, prompt, maxNewTokens, temperature, topK, seed));
    const generation = this.#engine.generation();
    try {
      for (;;) {
        const piece = this.#engine.guard(() => gen.next());
        if (piece === undefined) return this.#engine.guard(() => gen.text());
        if (onToken) onToken(piece, this.#engine.guard(() => gen.lastId()));
        await nextTurn();
        this.#live();
      }
    } finally {
      if (generation === this.#engine.generation()) gen.free();
    }
  }

  /**
   * Whether `generate` runs the model position by position, each token costing one position
   * (kiln's engine, a graph that qualifies: a GRU's state carried, a causal transformer's keys and
   * values cached), rather than rerunning its whole window for every token. The text is the same
   * either way.
   */
  generatesCached() {
    const session = this.#live();
    return typeof session.generatesCached === 'function' && this.#engine.guard(() => session.generatesCached());
  }

  /** Releases the model's wasm memory. The model cannot be used afterwards. */
  free() {
    this.tokenizer?.free();
    if (this.#session === null) return;
    const session = this.#session;
    this.#session = null;
    if (this.#generation === this.#engine.generation()) this.#engine.guard(() => session.free());
  }

  #execute(feeds) {
    const session = this.#live();
    const prepared = feeds.map(([info, data, dims]) => {
      const array = inputArray(info, data);
      const shape = checkDims(info.name, dims, array.length);
      const add = info.type === 'bool' ? 'addBool' : typedArrayTypes.find(([T]) => array instanceof T)[2];
      return [add, info.name, array, shape];
    });
    return this.#engine.guard(() => {
      const feed = new this.#engine.Feed();
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
