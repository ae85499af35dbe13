// Drift where the model runs: `model.monitor()` compares live inputs with the training statistics
// kiln's export_onnx(..., reference=X_train) stored in the model (metadata `kiln.drift`), and the
// feedback file a page saves for retraining in Python (`kiln.drift.load_feedback`). The statistics
// are kiln-core's (core/src/drift), the code Python's kiln.drift runs: same stream, same report.
import { coreGuard, core, initKiln } from './core.js';
import { describeValue } from './util.js';

const flat = (dims) => Uint32Array.from(dims);

/**
 * A sliding window over a model's live inputs. Made by `model.monitor(options)`; `observe` an
 * input (the model runs on it), or let every `model.run` feed it with `{ auto: true }`.
 */
export class Monitor {
  #core;
  #model;
  #run;
  #callbacks = [];
  #detach;

  /** @internal */
  constructor(model, run, metadata, { window, alpha, minPsi } = {}, detach = () => {}) {
    for (const [name, v] of [['window', window], ['alpha', alpha], ['minPsi', minPsi]]) {
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) {
        throw new TypeError(`kiln-wasm: monitor option ${name} must be a non-negative number, not ${describeValue(v)}`);
      }
    }
    if (window !== undefined && !Number.isInteger(window)) throw new TypeError(`kiln-wasm: monitor window must be a whole number, not ${window}`);
    this.#core = coreGuard.guard(() => core.DriftMonitor.create(metadata ?? undefined, window, alpha, minPsi));
    this.#model = model;
    this.#run = run;
    this.#detach = detach;
  }

  /** The window's length. */
  get window() {
    return this.#live().window;
  }

  /** Shape of one example, as the model takes it (no batch axis). */
  get inputShape() {
    return Array.from(this.#live().inputShape);
  }

  #live() {
    if (this.#core === null) throw new Error('kiln-wasm: this monitor was freed');
    return this.#core;
  }

  #dims(data, dims) {
    if (dims !== undefined) return dims;
    const shape = this.inputShape;
    const per = shape.reduce((a, b) => a * b, 1);
    const n = data.length / per;
    return [Number.isInteger(n) && n > 0 ? n : 1, ...shape]; // else the core says how many values one example needs
  }

  /**
   * Adds one input (or a batch: give `dims` with the batch first) to the window; the model runs on
   * it. Throws an `Error` for a NaN or a wrong shape and leaves the window as it was. Returns the
   * number of examples added.
   */
  observe(input, dims) {
    if (!(input instanceof Float32Array)) {
      throw new TypeError(`kiln-wasm: observe takes a Float32Array (what the model is fed), not ${describeValue(input)}`);
    }
    const mon = this.#live();
    const shape = this.#dims(input, dims);
    coreGuard.guard(() => mon.admit(input, flat(shape)));
    const out = this.#run(input, shape);
    return this.#add(input, shape, out);
  }

  /** @internal what an `{ auto: true }` model calls after each run: refused inputs are only counted. */
  seen(input, dims, out) {
    if (this.#core === null || !(input instanceof Float32Array) || !(out.data instanceof Float32Array)) return;
    try {
      coreGuard.guard(() => this.#core.admit(input, flat(dims)));
      this.#add(input, dims, out);
    } catch {
      // counted as rejected by the core; a run must not fail because its monitor refused the input
    }
  }

  #add(input, dims, out) {
    const mon = this.#live();
    const n = coreGuard.guard(() => mon.observe(input, flat(dims), out.data, flat(out.dims)));
    if (this.#callbacks.length) {
      const started = coreGuard.guard(() => mon.driftStarted());
      if (started !== undefined) {
        const report = JSON.parse(started);
        for (const cb of [...this.#callbacks]) cb(report);
      }
    }
    return n;
  }

  /**
   * The window's report: `{ drifted, psi, p_value, moved, features, classes, confidence, observed,
   * window, ready, seen, rejected, ... }` (the same object Python's `DriftMonitor.report()` gives).
   */
  report() {
    const mon = this.#live();
    return JSON.parse(coreGuard.guard(() => mon.report()));
  }

  /** Calls `callback(report)` each time the verdict turns to drift. Returns a function that unsubscribes. */
  onDrift(callback) {
    if (typeof callback !== 'function') throw new TypeError(`kiln-wasm: onDrift takes a function, not ${describeValue(callback)}`);
    this.#callbacks.push(callback);
    return () => {
      this.#callbacks = this.#callbacks.filter((c) => c !== callback);
    };
  }

  /** Empties the window (after swapping in a retrained model, say). */
  reset() {
    const mon = this.#live();
    coreGuard.guard(() => mon.reset());
  }

  /** Stops watching and releases the monitor's memory. */
  free() {
    if (this.#core === null) return;
    const mon = this.#core;
    this.#core = null;
    this.#detach(this);
    coreGuard.guard(() => mon.free());
  }
}

function labelArray(labels) {
  if (!(labels instanceof Int32Array) && !Array.isArray(labels)) {
    throw new TypeError(`kiln-wasm: saveFeedback labels must be an Int32Array or an Array of class indices, not ${describeValue(labels)}`);
  }
  const out = Int32Array.from(labels);
  if (out.some((v, i) => v !== Number(labels[i]))) throw new TypeError('kiln-wasm: saveFeedback labels must be whole numbers');
  return out;
}

/**
 * The bytes of a feedback file (`.kiln-data`): the examples a user labelled (`inputs`, shaped
 * `dims`, examples first), their `labels` and the `modelVersion` they were collected against.
 * Python reads it with `kiln.drift.load_feedback(path)`.
 */
export async function saveFeedback({ inputs, dims, labels, modelVersion = '' } = {}) {
  await initKiln();
  if (!(inputs instanceof Float32Array)) throw new TypeError(`kiln-wasm: saveFeedback inputs must be a Float32Array, not ${describeValue(inputs)}`);
  if (!Array.isArray(dims)) throw new TypeError('kiln-wasm: saveFeedback dims must be an Array (examples first)');
  const ys = labelArray(labels);
  return coreGuard.guard(() => core.saveFeedback(inputs, flat(dims), ys, String(modelVersion)));
}

/** Reads a feedback file's bytes: `{ inputs, dims, labels, modelVersion }`. */
export async function loadFeedback(bytes) {
  await initKiln();
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return coreGuard.guard(() => {
    const f = core.loadFeedback(data);
    try {
      return { inputs: f.inputs(), dims: Array.from(f.dims()), labels: f.labels(), modelVersion: f.modelVersion() };
    } finally {
      f.free();
    }
  });
}

/** The fingerprint a feedback file records for a model's bytes (Python: `kiln.drift.model_version`). */
export async function modelVersion(bytes) {
  await initKiln();
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return coreGuard.guard(() => core.modelVersion(data));
}
