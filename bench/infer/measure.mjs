// What the wasm inference benchmarks measure, shared by Node (node.mjs) and the page in headless
// Chromium (page.mjs), so both environments time exactly the same calls. Plain ES module: no Node
// or DOM APIs here, only performance.now() and dynamic import().
//
// One engine and one model per process (per fresh browser profile), so the cold start is a real one:
// nothing of the engine is loaded, compiled or cached before the clock starts.

/** The engines, each as a loader: import its JS, initialise its wasm, load the model's bytes. */
export const ENGINES = {
  'kiln-wasm': {
    // kiln's public API: initKiln() fetches + compiles + instantiates the small module (kiln's own
    // engine), loadModel parses the graph there — or, when kiln's engine declines it, fetches
    // tract's module and loads it with tract (counted in 'load') — and run() copies the input in
    // and the output out.
    async start(url, bytes, mark) {
      const kiln = await import(url);
      mark('import');
      await (kiln.initKiln ?? kiln.init)();
      mark('init');
      const model = await kiln.loadModel(bytes);
      mark('load');
      const handle = (m) => ({
        engine: m.engine,
        simd: m.simd,
        run: (x) => m.run(x.data, x.shape),
        output: (r) => r.data,
        release: () => m.free(),
      });
      // another model in the same module (the int8 file's float twin, for `paired`)
      return { ...handle(model), another: async (b) => handle(await kiln.loadModel(b)) };
    },
  },
  'onnxruntime-web': {
    // The wasm backend with one thread (kiln has one; threads need a cross-origin-isolated page)
    // and no proxy worker. onnxruntime-web has no public "initialise only" call: the wasm is
    // fetched and instantiated inside the first InferenceSession.create, so init and load are one.
    async start(url, bytes, mark) {
      const ort = await import(url);
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.logLevel = 'error';
      mark('import');
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      mark('init+load');
      const name = session.inputNames[0];
      const out = session.outputNames[0];
      return {
        run: async (x) => (await session.run({ [name]: new ort.Tensor('float32', x.data, x.shape) }))[out],
        output: (r) => r.data,
        release: () => session.release(),
      };
    },
  },
  'tfjs-wasm': {
    // TensorFlow.js 4.22's wasm backend (XNNPACK), one thread. `url` is bench/peers-js/tfjs.mjs, `bytes`
    // the model as a TF.js layer list with kiln's trained weights (bench/tfjs_spec.py), built with
    // tfjs-layers; the input is handed over in NHWC (converted once per batch, outside the timing).
    async start(url, bytes, mark) {
      const peer = await import(url);
      mark('import');
      await peer.init();
      mark('init');
      const model = peer.build(JSON.parse(new TextDecoder().decode(bytes)));
      mark('load');
      return { run: (x) => peer.run(model, x), output: (r) => r, release: () => model.dispose() };
    },
  },
};

/** A deterministic batch: `shape` without the batch dimension, pixels in [0, 1]. */
export function inputFor(shape, batch) {
  const full = [batch, ...shape];
  const n = full.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 17) / 16;
  return { data, shape: full };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const SETTINGS = {
  full: { warmupMs: 1000, minWarmupRuns: 10, groups: 21, minGroups: 7, groupMs: 25, budgetMs: 4000 },
  quick: { warmupMs: 200, minWarmupRuns: 3, groups: 7, minGroups: 3, groupMs: 10, budgetMs: 600 },
};

/** Runs `run` for at least `s.warmupMs` and `s.minWarmupRuns` calls; returns ms per call. */
async function warmUp(run, s) {
  const start = performance.now();
  let calls = 0;
  while (calls < s.minWarmupRuns || performance.now() - start < s.warmupMs) {
    await run();
    calls++;
  }
  return (performance.now() - start) / calls;
}

/** Back-to-back calls that last about `s.groupMs` at `perCall` ms each (at least one). */
const callsPerGroup = (perCall, s) => Math.max(1, Math.round(s.groupMs / perCall));

/** `n` back-to-back calls of `run`: ms per call. */
async function group(run, n) {
  const g0 = performance.now();
  for (let i = 0; i < n; i++) await run();
  return (performance.now() - g0) / n;
}

/**
 * Milliseconds per call of `run`: the median over groups of calls, after a warm-up.
 * - Warm-up: at least `warmupMs` and `minWarmupRuns` calls. V8 (Node and Chromium alike) first
 *   runs wasm with its baseline compiler and swaps in optimised code in the background; timing
 *   before that measures the compiler, not the engine.
 * - A group is enough back-to-back calls to last about `groupMs` (at least one), so the clock's
 *   grain (100 µs in a page that is not cross-origin isolated) does not matter.
 * - `groups` groups, but no more than fit in `budgetMs` once `minGroups` are done, so a slow
 *   model (ResNet at batch 64) does not stretch the run.
 */
export async function latency(run, s) {
  const perGroup = callsPerGroup(await warmUp(run, s), s);
  const times = [];
  const t0 = performance.now();
  while (times.length < s.groups && (times.length < s.minGroups || performance.now() - t0 < s.budgetMs)) {
    times.push(await group(run, perGroup));
  }
  return {
    median_ms: median(times),
    min_ms: Math.min(...times),
    max_ms: Math.max(...times),
    groups: times.length,
    per_group: perGroup,
  };
}

/**
 * Two models of one engine timed against each other in one process: groups of `run` and of
 * `twinRun` alternate (A B B A ...), so a drift in the machine's speed hits both alike, and the
 * ratio is the median of each round's twin / run ratio (two adjacent groups), not a ratio of two
 * medians taken minutes apart in two processes (this VM's speed swings ±30% between those). The
 * twin is warmed up first as `latency` warms up (`run` is warm already).
 */
export async function pairedLatency(run, twinRun, s) {
  const b = callsPerGroup(await warmUp(twinRun, s), s);
  const a = callsPerGroup(await group(run, 3), s);
  const self = [], twin = [], ratios = [];
  const t0 = performance.now();
  // twice the groups of `latency` (each round is two groups), in the same budget doubled
  while (self.length < s.groups && (self.length < s.minGroups || performance.now() - t0 < 2 * s.budgetMs)) {
    let x, y;
    if (self.length % 2) {
      y = await group(twinRun, b);
      x = await group(run, a);
    } else {
      x = await group(run, a);
      y = await group(twinRun, b);
    }
    self.push(x);
    twin.push(y);
    ratios.push(y / x);
  }
  return { median_ms: median(self), twin_median_ms: median(twin), twin_over_self: median(ratios), rounds: self.length };
}

/**
 * The whole measurement for one engine and one model. `bytes`: the model, already in memory (both
 * engines get the same Uint8Array; fetching it is not the engine's cost). `coldOnly`: stop after
 * the first prediction (the extra cold starts and the repeat visit).
 */
export async function measure({ engine, url, bytes, shape, quick = false, coldOnly = false, twin = null }) {
  const loader = ENGINES[engine];
  if (!loader) throw new Error(`unknown engine ${engine}; one of ${Object.keys(ENGINES).join(', ')}`);
  const settings = quick ? SETTINGS.quick : SETTINGS.full;
  const wasmMemory = tapWasmMemory();
  const phases = {};
  const t0 = performance.now();
  let last = t0;
  const mark = (name) => {
    const now = performance.now();
    phases[name] = now - last;
    last = now;
  };
  const e = await loader.start(url, bytes, mark);
  const one = inputFor(shape, 1);
  const first = await e.run(one);
  mark('first run');
  const firstAt = performance.now();
  const cold = { total_ms: firstAt - t0, first_prediction_at_ms: firstAt, phases };
  const perExample = e.output(first).length;
  const sample = Array.from(e.output(first).slice(0, 10));
  const memoryAfterFirst = wasmMemory();
  if (coldOnly) {
    await e.release();
    return { engine, model_engine: e.engine ?? null, model_simd: e.simd ?? null, cold, sample, memory: { after_first: memoryAfterFirst } };
  }

  const b64 = inputFor(shape, 64);
  const latencies = {
    1: await latency(() => e.run(one), settings),
    64: await latency(() => e.run(b64), settings),
  };
  const out64 = e.output(await e.run(b64));
  if (out64.length !== 64 * perExample) {
    throw new Error(`${engine}: batch 64 gave ${out64.length} outputs, expected ${64 * perExample}`);
  }
  const memoryAfterRuns = wasmMemory();
  // `twin` ({ name, bytes }): the int8 file's float model, timed against it in this process
  let paired = null;
  if (twin && e.another) {
    const t = await e.another(twin.bytes);
    paired = { twin: twin.name, twin_engine: t.engine ?? null };
    for (const [b, x] of [[1, one], [64, b64]]) paired[b] = await pairedLatency(() => e.run(x), () => t.run(x), settings);
    await t.release();
  }
  await e.release();
  // model_engine: which of kiln-wasm's engines loadModel picked ('kiln' or 'tract'); null for ort-web.
  // model_simd: which build of the module ran it ('relaxed-simd' or 'simd128'); null for the peers.
  return { engine, model_engine: e.engine ?? null, model_simd: e.simd ?? null, cold, latency: latencies, paired, sample, memory: { after_first: memoryAfterFirst, after_runs: memoryAfterRuns }, settings };
}

/**
 * Watches WebAssembly.instantiate / instantiateStreaming / new WebAssembly.Instance from now on and
 * keeps every WebAssembly.Memory an instantiation imports or exports; returns a function that reads
 * their current sizes. Both engines instantiate through these (wasm-bindgen's glue exports the
 * memory; onnxruntime-web's Emscripten glue creates it in JS and imports it), so they are read the
 * same way without reaching into either one's internals. (The DevTools protocol's
 * Runtime.queryObjects would need no wrapping, but it crashes Chromium 156's renderer once
 * onnxruntime-web's shared memory exists.) Wasm memory only grows, so a later read is also the peak.
 */
export function tapWasmMemory() {
  const W = globalThis.WebAssembly;
  const seen = new Set();
  // Node's own fetch (undici) compiles its HTTP parser to wasm when a glue first touches the
  // global Response; that memory is Node's, not the engine's. (Checked before any await, while the
  // caller is still on the stack.)
  const fromNode = () => Boolean(new Error().stack?.includes('node:internal/'));
  const grab = (imports, instance, skip) => {
    if (skip) return;
    for (const module of Object.values(imports ?? {})) {
      for (const value of Object.values(module ?? {})) if (value instanceof W.Memory) seen.add(value);
    }
    for (const value of Object.values(instance?.exports ?? {})) if (value instanceof W.Memory) seen.add(value);
  };
  const { instantiate, instantiateStreaming, Instance } = W;
  W.instantiate = async function (source, imports) {
    const skip = fromNode();
    const result = await instantiate.call(W, source, imports);
    grab(imports, result instanceof Instance ? result : result.instance, skip);
    return result;
  };
  if (instantiateStreaming) {
    W.instantiateStreaming = async function (source, imports) {
      const skip = fromNode();
      const result = await instantiateStreaming.call(W, source, imports);
      grab(imports, result.instance, skip);
      return result;
    };
  }
  W.Instance = new Proxy(Instance, {
    construct(target, args) {
      const instance = Reflect.construct(target, args);
      grab(args[1], instance, fromNode());
      return instance;
    },
  });
  return () => {
    const memories = [...seen].map((m) => m.buffer.byteLength);
    return { total: memories.reduce((a, b) => a + b, 0), memories };
  };
}

/** Medians over cold-start runs, phase by phase (the phases' medians need not add up to the total's). */
export function summariseCold(runs) {
  const out = { total_ms: median(runs.map((r) => r.total_ms)), phases: {}, runs: runs.length, total_ms_all: runs.map((r) => Math.round(r.total_ms * 100) / 100) };
  if (runs.every((r) => r.first_prediction_at_ms !== undefined)) out.first_prediction_at_ms = median(runs.map((r) => r.first_prediction_at_ms));
  for (const k of Object.keys(runs[0].phases)) out.phases[k] = median(runs.map((r) => r.phases[k]));
  return out;
}
