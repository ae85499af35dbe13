// Types of kiln-wasm's Trainer (train.js; also exported by index.js). Written by hand.
import type { ModelSource, WasmSource } from './index.js';

/** A layer as the checkpoint's architecture lists it, e.g. `{ type: "Linear", in_features: 128, ... }`. */
export interface LayerSpec {
  readonly type: string;
  readonly [option: string]: unknown;
}

/** A parameter of the model (buffers such as BatchNorm's running mean are not listed). */
export interface ParameterInfo {
  /** PyTorch's state-dict name, e.g. `"4.weight"`: the layer's index, then the tensor. */
  readonly name: string;
  readonly shape: number[];
  /** Whether `fit` updates it (see `freeze` / `unfreeze`). */
  readonly trainable: boolean;
}

/** The optimizer, loss and metrics, with the names Python's `kiln.optim` uses. */
export interface CompileOptions {
  optimizer?: 'adam' | 'adamw' | 'sgd' | 'rmsprop';
  /** `"cross_entropy"` (integer labels), `"binary_cross_entropy"`, `"mse"`, `"mae"`, `"huber"`. */
  loss?: string;
  /** Default `["accuracy"]`. */
  metrics?: string[];
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  alpha?: number;
  centered?: boolean;
}

/** What `onProgress` is told after every batch and every epoch. */
export type Progress =
  | { type: 'batch'; epoch: number; batch: number; batches: number; logs: Record<string, number> }
  | { type: 'epoch'; epoch: number; logs: Record<string, number> };

export interface FitOptions {
  /** Passes over the examples (default 1). */
  epochs?: number;
  /** Examples per gradient step (default 32). */
  batchSize?: number;
  /** The learning rate from now on (the optimizer's state is kept). */
  lr?: number;
  /** Reshuffle every epoch, seeded by the checkpoint's seed (default true). */
  shuffle?: boolean;
  /** Fraction of the examples, from the end, held out for `val_*` logs (default 0). */
  validationSplit?: number;
  /** Called after every batch and epoch; return `true` to stop (the weights reached are kept). */
  onProgress?: (progress: Progress) => boolean | void;
}

/** Per-epoch logs of a `fit`, as Python's `History.history`. */
export interface History {
  history: Record<string, number[]>;
  epochs: number;
  /** Why training ended early (`"callback"`), or null. */
  stoppedBy: string | null;
}

/** Float targets for regression losses: values shaped like the model's output. */
export interface FloatTargets {
  data: Float32Array | ReadonlyArray<number>;
  dims: ReadonlyArray<number>;
}

/** Class indices for `cross_entropy`; float targets for the other losses. */
export type Labels = Int32Array | Uint8Array | Uint16Array | ReadonlyArray<number> | FloatTargets;

export interface ExportOptions {
  /** Class names, written to the ONNX metadata (`kiln.labels`): `Model.labels` reads them. */
  labels?: ReadonlyArray<string | number>;
  /** The factor the raw input is multiplied by before the network (`kiln.input_scale`). */
  inputScale?: number;
  /** The offset added after scaling (`kiln.input_offset`). */
  inputOffset?: number;
  /** ONNX opset, 17 or later (default 17). */
  opset?: number;
  /** Training statistics to carry on (`kiln.drift`, e.g. the original model's
   * `model.metadata["kiln.drift"]`), so `model.monitor()` works on the fine-tuned model. */
  statistics?: string;
}

/** A trainable model loaded from a `.kiln` checkpoint (Python's `model.save(...)`). */
export declare class Trainer {
  private constructor();
  /** Loads a checkpoint: a URL (a file path in Node), bytes, a `Response` or a `Blob`. */
  static fromKiln(source: ModelSource): Promise<Trainer>;
  /** Loads an ONNX file kiln's engine runs (a PyTorch export, say) to fine-tune it: its weights
   * under the file's names. Rejects with an `Error` naming what kiln's graph cannot express. */
  static fromOnnx(source: ModelSource): Promise<Trainer>;
  readonly layers: LayerSpec[];
  readonly parameters: ParameterInfo[];
  /** The per-sample input shape the model was trained on, or null. */
  readonly inputShape: number[] | null;
  /** Stops training parameters whose name starts with `prefix` (all by default); returns how many. */
  freeze(prefix?: string): number;
  /** Trains parameters whose name starts with `prefix` (all by default) again; returns how many. */
  unfreeze(prefix?: string): number;
  /** Chooses optimizer, loss and metrics (defaults as Python: Adam with PyTorch's settings, cross-entropy, no metrics). */
  compile(options?: CompileOptions): void;
  /** Trains on `x` (first axis the example) against `labels`; returns the history. */
  fit(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>, labels: Labels, options?: FitOptions): History;
  /** Loss and metrics in evaluation mode: `{ loss, accuracy, ... }`. */
  evaluate(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>, labels: Labels, options?: { batchSize?: number }): Record<string, number>;
  /** Raw outputs in evaluation mode. */
  predict(x: Float32Array | ReadonlyArray<number>, dims: ReadonlyArray<number>): { data: Float32Array; dims: number[] };
  /** The model as ONNX bytes, for `loadModel`. */
  exportOnnx(options?: ExportOptions): Uint8Array;
  /** The model as a `.kiln` checkpoint, for Python's `kiln.load`. */
  save(): Uint8Array;
  /** Every trainable value, state-dict order (Python's `get_flat_parameters()`). */
  getFlatParameters(): Float32Array;
  /** Releases the trainer's memory. */
  free(): void;
}

/** Loads kiln_train_bg.wasm, the Trainer's module (once). `Trainer.fromKiln` and `Trainer.fromOnnx` call it for you. */
export declare function initTrainer(wasm?: WasmSource): Promise<void>;
