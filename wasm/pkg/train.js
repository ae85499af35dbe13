// kiln-wasm's Trainer: fine-tune a model saved by Python's `model.save(...)` on the user's own
// examples, on the device, with kiln-core's autodiff, optimizers and fit loop compiled to wasm (the
// code Python's `fit` runs). It lives in its own module, kiln_train_bg.wasm, fetched the first time
// a Trainer is made: pages that only predict never download the backward code.
import initTrainWasm, * as wasm from './kiln_train.js';
import { moduleLoader, panicGuard, sourceBytes, describeValue, checkDims } from './util.js';

const { TrainerCore, Targets } = wasm;

/**
 * Loads kiln_train_bg.wasm, the module the Trainer runs in (once). `Trainer.fromKiln` and
 * `Trainer.fromOnnx` call it for you; call it yourself to start the download early, or to say
 * where the .wasm is when a server or bundler moved it.
 */
export const initTrainer = moduleLoader(initTrainWasm, new URL('./kiln_train_bg.wasm', import.meta.url));

// a panic in the training module restarts that module only
const { guard, generation } = panicGuard(wasm.takeLastPanic, wasm.__wbg_reset_state);

// The optimizers by the names Python's kiln.optim uses, with the options each takes (JS spelling →
// kiln-core's). Unknown options are refused, so a typo is an error, not a silent default.
const optimizers = {
  adam: ['Adam', { lr: 'lr', betas: 'betas', eps: 'eps', weightDecay: 'weight_decay', amsgrad: 'amsgrad' }],
  adamw: ['AdamW', { lr: 'lr', betas: 'betas', eps: 'eps', weightDecay: 'weight_decay', amsgrad: 'amsgrad' }],
  sgd: ['SGD', { lr: 'lr', momentum: 'momentum', dampening: 'dampening', nesterov: 'nesterov', weightDecay: 'weight_decay' }],
  rmsprop: ['RMSprop', { lr: 'lr', alpha: 'alpha', eps: 'eps', weightDecay: 'weight_decay', momentum: 'momentum', centered: 'centered' }],
};

function checkOptions(where, options, allowed) {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`kiln-wasm: ${where} takes an options object, not ${describeValue(options)}`);
  }
  const unknown = Object.keys(options).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    throw new TypeError(`kiln-wasm: ${where}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (it takes ${allowed.join(', ')})`);
  }
  return options;
}

function floats(what, data) {
  if (data instanceof Float32Array) return data;
  if (Array.isArray(data) || data instanceof Float64Array) return Float32Array.from(data);
  throw new TypeError(`kiln-wasm: ${what} must be a Float32Array (or an array of numbers), not ${describeValue(data)}`);
}

/** Labels as class indices (whole numbers >= 0), or float targets with their dims. */
function targets(trainer, labels, n) {
  if (trainer.wantsClasses()) {
    if (!(labels instanceof Int32Array || labels instanceof Uint8Array || labels instanceof Uint16Array || Array.isArray(labels))) {
      throw new TypeError(`kiln-wasm: labels must be class indices (an Int32Array or an array of whole numbers), not ${describeValue(labels)}`);
    }
    const ints = Int32Array.from(labels, (v, i) => {
      if (!Number.isInteger(v) || v < 0) throw new TypeError(`kiln-wasm: labels[${i}] is ${v}: labels must be whole numbers >= 0 (class indices)`);
      return v;
    });
    if (ints.length !== n) throw new Error(`kiln-wasm: ${n} examples but ${ints.length} labels`);
    return Targets.classes(ints);
  }
  const values = labels?.data !== undefined ? labels : { data: labels, dims: [n, (labels?.length ?? 0) / Math.max(n, 1)] };
  const data = floats('targets', values.data);
  return Targets.values(data, checkDims('targets', values.dims, data.length));
}

/**
 * A trainable model: load one saved by Python's `model.save(...)`, freeze what should stay, fit
 * it on new examples, export it as ONNX for `loadModel`, or save it for Python's `kiln.load`.
 */
export class Trainer {
  #core;
  #generation;

  /** Loads a `.kiln` checkpoint: a URL (a file path in Node), bytes, a Response or a Blob. */
  static async fromKiln(source) {
    const bytes = await sourceBytes(source, 'the checkpoint', 'Trainer.fromKiln');
    await initTrainer();
    return new Trainer(guard(() => TrainerCore.fromKiln(bytes)));
  }

  /** An ONNX file kiln's engine runs (a PyTorch export, say) as a model to fine-tune: the file's
   * weights under the file's names; an `Error` naming what kiln's graph cannot express otherwise. */
  static async fromOnnx(source) {
    const bytes = await sourceBytes(source, 'the ONNX model', 'Trainer.fromOnnx');
    await initTrainer();
    return new Trainer(guard(() => TrainerCore.fromOnnx(bytes)));
  }

  constructor(core) {
    if (!(core instanceof TrainerCore)) throw new TypeError('kiln-wasm: use `await Trainer.fromKiln(bytes)` to make a Trainer');
    this.#core = core;
    this.#generation = generation();
  }

  #live() {
    if (this.#core === null) throw new Error('kiln-wasm: this trainer was freed; load the checkpoint again to use it');
    if (this.#generation !== generation()) {
      throw new Error('kiln-wasm: this trainer was lost when the training engine restarted after an internal error; load it again');
    }
    return this.#core;
  }

  #describe() {
    return JSON.parse(this.#live().describe());
  }

  /** The layers, as the architecture in the checkpoint lists them (`{ type, ... }`). */
  get layers() {
    return this.#describe().layers;
  }

  /** Every parameter (not buffers) with its state-dict name, shape and whether it trains. */
  get parameters() {
    return this.#describe().parameters;
  }

  /** The per-sample input shape the model was trained on (without the batch axis), or null. */
  get inputShape() {
    return this.#describe().inputShape;
  }

  /** Stops training the parameters whose name starts with `prefix` ("" = all); returns how many. */
  freeze(prefix = '') {
    return this.#live().setTrainable(String(prefix), false);
  }

  /** Trains the parameters whose name starts with `prefix` ("" = all) again; returns how many. */
  unfreeze(prefix = '') {
    return this.#live().setTrainable(String(prefix), true);
  }

  /**
   * Chooses the optimizer, loss and metrics, as Python's `model.compile`; starts a fresh optimizer
   * state. Defaults as Python's `compile`: Adam with the core's defaults (PyTorch's), cross-entropy, no
   * metrics; `fit` compiles so when this was never called.
   */
  compile(options) {
    const { optimizer = 'adam', loss = 'cross_entropy', metrics = [], ...rest } = checkOptions(
      'compile', options, ['optimizer', 'loss', 'metrics', 'lr', 'betas', 'eps', 'weightDecay', 'amsgrad', 'momentum', 'dampening', 'nesterov', 'alpha', 'centered']);
    const entry = optimizers[String(optimizer).toLowerCase()];
    if (!entry) throw new Error(`kiln-wasm: unknown optimizer "${optimizer}" (kiln has ${Object.keys(optimizers).join(', ')})`);
    const [type, names] = entry;
    const spec = { type }; // the rest are the core's defaults (PyTorch's), as in Python
    for (const [key, value] of Object.entries(rest)) {
      if (value === undefined) continue;
      if (!(key in names)) throw new Error(`kiln-wasm: compile: the ${optimizer} optimizer has no option "${key}" (it takes ${Object.keys(names).join(', ')})`);
      spec[names[key]] = value;
    }
    guard(() => this.#live().compile(JSON.stringify(spec), String(loss), Array.from(metrics, String)));
  }

  /**
   * Trains on `x` (a Float32Array with `dims`, first axis the example) against `labels` (class
   * indices for cross-entropy; float targets `{ data, dims }` for regression losses). Options:
   * `epochs` (1), `batchSize` (32), `lr` (sets the learning rate, keeping the optimizer's state),
   * `shuffle` (true), `validationSplit` (0), `onProgress({ type: 'batch' | 'epoch', epoch, batch,
   * batches, logs })`, which may return `true` to stop (the weights reached are kept). With the
   * same checkpoint, data, options and seed this visits the batches as Python's `fit` does.
   * Returns the history: `{ history: { loss: [...], ... }, epochs, stoppedBy }`.
   */
  fit(x, dims, labels, options) {
    const { epochs = 1, batchSize = 32, lr, shuffle = true, validationSplit = 0, onProgress } = checkOptions(
      'fit', options, ['epochs', 'batchSize', 'lr', 'shuffle', 'validationSplit', 'onProgress']);
    if (onProgress !== undefined && typeof onProgress !== 'function') throw new TypeError(`kiln-wasm: fit: onProgress must be a function, not ${describeValue(onProgress)}`);
    for (const [name, v] of [['epochs', epochs], ['batchSize', batchSize]]) {
      if (!Number.isInteger(v) || v < 1) throw new TypeError(`kiln-wasm: fit: ${name} must be a whole number >= 1, got ${v}`);
    }
    const core = this.#live();
    const data = floats('x', x);
    const shape = checkDims('x', dims, data.length);
    if (!JSON.parse(core.describe()).compiled) this.compile(lr === undefined ? undefined : { lr });
    else if (lr !== undefined) guard(() => core.setLearningRate(lr));
    const config = JSON.stringify({ epochs, batch_size: batchSize, shuffle: Boolean(shuffle), validation_split: validationSplit });
    const progress = onProgress && ((type, epoch, batch, batches, logs) =>
      onProgress(type === 'batch' ? { type, epoch, batch, batches, logs: JSON.parse(logs) } : { type, epoch, logs: JSON.parse(logs) }) === true);
    return guard(() => {
      const t = targets(core, labels, shape[0] ?? 0);
      return toHistory(JSON.parse(core.fit(data, shape, t, config, progress)));
    });
  }

  /** Loss and metrics on `x` against `labels`, in evaluation mode: `{ loss, accuracy, ... }`. */
  evaluate(x, dims, labels, options) {
    const { batchSize = 256 } = checkOptions('evaluate', options, ['batchSize']);
    const core = this.#live();
    const data = floats('x', x);
    const shape = checkDims('x', dims, data.length);
    if (!JSON.parse(core.describe()).compiled) this.compile();
    return guard(() => JSON.parse(core.evaluate(data, shape, targets(core, labels, shape[0] ?? 0), batchSize)));
  }

  /** The model's raw outputs for `x` (evaluation mode): `{ data: Float32Array, dims }`. */
  predict(x, dims) {
    const core = this.#live();
    const data = floats('x', x);
    const shape = checkDims('x', dims, data.length);
    return guard(() => {
      const out = core.predict(data, shape);
      try {
        return { dims: Array.from(out.dims()), data: out.take() };
      } finally {
        out.free();
      }
    });
  }

  /**
   * The model as ONNX bytes, which `loadModel` (and onnxruntime, and Python's
   * `kiln.InferenceSession`) run. Options: `labels`, `inputScale`, `inputOffset` (written to the
   * metadata as Python's `export_onnx` does), `opset` (17).
   */
  exportOnnx(options) {
    const { labels, inputScale, inputOffset, opset = 17, statistics } = checkOptions('exportOnnx', options, ['labels', 'inputScale', 'inputOffset', 'opset', 'statistics']);
    if (statistics != null && typeof statistics !== 'string') throw new TypeError('kiln-wasm: exportOnnx statistics must be the kiln.drift text of a model (model.metadata["kiln.drift"])');
    const core = this.#live();
    const labelsJson = labels == null ? undefined : JSON.stringify(Array.from(labels, String));
    return guard(() => core.exportOnnx(labelsJson, inputScale ?? undefined, inputOffset ?? undefined, opset, statistics ?? undefined));
  }

  /** The model as a `.kiln` checkpoint: Python's `kiln.load` reads it back. */
  save() {
    const core = this.#live();
    return guard(() => core.save());
  }

  /** Every trainable value in one Float32Array, in state-dict order (Python's `get_flat_parameters`). */
  getFlatParameters() {
    const core = this.#live();
    return guard(() => core.flatParameters());
  }

  /** Releases the trainer's memory. It cannot be used afterwards. */
  free() {
    if (this.#core === null) return;
    const core = this.#core;
    this.#core = null;
    if (this.#generation === generation()) guard(() => core.free());
  }
}

function toHistory(h) {
  return { history: h.history, epochs: h.epochs, stoppedBy: h.stopped_by ?? null };
}
