// Types of kiln-wasm/worker (worker.js): kiln-wasm's API with the model in a Web Worker (a worker
// thread in Node); every method returns a Promise.
import type { ClassifyOptions, GenerateOptions, ImageSource, InputData, LoadOptions, ModelSource, Prediction, Tensor, TensorInfo, TensorInput } from './index.js';
import type { CompileOptions, ExportOptions, FitOptions, History, Labels, LayerSpec, ParameterInfo } from './train.js';

export type { Threads } from './index.js';
export type { ClassifyOptions, GenerateOptions, ElementType, InputData, ModelSource, OutputData, Prediction, Tensor, TensorInfo, TensorInput } from './index.js';

/** Where the .wasm file is, when it is not next to the package: a URL or the file's bytes. */
export type WorkerWasmSource = string | URL | ArrayBuffer | Uint8Array | WebAssembly.Module;

/** A model loaded in the worker; the same members as `Model`, with promises. */
export declare class WorkerModel {
  private constructor();
  readonly inputs: ReadonlyArray<TensorInfo>;
  readonly outputs: ReadonlyArray<TensorInfo>;
  readonly labels: ReadonlyArray<string> | null;
  readonly metadata: Readonly<Record<string, string>>;
  /** The engine running it in the worker: `"kiln"` or `"tract"`. */
  readonly engine: 'kiln' | 'tract';
  /** How many workers hold a copy of the model (`loadModel(source, { threads })`), and why. */
  readonly threads: import('./index.js').Threads;
  /** The SIMD instructions of the module running it in the worker: `"relaxed-simd"` or `"simd128"`. */
  readonly simd: 'relaxed-simd' | 'simd128';
  /** Runs a model that has one input; resolves to its first output. */
  run(data: InputData, dims: ReadonlyArray<number>): Promise<Tensor>;
  /** Runs the model on an image (read on this thread, prepared in the worker). */
  run(image: ImageSource): Promise<Tensor>;
  /** Runs a model on named inputs; resolves to every output by name. */
  runMany(inputs: Record<string, TensorInput>): Promise<Record<string, Tensor>>;
  /** Classifies one example: the best classes first, with probabilities. */
  classify(data: InputData, dims: ReadonlyArray<number>, options?: ClassifyOptions): Promise<Prediction[]>;
  /** The model's tokenizer, working in the worker, or null. */
  readonly tokenizer: WorkerTokenizer | null;
  /** Generates in the worker (the text Python generates for the same seed); `onToken` runs on the page's thread. */
  generate(prompt: string, options?: GenerateOptions): Promise<string>;
  classify(image: ImageSource, options?: ClassifyOptions): Promise<Prediction[]>;
  /** Releases the model's memory in the worker. */
  free(): Promise<void>;
}

/** `Tokenizer` in the worker: the same ids, with promises. */
export interface WorkerTokenizer {
  readonly kind: 'char' | 'bpe';
  readonly vocabSize: number;
  encode(text: string): Promise<BigInt64Array | Int32Array>;
  decode(ids: BigInt64Array | Int32Array | ReadonlyArray<number>): Promise<string>;
}

/** Loads the WebAssembly module in the worker (once). `loadModel` calls it for you. */
export declare function init(wasm?: WorkerWasmSource): Promise<void>;

/** Loads an ONNX model into the worker. */
export declare function loadModel(source: ModelSource, options?: WorkerLoadOptions): Promise<WorkerModel>;

/** `loadModel`'s options in the worker: the engine, and how many workers run the model. */
export interface WorkerLoadOptions extends LoadOptions {
  /** 1 (default), up to 16, or `"auto"` (the cores, at most 4): workers holding a copy of the model;
   * `run` splits a batch across them by rows when the input and outputs have a free first dimension. */
  threads?: number | 'auto';
}

/** Ends the workers; models loaded in them are gone. The next call starts new ones. */
export declare function terminate(): Promise<void>;

/** Fit options in the worker: `onProgress` observes from the page's thread and cannot stop the fit. */
export interface WorkerFitOptions extends Omit<FitOptions, 'onProgress'> {
  onProgress?: (progress: import('./train.js').Progress) => void;
}

/** kiln-wasm's `Trainer` running in the worker; every method returns a Promise. */
export declare class Trainer {
  private constructor();
  /** Loads a `.kiln` checkpoint into the worker. */
  static fromKiln(source: ModelSource): Promise<Trainer>;
  /** The layers, the parameters and the per-sample input shape. */
  describe(): Promise<{ layers: LayerSpec[]; parameters: ParameterInfo[]; inputShape: number[] | null }>;
  freeze(prefix?: string): Promise<number>;
  unfreeze(prefix?: string): Promise<number>;
  compile(options?: CompileOptions): Promise<void>;
  fit(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>, labels: Labels, options?: WorkerFitOptions): Promise<History>;
  evaluate(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>, labels: Labels, options?: { batchSize?: number }): Promise<Record<string, number>>;
  predict(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>): Promise<{ data: Float32Array; dims: number[] }>;
  exportOnnx(options?: ExportOptions): Promise<Uint8Array>;
  save(): Promise<Uint8Array>;
  getFlatParameters(): Promise<Float32Array>;
  free(): Promise<void>;
}
