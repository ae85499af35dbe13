// Types of kiln-wasm/worker (worker.js): kiln-wasm's API with the model in a Web Worker (a worker
// thread in Node); every method returns a Promise.
import type { ClassifyOptions, InputData, ModelSource, Prediction, Tensor, TensorInfo, TensorInput } from './index.js';

export type { ClassifyOptions, ElementType, InputData, ModelSource, OutputData, Prediction, Tensor, TensorInfo, TensorInput } from './index.js';

/** Where the .wasm file is, when it is not next to the package: a URL or the file's bytes. */
export type WorkerWasmSource = string | URL | ArrayBuffer | Uint8Array | WebAssembly.Module;

/** A model loaded in the worker; the same members as `Model`, with promises. */
export declare class WorkerModel {
  private constructor();
  readonly inputs: ReadonlyArray<TensorInfo>;
  readonly outputs: ReadonlyArray<TensorInfo>;
  readonly labels: ReadonlyArray<string> | null;
  readonly metadata: Readonly<Record<string, string>>;
  /** Runs a model that has one input; resolves to its first output. */
  run(data: InputData, dims: ReadonlyArray<number>): Promise<Tensor>;
  /** Runs a model on named inputs; resolves to every output by name. */
  runMany(inputs: Record<string, TensorInput>): Promise<Record<string, Tensor>>;
  /** Classifies one example: the best classes first, with probabilities. */
  classify(data: InputData, dims: ReadonlyArray<number>, options?: ClassifyOptions): Promise<Prediction[]>;
  /** Releases the model's memory in the worker. */
  free(): Promise<void>;
}

/** Loads the WebAssembly module in the worker (once). `loadModel` calls it for you. */
export declare function init(wasm?: WorkerWasmSource): Promise<void>;

/** Loads an ONNX model into the worker. */
export declare function loadModel(source: ModelSource): Promise<WorkerModel>;

/** Ends the shared worker; models loaded in it are gone. The next call starts a new one. */
export declare function terminate(): Promise<void>;
