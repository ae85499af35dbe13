// Per-token generation latency, shared by Node and the page in headless Chromium (generate_speed.mjs
// drives both), so the two environments time the same calls. Plain ES module: performance.now() and
// dynamic import() only.
//
// The model is the web demo's GRU language model (web-demo/model/names-generator.onnx: [1, 16] ids in,
// [1, 16, vocab] logits out), and both engines do what a page streaming a name does:
// - kiln-wasm: `model.generate(prompt, { maxNewTokens, temperature, topK, seed, onToken })`, kiln-core's
//   loop (window, sampling) in wasm, one macrotask yield per token so a page can paint;
// - onnxruntime-web (wasm, 1 thread, no proxy): the same loop in JS around `session.run`: the last 16
//   ids right-padded with <pad>, the logits row of the last real id, temperature and top-k sampling
//   with a seeded JS RNG that never picks pad/unk/bos, the same yield per token.
// A "step" is one model run: every token, plus the run that picked <eos>. ms per step = the
// generation's wall time / its steps. Each step is also timed on its own (from the previous token's
// arrival to this one's, yield included) with its position (the ids before it: bos, the prompt, the
// tokens so far), so early and late positions in the window can be compared: rerunning the window
// costs the same at every position, and so does a step that carries state or caches keys/values.

const PAD = 0, UNK = 1, BOS = 2, EOS = 3;

/** A macrotask turn, as kiln-wasm's generate takes between tokens (setImmediate in Node, a MessageChannel in pages). */
function nextTurn() {
  if (typeof setImmediate === 'function') return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.onmessage = () => { port1.close(); resolve(); };
    port2.postMessage(null);
  });
}

function mean(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** xorshift32: a seeded uniform draw in [0, 1). */
function rng(seed) {
  let s = (seed * 2654435761 + 1) >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

/** Samples an id from `logits` (temperature, top-k), never a special id other than eos. */
function sample(logits, temperature, topK, draw) {
  const ids = [];
  for (let i = 0; i < logits.length; i++) if (i !== PAD && i !== UNK && i !== BOS) ids.push(i);
  ids.sort((a, b) => logits[b] - logits[a]);
  const kept = topK ? ids.slice(0, topK) : ids;
  if (temperature === 0) return kept[0];
  const max = logits[kept[0]];
  const weights = kept.map((i) => Math.exp((logits[i] - max) / temperature));
  let u = draw() * weights.reduce((a, b) => a + b, 0);
  for (let j = 0; j < kept.length; j++) {
    u -= weights[j];
    if (u <= 0) return kept[j];
  }
  return kept[kept.length - 1];
}

export const ENGINES = {
  'kiln-wasm': {
    async start(url, bytes) {
      const kiln = await import(url);
      const model = await kiln.loadModel(bytes);
      return {
        engine: model.engine,
        encode: (text) => Array.from(model.tokenizer.encode(text), Number),
        async generate(prompt, { maxNewTokens, temperature, topK, seed }) {
          let tokens = 0;
          const first = 1 + model.tokenizer.encode(prompt).length;
          const stepMs = [];
          let last = performance.now();
          const mark = () => {
            const now = performance.now();
            stepMs.push([first + stepMs.length, now - last]);
            last = now;
          };
          const text = await model.generate(prompt, { maxNewTokens, temperature, topK, seed, onToken: () => { tokens++; mark(); } });
          if (tokens < maxNewTokens) mark(); // the run that picked <eos>
          return { text, tokens, steps: tokens + (tokens < maxNewTokens ? 1 : 0), stepMs };
        },
        release: () => model.free(),
      };
    },
  },
  'onnxruntime-web': {
    async start(url, bytes, { promptIds }) {
      const ort = await import(url);
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.logLevel = 'error';
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      const input = session.inputNames[0], output = session.outputNames[0];
      return {
        engine: 'onnxruntime-web',
        async generate(prompt, { maxNewTokens, temperature, topK, seed, T = 16 }) {
          const draw = rng(seed);
          const context = [BOS, ...promptIds[prompt]];
          let tokens = 0, steps = 0;
          const ids = new BigInt64Array(T);
          const stepMs = [];
          let last = performance.now();
          for (;;) {
            if (tokens >= maxNewTokens) break;
            const window = context.slice(-T);
            ids.fill(BigInt(PAD));
            for (let i = 0; i < window.length; i++) ids[i] = BigInt(window[i]);
            const out = (await session.run({ [input]: new ort.Tensor('int64', ids, [1, T]) }))[output];
            steps++;
            const V = out.dims[2];
            const row = out.data.subarray((window.length - 1) * V, window.length * V);
            const id = sample(row, temperature, topK, draw);
            const now = performance.now();
            stepMs.push([context.length, now - last]);
            last = now;
            if (id === EOS) break;
            context.push(id);
            tokens++;
            await nextTurn();
          }
          return { tokens, steps, stepMs };
        },
        release: () => session.release(),
      };
    },
  },
};

/**
 * Warm-up for `warmupMs`, then generations (one per seed, cycling over `prompts`) until `budgetMs`
 * or `maxRuns`: median and spread of ms per step over the generations, and the total steps timed.
 */
export async function measureGenerate({ engine, url, bytes, promptIds, window = 16, prompts = ['', 'Ma', 'Ber'], latePrompt = null,
  maxNewTokens = 20, temperature = 0.8, topK = 5, warmupMs = 1000, budgetMs = 3000, minRuns = 20, maxRuns = 400 }) {
  const e = await ENGINES[engine].start(url, bytes, { promptIds });
  const opts = (seed) => ({ maxNewTokens, temperature, topK, seed, T: window });
  // Steps at positions 2-5 (early in the window) and window-4 .. window-1 (late), the first step of
  // each generation (which also starts it) left out: per generation the mean of its steps there (a
  // sum of consecutive intervals, so a coarse clock, as in a page, blurs it less), then the median
  // over generations. Late steps come from generations of `latePrompt` (its ids end near the
  // window's end), cut at the window.
  const early = [], late = [];
  let earlySteps = 0, lateSteps = 0;
  const lateTokens = latePrompt === null ? 0 : window - 1 - promptIds[latePrompt].length;
  const bucket = (r) => {
    const e = [], l = [];
    for (const [at, stepMs] of r.stepMs.slice(1)) {
      if (at >= 2 && at <= 5) e.push(stepMs);
      else if (at >= window - 4 && at < window) l.push(stepMs);
    }
    if (e.length) early.push(mean(e));
    if (l.length) late.push(mean(l));
    earlySteps += e.length;
    lateSteps += l.length;
  };
  let seed = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < warmupMs) await e.generate(prompts[seed % prompts.length], opts(seed++));
  const perStep = [];
  let steps = 0, tokens = 0, busy = 0;
  const t1 = performance.now();
  while (perStep.length < maxRuns && (perStep.length < minRuns || performance.now() - t1 < budgetMs)) {
    const s = seed++;
    const g0 = performance.now();
    const r = await e.generate(prompts[s % prompts.length], opts(s));
    const ms = performance.now() - g0;
    perStep.push(ms / r.steps);
    busy += ms;
    steps += r.steps;
    tokens += r.tokens;
    bucket(r);
    if (lateTokens > 1) bucket(await e.generate(latePrompt, { ...opts(s), maxNewTokens: lateTokens }));
  }
  await e.release();
  return {
    engine, model_engine: e.engine, ms_per_step_median: median(perStep), ms_per_step_mean: busy / steps,
    ms_per_step_min: Math.min(...perStep), ms_per_step_max: Math.max(...perStep),
    ms_per_step_early: early.length ? median(early) : null, early_steps: earlySteps, ms_per_step_late: late.length ? median(late) : null, late_steps: lateSteps,
    generations: perStep.length, steps, tokens, settings: { window, prompts, latePrompt, maxNewTokens, temperature, topK, warmupMs, budgetMs },
  };
}
