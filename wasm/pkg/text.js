// kiln-wasm's text face: the tokenizer a model carries (ONNX metadata `kiln.tokenizer`, written by
// kiln's `export_onnx(..., tokenizer=tok)`) and the generation loop, both kiln-core's code in the
// small module (core/src/text), so a string gives Python's ids and a seed Python's text.
// Private to the package except `Tokenizer`, which index.js re-exports.
import { coreGuard, core } from './core.js';
import { describeValue } from './util.js';

/** The metadata key the tokenizer travels under. */
export const TOKENIZER_KEY = 'kiln.tokenizer';

/**
 * A character or byte-level BPE tokenizer, the same code as Python's `kiln.text`. A loaded
 * model's `model.tokenizer` is one; `Tokenizer.fromJSON(text)` makes one from a saved document
 * (after `await initKiln()`).
 */
export class Tokenizer {
  #json;
  #type;
  #core = null;
  #generation = -1;

  /** @param {string} json  @param {'int64' | 'int32'} type the typed array `encode` returns */
  constructor(json, type = 'int64') {
    if (typeof json !== 'string') throw new TypeError(`kiln-wasm: a tokenizer is a JSON string, not ${describeValue(json)}`);
    if (type !== 'int64' && type !== 'int32') throw new TypeError(`kiln-wasm: a tokenizer encodes to "int64" or "int32", not ${JSON.stringify(type)}`);
    this.#json = json;
    this.#type = type;
    this.core(); // parse now: a bad document throws here, not at the first encode
    /** `"char"` or `"bpe"`. */
    this.kind = coreGuard.guard(() => this.core().kind());
    /** The number of ids, the four special tokens (pad 0, unk 1, bos 2, eos 3) included. */
    this.vocabSize = coreGuard.guard(() => this.core().vocabSize());
    Object.freeze(this);
  }

  /** The tokenizer a `kiln.text` JSON document describes. */
  static fromJSON(json, { type = 'int64' } = {}) {
    return new Tokenizer(json, type);
  }

  /** The core's tokenizer, made again if the small module restarted after an internal error. */
  core() {
    if (this.#generation !== coreGuard.generation() || this.#core === null) {
      this.#core = coreGuard.guard(() => {
        try {
          return core.Tokenizer.fromJson(this.#json);
        } catch (e) {
          // wasm-bindgen's glue before the module is instantiated: its exports are undefined
          if (e instanceof TypeError) throw new Error('kiln-wasm: the small module is not loaded yet: await initKiln() before Tokenizer.fromJSON (loadModel does it for you)', { cause: e });
          throw e;
        }
      });
      this.#generation = coreGuard.generation();
    }
    return this.#core;
  }

  /** The ids of `text`: a BigInt64Array for a model whose input is int64 (kiln's), else an Int32Array. */
  encode(text, { type = this.#type } = {}) {
    if (typeof text !== 'string') throw new TypeError(`kiln-wasm: encode takes a string, not ${describeValue(text)}`);
    return coreGuard.guard(() => (type === 'int32' ? this.core().encodeI32(text) : this.core().encodeI64(text)));
  }

  /** The text of `ids` (BigInt64Array, Int32Array or an array of numbers): specials dropped,
   * unknown characters as U+FFFD; an id outside the vocabulary throws. */
  decode(ids) {
    const tok = this.core();
    if (ids instanceof BigInt64Array) return coreGuard.guard(() => tok.decodeI64(ids));
    if (ids instanceof Int32Array) return coreGuard.guard(() => tok.decodeI32(ids));
    if (Array.isArray(ids) || ArrayBuffer.isView(ids)) {
      const values = Array.from(ids, Number);
      return coreGuard.guard(() => tok.decodeF64(Float64Array.from(values)));
    }
    throw new TypeError(`kiln-wasm: decode takes token ids (BigInt64Array, Int32Array or an array of numbers), not ${describeValue(ids)}`);
  }

  /** How one id reads: `"<eos>"` for the specials, its text otherwise. */
  token(id) {
    return coreGuard.guard(() => this.core().token(Number(id)));
  }

  /** The JSON document (what Python's `tok.to_json()` gives). */
  toJSONString() {
    return this.#json;
  }

  /** Releases the tokenizer's wasm memory (it is made again if used later). */
  free() {
    if (this.#core !== null && this.#generation === coreGuard.generation()) coreGuard.guard(() => this.#core.free());
    this.#core = null;
  }
}

/** A macrotask turn, so a page repaints between tokens (setImmediate in Node, a MessageChannel in browsers). */
export function nextTurn() {
  if (typeof setImmediate === 'function') return new Promise((resolve) => setImmediate(resolve));
  if (typeof MessageChannel === 'function') {
    return new Promise((resolve) => {
      const { port1, port2 } = new MessageChannel();
      port1.onmessage = () => {
        port1.close();
        resolve();
      };
      port2.postMessage(null);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Checks `generate`'s options' types (the core checks their values) and fills the defaults. */
export function generateOptions(prompt, options) {
  if (typeof prompt !== 'string') throw new TypeError(`kiln-wasm: generate takes a prompt string, not ${describeValue(prompt)}`);
  if (options === null || typeof options !== 'object') throw new TypeError(`kiln-wasm: generate's options must be an object, not ${describeValue(options)}`);
  const { maxNewTokens = 32, temperature = 1, topK, seed = 0, onToken } = options;
  for (const [name, v] of [['maxNewTokens', maxNewTokens], ['temperature', temperature], ['seed', seed]]) {
    if (typeof v !== 'number') throw new TypeError(`kiln-wasm: generate's ${name} must be a number, not ${describeValue(v)}`);
  }
  if (topK !== undefined && topK !== null && typeof topK !== 'number') throw new TypeError(`kiln-wasm: generate's topK must be a number, not ${describeValue(topK)}`);
  if (onToken !== undefined && typeof onToken !== 'function') throw new TypeError(`kiln-wasm: generate's onToken must be a function, not ${describeValue(onToken)}`);
  // a seed JavaScript cannot hold exactly would not be the seed the caller wrote
  if (Number.isInteger(seed) && seed > Number.MAX_SAFE_INTEGER) throw new RangeError(`kiln-wasm: generate: seed must be 0 to ${Number.MAX_SAFE_INTEGER} (Number.MAX_SAFE_INTEGER) in JavaScript, got ${seed}`);
  // topK at least the vocabulary samples from every token, as no topK does; Infinity too, as in classify
  const every = typeof topK === 'number' && topK > Number.MAX_SAFE_INTEGER;
  return { maxNewTokens, temperature, topK: every ? undefined : topK ?? undefined, seed, onToken };
}
