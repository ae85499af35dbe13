// Types of kiln-wasm's public API (index.js). Written by hand: wasm-bindgen's kiln_wasm.d.ts
// describes the private glue underneath.

/** Element type of a model input or output, as numpy names it. */
export type ElementType = 'float32' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool' | (string & {});

/** One input or output of the graph. */
export interface TensorInfo {
  /** The name in the ONNX graph (the key for `runMany`). */
  readonly name: string;
  /** One entry per axis; `null` for a free dimension such as the batch size. */
  readonly dims: ReadonlyArray<number | null>;
  readonly type: ElementType;
}

/** Values kiln-wasm accepts for an input: the typed array of its element type, or a plain array
 * of numbers that is converted. An `Int32Array` is also accepted for int64 inputs (token ids). */
export type InputData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int8Array
  | Uint8Array
  | ReadonlyArray<number>
  | ReadonlyArray<bigint>;

/** An output's values: the typed array of its element type (bool outputs as 0/1 `Uint8Array`s). */
/** An image `run(image)` and `classify(image)` take: resized and prepared by the model's `kiln.preprocess`. */
export type ImageSource =
  | ImageData
  | ImageBitmap
  | HTMLCanvasElement
  | OffscreenCanvas
  | HTMLImageElement
  | VideoFrame
  | { data: Uint8ClampedArray | Uint8Array; width: number; height: number };

export type OutputData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int8Array | Uint8Array;

/** A tensor: its values, flat and row-major, and its shape. */
export interface Tensor<D = OutputData> {
  data: D;
  dims: number[];
}

/** The input of `run` / `runMany`. */
export interface TensorInput {
  data: InputData;
  dims: ReadonlyArray<number>;
}

/** One class of `classify`'s answer. */
export interface Prediction {
  /** `model.labels[index]`, or the index as a string when the model has no labels. */
  label: string;
  /** The class's position in the model's output. */
  index: number;
  /** Its probability (softmaxed unless the model already outputs probabilities). */
  score: number;
}

export interface ClassifyOptions {
  /** How many of the best classes to return (default: all, best first). */
  topK?: number;
}

/** Where a model comes from: a URL (a file path in Node), or its bytes. */
export type ModelSource = string | URL | Uint8Array | ArrayBuffer | ArrayBufferView | Response | Blob;

/** Where the .wasm file is, for `init`, when it is not next to index.js. */
export type WasmSource = string | URL | Response | BufferSource | WebAssembly.Module | Promise<Response>;

/** A loaded model. Keep one per model and call it many times; `free()` when done. */
export declare class Model {
  private constructor();
  /** The graph's inputs. */
  readonly inputs: ReadonlyArray<TensorInfo>;
  /** The graph's outputs. */
  readonly outputs: ReadonlyArray<TensorInfo>;
  /** The class labels stored by kiln's `export_onnx` (ONNX metadata `kiln.labels`), or null. */
  readonly labels: ReadonlyArray<string> | null;
  /** The model's ONNX `metadata_props`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The engine running it: `"kiln"` (kiln's own, in the small module) or `"tract"`. */
  readonly engine: 'kiln' | 'tract';
  /** How many threads run the model, and why: the calling one (see kiln-wasm/worker's `threads`). */
  readonly threads: Threads;
  /** The SIMD instructions of the module running it: `"relaxed-simd"` (kiln's engine in
   * kiln_core_relaxed_bg.wasm, loaded where the JavaScript engine runs relaxed SIMD) or `"simd128"`. */
  readonly simd: 'relaxed-simd' | 'simd128';
  /** A fingerprint of the model's bytes (what feedback files record), or null on tract's engine. */
  readonly version: string | null;
  /** A drift monitor over this model's live inputs, against the training statistics kiln's
   * `export_onnx(..., reference=X_train)` stored in it; throws an `Error` when it has none. */
  monitor(options?: MonitorOptions): Monitor;
  /** Runs a model that has one input; returns its first output. Throws an `Error` naming the
   * problem when the data does not fit the input (length, rank, type). */
  run(data: InputData, dims: ReadonlyArray<number>): Tensor;
  /** Runs the model on an image, prepared as its export declared (`preprocess`). */
  run(image: ImageSource): Tensor;
  /** The model's `[1, C, H, W]` input for an image, by the `kiln.preprocess` its export declared
   * (the same values as Python's `kiln.Preprocess.apply`); throws when it declares none. */
  preprocess(image: ImageSource): Float32Array;
  /** Runs a model on named inputs; returns every output by name. */
  runMany(inputs: Record<string, TensorInput>): Record<string, Tensor>;
  /** Classifies one example: the best classes first, with probabilities. */
  classify(data: InputData, dims: ReadonlyArray<number>, options?: ClassifyOptions): Prediction[];
  /** The tokenizer kiln's `export_onnx(..., tokenizer=tok)` stored (metadata `kiln.tokenizer`), or null. */
  readonly tokenizer: Tokenizer | null;
  /** Generates with kiln-core's sampling loop (Python's `kiln.text.generate`: the same seed, the
   * same text). Resolves to the prompt followed by the generated text; rejects with an `Error`
   * for a model without a tokenizer or bad options. Yields to the event loop between tokens. */
  generate(prompt: string, options?: GenerateOptions): Promise<string>;
  /** Whether `generate` runs the model position by position (kiln's engine, a GRU's state
   * carried or a causal transformer's keys and values cached) rather than rerunning its window for
   * every token: the same text, a token's cost independent of its position. */
  generatesCached(): boolean;
  classify(image: ImageSource, options?: ClassifyOptions): Prediction[];
  /** Releases the model's memory; the model cannot be used afterwards. */
  free(): void;
}

export interface GenerateOptions {
  /** Tokens to generate at most (default 32; 0 gives the prompt back; at most 65536). Fewer when
   * the model picks end-of-text. */
  maxNewTokens?: number;
  /** 0: always the most likely token; 1 (default): the model's distribution; higher: flatter. */
  temperature?: number;
  /** Sample among the k most likely tokens only (default: all; a k at least the vocabulary, or
   * Infinity, is all too). */
  topK?: number;
  /** Fixes the draws (default 0): a whole number from 0 to 2^53 - 1 (Number.MAX_SAFE_INTEGER). */
  seed?: number;
  /** Called with each token's text (empty while a character is incomplete) and id as it comes. */
  onToken?: (text: string, id: number) => void;
}

/** A character or byte-level BPE tokenizer: kiln-core's code, the same ids as Python's `kiln.text`.
 * Ids 0–3 are `<pad>`, `<unk>`, `<bos>` and `<eos>` in every kiln tokenizer. */
export declare class Tokenizer {
  /** From a `kiln.text` JSON document (`tok.to_json()` in Python); needs `await initKiln()` first. */
  static fromJSON(json: string, options?: { type?: 'int64' | 'int32' }): Tokenizer;
  private constructor();
  readonly kind: 'char' | 'bpe';
  /** The number of ids, the four special tokens included. */
  readonly vocabSize: number;
  /** The ids of `text`: a BigInt64Array for models with an int64 input (kiln's), else an Int32Array. */
  encode(text: string, options?: { type?: 'int64' | 'int32' }): BigInt64Array | Int32Array;
  /** The text of `ids`; an id outside the vocabulary throws an `Error`. */
  decode(ids: BigInt64Array | Int32Array | ReadonlyArray<number>): string;
  /** How one id reads (`"<eos>"` for the specials). */
  token(id: number): string;
  /** The JSON document. */
  toJSONString(): string;
  free(): void;
}

export interface MonitorOptions {
  /** Examples in the sliding window (default 200). */
  window?: number;
  /** Observe every `run` and `classify` of the model (default false: call `observe`). */
  auto?: boolean;
  /** Significance of the verdict after Bonferroni's correction (default 0.01). */
  alpha?: number;
  /** The smallest PSI a test must also reach (default 0.1). */
  minPsi?: number;
  /** The `kiln.drift` text to compare against when the model carries none (one fine-tuned on the device). */
  statistics?: string;
}

/** One watched feature in a report. */
export interface FeatureDrift {
  /** `x[17]`, or for images `mean`, `std`, `top-left`, …, `bottom-right` (`c1.` first with several channels). */
  name: string;
  index: number;
  /** Population stability index, window against reference. */
  psi: number;
  /** Kolmogorov–Smirnov statistic. */
  ks: number;
  /** Bonferroni-adjusted p-value. */
  p_value: number;
  drifted: boolean;
}

/** The same object Python's `kiln.drift.DriftMonitor.report()` returns. */
export interface DriftReport {
  /** The verdict. */
  drifted: boolean;
  /** The window is full. */
  ready: boolean;
  observed: number;
  window: number;
  seen: number;
  /** Observations refused (NaN, wrong shape); never in the window. */
  rejected: number;
  /** The largest feature PSI. */
  psi: number;
  /** The smallest adjusted p-value of any test. */
  p_value: number;
  /** Features that moved, most first. */
  moved: string[];
  /** Every feature, most moved first. */
  features: FeatureDrift[];
  classes: { psi: number; chi2: number; p_value: number; drifted: boolean; reference: number[]; live: number[] } | null;
  confidence: { psi: number; ks: number; p_value: number; drifted: boolean; reference_mean?: number; live_mean: number } | null;
  output: { psi: number; ks: number; p_value: number; drifted: boolean; live_mean: number } | null;
  alpha: number;
  min_psi: number;
}

/** A sliding window over a model's live inputs (`model.monitor()`). */
export declare class Monitor {
  private constructor();
  readonly window: number;
  /** Shape of one example (no batch axis). */
  readonly inputShape: number[];
  /** Adds an input (dims default to one example) after running the model on it; throws for NaN or a wrong shape, leaving the window as it was. */
  observe(input: Float32Array, dims?: ReadonlyArray<number>): number;
  report(): DriftReport;
  /** Called each time the verdict turns to drift; returns an unsubscribe function. */
  onDrift(callback: (report: DriftReport) => void): () => void;
  reset(): void;
  free(): void;
}

export interface Feedback {
  /** Inputs as the model takes them, examples first. */
  inputs: Float32Array;
  dims: number[];
  /** One class index per example. */
  labels: Int32Array | ReadonlyArray<number>;
  /** `model.version` of the model they were collected against. */
  modelVersion?: string;
}

/** A feedback file's bytes (`.kiln-data`), which Python reads with `kiln.drift.load_feedback`. */
export declare function saveFeedback(feedback: Feedback): Promise<Uint8Array>;
/** Reads a feedback file. */
export declare function loadFeedback(bytes: Uint8Array | ArrayBuffer): Promise<{ inputs: Float32Array; dims: number[]; labels: Int32Array; modelVersion: string }>;
/** The fingerprint of a model's bytes that feedback files record. */
export declare function modelVersion(bytes: Uint8Array | ArrayBuffer): Promise<string>;

/** Loads tract's WebAssembly module (once), which runs the models kiln's engine declines. */
/** The package's version (kiln's: the same as Python's `kiln.__version__`). */
export declare const version: string;

export declare function init(wasm?: WasmSource): Promise<void>;

/** Loads the small module (kiln's engine) once: kiln_core_relaxed_bg.wasm where the JavaScript
 * engine runs relaxed SIMD, kiln_core_bg.wasm elsewhere, unless `wasm` says which file. `loadModel`
 * calls it for you. */
export declare function initKiln(wasm?: WasmSource): Promise<void>;

/** How many threads run a model, and why that many. */
export interface Threads {
  readonly count: number;
  readonly reason: string;
}
/** Whether this JavaScript engine runs relaxed SIMD (`WebAssembly.validate` on a probe), so
 * `initKiln` loads kiln_core_relaxed_bg.wasm. */
export declare const relaxedSimd: boolean;

export interface LoadOptions {
  /** `"auto"` (default): kiln's engine when it runs the model, tract otherwise; or force one. */
  engine?: 'auto' | 'kiln' | 'tract';
}

/** Loads an ONNX model from a URL, a file path (Node), bytes, a `Response` or a `Blob`. */
export declare function loadModel(source: ModelSource, options?: LoadOptions): Promise<Model>;

export { Trainer, initTrainer } from './train.js';
export type { CompileOptions, ExportOptions, FitOptions, FloatTargets, History, Labels, LayerSpec, ParameterInfo, Progress } from './train.js';
