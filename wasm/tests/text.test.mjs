// Text across the border: the tokenizer a kiln model carries must give Python's ids for any string
// (characters never seen included), and model.generate must write Python's text for the same seed,
// token by token, on kiln's engine and on tract. Python's side is in text.json, written by
// make_models.py (kiln_text) from the kiln models themselves (checked there against
// kiln.InferenceSession). Bad input is an Error that says what was wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, initKiln, Tokenizer } from '../pkg/index.js';
import * as worker from '../pkg/worker.js';
import { modelPath } from './helpers.mjs';

const ref = JSON.parse(readFileSync(modelPath('text.json'), 'utf8'));

for (const [name, want] of Object.entries(ref.models)) {
  test(`${name}: the model's tokenizer gives Python's ids and text for every string`, async () => {
    const model = await loadModel(modelPath(want.file));
    assert.equal(model.engine, 'kiln');
    const tok = model.tokenizer;
    assert.equal(tok.kind, want.kind);
    assert.equal(tok.vocabSize, want.vocabSize);
    assert.equal(tok.toJSONString(), want.json);
    ref.strings.forEach((s, i) => {
      const ids = tok.encode(s);
      assert.ok(ids instanceof BigInt64Array, 'int64 ids for a model whose input is int64');
      assert.deepEqual(Array.from(ids, Number), want.ids[i], JSON.stringify(s));
      assert.equal(tok.decode(ids), want.decoded[i]);
      assert.equal(tok.decode(Int32Array.from(want.ids[i])), want.decoded[i]);
      assert.equal(tok.decode(want.ids[i]), want.decoded[i]);
    });
    const T = model.inputs[0].dims[1];
    const out = model.run(new BigInt64Array(T).fill(BigInt(tok.encode('a')[0])), [1, T]);
    assert.equal(out.dims.at(-1), want.vocabSize, 'the ids run through the model as they are');
    model.free();
  });

  test(`${name}: generate writes Python's text for the same seed, on kiln's engine and on tract`, async () => {
    for (const engine of ['kiln', 'tract']) {
      const model = await loadModel(modelPath(want.file), { engine });
      for (const run of want.runs) {
        const pieces = [];
        const text = await model.generate(run.prompt, {
          maxNewTokens: 12, temperature: run.temperature, topK: run.topK ?? undefined, seed: run.seed,
          onToken: (t, id) => pieces.push([t, id]),
        });
        assert.equal(text, run.text, `${engine} ${JSON.stringify(run)}`);
        assert.deepEqual(pieces, run.pieces);
      }
      model.free();
    }
  });
}

for (const [name, why] of [['names_lm', 'Embedding → reshape(-1, E) → Linear → reshape qualifies'], ['names_transformer', 'exported causal attention is read back as attention']]) test(`generate: ${name} runs position by position on kiln's engine, with the windowed rerun's text`, async () => {
  const file = modelPath(ref.models[name].file);
  const cached = await loadModel(file, { engine: 'kiln' });
  const windowed = await loadModel(file, { engine: 'tract' });
  assert.equal(cached.generatesCached(), true, why);
  assert.equal(windowed.generatesCached(), false, 'tract reruns the window');
  const fixed = await loadModel(modelPath(ref.models.names.file));
  assert.equal(fixed.generatesCached(), false, 'a model with one output row reruns its window');
  fixed.free();
  const T = cached.inputs[0].dims[1];
  const texts = new Set();
  for (let seed = 0; seed < 24; seed++) {
    // past the window's end too: there the cache starts again on the last T ids
    for (const prompt of ['', 'ma', 'tamaramarinamiranda'.slice(0, T + 3)]) {
      const options = { maxNewTokens: 2 * T, temperature: 1.2, seed };
      const pieces = [];
      const text = await cached.generate(prompt, { ...options, onToken: (t, id) => pieces.push([t, id]) });
      const want = [];
      assert.equal(text, await windowed.generate(prompt, { ...options, onToken: (t, id) => want.push([t, id]) }), `seed ${seed}, ${JSON.stringify(prompt)}`);
      assert.deepEqual(pieces, want);
      texts.add(text);
    }
  }
  assert.ok(texts.size > 24, `the seeds give different texts (${texts.size})`);
  cached.free();
  windowed.free();
});

test('generate: edge cases are defined, bad options and models without a tokenizer are Errors', async () => {
  const model = await loadModel(modelPath(ref.models.names.file));
  assert.equal(await model.generate('ma', { maxNewTokens: 0 }), 'ma');
  const greedy = await model.generate('ma', { temperature: 0, seed: 1 });
  assert.equal(await model.generate('ma', { temperature: 0, seed: 99 }), greedy, 'greedy ignores the seed');
  assert.equal(await model.generate('ma', { temperature: 3, topK: 1, seed: 7 }), greedy, 'topK 1 is greedy');
  const long = await model.generate('ma', { maxNewTokens: 400, temperature: 2, seed: 3 });
  assert.ok(long.length <= 402);
  for (const [options, message] of [
    [{ temperature: -1 }, /temperature must be 0/],
    [{ temperature: NaN }, /temperature/],
    [{ maxNewTokens: -1 }, /max_new_tokens must be 0 to 65536/],
    [{ maxNewTokens: 1e9 }, /max_new_tokens must be 0 to 65536/],
    [{ maxNewTokens: 2.5 }, /maxNewTokens must be an integer/],
    [{ topK: 0 }, /top_k must be at least 1/],
    [{ seed: -1 }, /seed must be 0 or more/],
    [{ seed: 0.5 }, /seed must be an integer/],
  ]) {
    await assert.rejects(model.generate('ma', options), (e) => e instanceof Error && message.test(e.message) && e.message.startsWith('kiln-wasm: '));
  }
  await assert.rejects(model.generate(42), TypeError);
  await assert.rejects(model.generate('ma', { seed: '1' }), /seed must be a number/);
  await assert.rejects(model.generate('ma', { onToken: 3 }), /onToken must be a function/);
  await assert.rejects(model.generate('ma', { onToken: () => { throw new RangeError('from the page'); } }), RangeError);
  // the model still works after all of that
  assert.equal(await model.generate('ma', { temperature: 0 }), greedy);
  model.free();
  await assert.rejects(model.generate('ma'), /freed/);

  const plain = await loadModel(modelPath('kiln_digits.onnx'));
  assert.equal(plain.tokenizer, null);
  await assert.rejects(plain.generate('ma'), /carries no tokenizer.*export_onnx\(\.\.\., tokenizer=tok\)/);
  plain.free();
});

test('generate: the odd inputs Python defines the same way (py-bindings/tests/test_text.py)', async () => {
  const model = await loadModel(modelPath(ref.models.names.file));
  const opts = { maxNewTokens: 10, temperature: 1, seed: 5 };
  const every = await model.generate('ma', opts);
  for (const topK of [model.tokenizer.vocabSize, 1e6, 2 ** 63, 1e30, Infinity]) {
    assert.equal(await model.generate('ma', { ...opts, topK }), every, `topK ${topK} is every token`);
  }
  // a long prompt is seen through the window (4 ids): only its last ids matter, as in Python
  const long = await model.generate('x'.repeat(5000) + 'ma', { maxNewTokens: 8, temperature: 0.8, topK: 5, seed: 2 });
  assert.equal(long, 'x'.repeat(4998) + await model.generate('xxma', { maxNewTokens: 8, temperature: 0.8, topK: 5, seed: 2 }));
  assert.deepEqual(Array.from(model.tokenizer.encode('ma\ud800'), Number), [...Array.from(model.tokenizer.encode('ma'), Number), 1]);
  assert.equal(await model.generate('ma\ud800', opts), await model.generate('ma\ufffd', opts));
  await assert.rejects(model.generate('ma', { seed: 2 ** 60 }), (e) => e instanceof RangeError && /seed must be 0 to 9007199254740991/.test(e.message));
  await assert.rejects(model.generate('ma', { temperature: Infinity }), /temperature must be 0/);
  await assert.rejects(model.generate('ma', { topK: -1 }), /top_k must be at least 1/);
  model.free();

  const { file, classes, vocabSize } = ref.classifier;
  const classifier = await loadModel(modelPath(file));
  assert.equal(classifier.tokenizer.vocabSize, vocabSize);
  await assert.rejects(classifier.generate('ma'), new RegExp(`gives ${classes} logits per token but the tokenizer has ${vocabSize} ids`));
  assert.equal(await classifier.generate('ma', { maxNewTokens: 0 }), 'ma', 'nothing to run: the prompt back');
  classifier.free();
});

test('Tokenizer.fromJSON: bad documents and ids are Errors that say what, and mutated bytes never crash', async () => {
  await initKiln();
  const json = ref.models.names_bpe.json;
  const tok = Tokenizer.fromJSON(json, { type: 'int32' });
  assert.ok(tok.encode('maria') instanceof Int32Array);
  assert.equal(tok.decode(tok.encode('Zoë 😀')), 'Zoë 😀');
  assert.throws(() => tok.decode([tok.vocabSize]), /kiln-wasm: decode: id 300 is not in the vocabulary/);
  assert.throws(() => tok.decode([1.5]), /not an integer|must be an integer/);
  assert.throws(() => tok.decode('abc'), TypeError);
  assert.throws(() => tok.encode(7), TypeError);
  assert.equal(tok.token(3), '<eos>');
  assert.throws(() => Tokenizer.fromJSON('{"format": "kiln.tokenizer", "version": 9}'), /version 9/);
  assert.throws(() => Tokenizer.fromJSON(42), TypeError);
  let refused = 0;
  let seed = 7;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
  for (let trial = 0; trial < 400; trial++) {
    const chars = [...(trial % 2 ? json : ref.models.names.json)];
    const i = rand(chars.length);
    if (trial % 3 === 0) chars[i] = '0123456789[]{},":'[rand(18)];
    else if (trial % 3 === 1) chars.length = i;
    else chars.splice(i, 1);
    try {
      const t = Tokenizer.fromJSON(chars.join(''));
      assert.equal(typeof t.decode(t.encode('Zoë maria 😀')), 'string', 'whatever loads works');
      t.free();
    } catch (e) {
      assert.ok(e instanceof Error && e.message.startsWith('kiln-wasm: tokenizer JSON') || /tokenizer|merge|character/.test(e.message), e.message);
      refused += 1;
    }
  }
  console.log(`# mutated tokenizer JSON: ${refused} of 400 refused`);
  assert.ok(refused > 150);
  tok.free();
});

test('kiln-wasm/worker: the tokenizer and generate work in the worker, with onToken on this thread', async () => {
  const want = ref.models.names;
  const model = await worker.loadModel(modelPath(want.file));
  assert.equal(model.tokenizer.vocabSize, want.vocabSize);
  assert.deepEqual(Array.from(await model.tokenizer.encode(ref.strings[4]), Number), want.ids[4]);
  assert.equal(await model.tokenizer.decode(want.ids[4]), want.decoded[4]);
  for (const run of want.runs.slice(0, 3)) {
    const pieces = [];
    const text = await model.generate(run.prompt, { maxNewTokens: 12, temperature: run.temperature, topK: run.topK ?? undefined, seed: run.seed, onToken: (t, id) => pieces.push([t, id]) });
    assert.equal(text, run.text);
    assert.deepEqual(pieces, run.pieces);
  }
  await assert.rejects(model.generate('ma', { temperature: -2 }), /temperature must be 0/);
  await model.free();
  const plain = await worker.loadModel(modelPath('kiln_digits.onnx'));
  assert.equal(plain.tokenizer, null);
  await assert.rejects(plain.generate('ma'), /carries no tokenizer/);
  await plain.free();
  await worker.terminate();
});
