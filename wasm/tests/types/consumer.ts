// A small program written against kiln-wasm's published types, imported by package name so the
// package.json "exports" and "types" are exercised too. test.sh type-checks it (tsc --noEmit)
// in a folder where node_modules/kiln-wasm is wasm/pkg. The @ts-expect-error lines prove the
// types refuse misuse instead of being `any`.
import { init, loadModel, relaxedSimd, Model, Tokenizer, Trainer, type History, type Prediction, type Progress, type Tensor, type TensorInfo } from 'kiln-wasm';
import { Trainer as TrainerFromTrain } from 'kiln-wasm/train';
import * as worker from 'kiln-wasm/worker';

export async function inThePage(url: string, file: Blob): Promise<string> {
  await init();
  const model: Model = await loadModel(url);
  await loadModel(file);
  await loadModel(new Uint8Array(16));
  await loadModel(await fetch(url));

  const input: TensorInfo = model.inputs[0];
  const batch: number | null = input.dims[0];
  const labels: ReadonlyArray<string> | null = model.labels;
  const simd: 'relaxed-simd' | 'simd128' = model.simd;
  const relaxed: boolean = relaxedSimd;
  const version: string | undefined = model.metadata['kiln.version'];

  const out: Tensor = model.run(new Float32Array(64), [1, 1, 8, 8]);
  const dims: number[] = out.dims;
  const scores = out.data;
  const many: Record<string, Tensor> = model.runMany({
    pixels: { data: new Float32Array(64), dims: [1, 1, 8, 8] },
    ids: { data: new BigInt64Array(4), dims: [1, 4] },
    mask: { data: new Int32Array(4), dims: [1, 4] },
  });
  const top: Prediction[] = model.classify(new Float32Array(64), [1, 1, 8, 8], { topK: 3 });
  const best: string = top[0].label;
  const at: number = top[0].index + top[0].score;
  const pixels = { data: new Uint8ClampedArray(4 * 8 * 8), width: 8, height: 8 };
  const fromImage: Tensor = model.run(pixels);
  const prepared: Float32Array = model.preprocess(pixels);
  const topOfImage: Prediction[] = model.classify(pixels, { topK: 1 });
  model.free();
  // @ts-expect-error an image takes no dims
  model.preprocess(pixels, [1, 3, 8, 8]);

  // @ts-expect-error dims are required
  model.run(new Float32Array(64));
  // @ts-expect-error topK is a number
  model.classify(new Float32Array(64), [1, 64], { topK: '3' });
  // @ts-expect-error a model source is not a number
  await loadModel(42);
  // @ts-expect-error the description is read-only
  model.inputs = [];
  // @ts-expect-error strings are not input data
  model.run('pixels', [1, 64]);

  return `${batch} ${labels?.length} ${version} ${simd} ${relaxed} ${dims} ${scores.length} ${Object.keys(many)} ${best} ${at} ${fromImage.dims} ${prepared.length} ${topOfImage.length}`;
}

export async function offTheMainThread(bytes: ArrayBuffer): Promise<number> {
  const model: worker.WorkerModel = await worker.loadModel(bytes);
  const pooled = await worker.loadModel(bytes, { threads: 'auto', engine: 'kiln' });
  const threads: worker.Threads = pooled.threads;
  const count: number = threads.count + (await worker.loadModel(bytes, { threads: 2 })).threads.count;
  console.log(count, threads.reason.length);
  // @ts-expect-error threads is a number or "auto"
  await worker.loadModel(bytes, { threads: 'many' });
  const info: ReadonlyArray<worker.TensorInfo> = model.outputs;
  const workerSimd: 'relaxed-simd' | 'simd128' = model.simd;
  const out: worker.Tensor = await model.run(new Float32Array(64), [1, 64]);
  const top: worker.Prediction[] = await model.classify([0.5, 0.25], [1, 2], { topK: 1 });
  const many: Record<string, worker.Tensor> = await model.runMany({ x: { data: [1, 2], dims: [1, 2] } });
  const fromImage: worker.Tensor = await model.run({ data: new Uint8ClampedArray(4), width: 1, height: 1 });
  // @ts-expect-error the worker's run is asynchronous
  const notYet: worker.Tensor = model.run(new Float32Array(64), [1, 64]);
  await model.free();
  await worker.terminate();
  return info.length + out.dims.length + top.length + Object.keys(many).length + (notYet ? 1 : 0) + fromImage.dims.length + workerSimd.length;
}

export async function teach(checkpoint: Uint8Array, pixels: Float32Array, labels: number[]): Promise<number> {
  const trainer: Trainer = await Trainer.fromKiln(checkpoint);
  const same: typeof Trainer = TrainerFromTrain;
  const frozen: number = trainer.freeze() - trainer.unfreeze('4.');
  trainer.compile({ optimizer: 'adam', lr: 1e-2, weightDecay: 0 });
  const seen: Progress[] = [];
  const history: History = trainer.fit(pixels, [labels.length, 1, 8, 8], labels, {
    epochs: 10, batchSize: 8, onProgress: (p) => { seen.push(p); return p.type === 'epoch' && p.logs.loss < 0.01; },
  });
  const scores: Record<string, number> = trainer.evaluate(pixels, [labels.length, 1, 8, 8], Int32Array.from(labels));
  const model: Model = await loadModel(trainer.exportOnnx({ labels: ['a', 'b'], inputScale: 1 / 16 }));
  const checkpointAgain: Uint8Array = trainer.save();
  const names: string[] = trainer.parameters.filter((p) => p.trainable).map((p) => p.name);
  // @ts-expect-error epochs is a number
  trainer.fit(pixels, [1, 64], labels, { epochs: '10' });
  // @ts-expect-error the optimizer is one kiln has
  trainer.compile({ optimizer: 'lion' });

  const remote: worker.Trainer = await worker.Trainer.fromKiln(checkpoint);
  const remoteHistory: History = await remote.fit(pixels, [labels.length, 1, 8, 8], labels, { onProgress: (p) => console.log(p.epoch) });
  // @ts-expect-error the worker's fit is asynchronous
  const notYet: History = remote.fit(pixels, [1, 64], labels);
  await remote.free();
  model.free();
  trainer.free();
  return frozen + history.epochs + scores.loss + seen.length + checkpointAgain.length + names.length + remoteHistory.epochs + (notYet ? 1 : 0) + (same ? 1 : 0);
}

export async function watchForDrift(model: Model): Promise<boolean> {
  const { saveFeedback, loadFeedback, modelVersion } = await import('kiln-wasm');
  const mon = model.monitor({ window: 50, auto: true, alpha: 0.01 });
  mon.observe(new Float32Array(64));
  const off = mon.onDrift((r) => console.log(r.moved.join(', '), r.psi));
  off();
  const report = mon.report();
  const first: string | undefined = report.features[0]?.name;
  // @ts-expect-error observe takes a Float32Array
  mon.observe([1, 2, 3]);
  const file: Uint8Array = await saveFeedback({ inputs: new Float32Array(64), dims: [1, 1, 8, 8], labels: [3], modelVersion: model.version ?? '' });
  const back = await loadFeedback(file);
  const v: string = await modelVersion(file);
  mon.free();
  return report.drifted && first !== undefined && back.labels.length === 1 && v.length > 0;
}

export async function writeText(model: Model): Promise<string> {
  const tok = model.tokenizer;
  if (tok === null) return '';
  const ids: BigInt64Array | Int32Array = tok.encode('Ma');
  const again: string = tok.decode(ids) + tok.decode([4, 5]) + tok.token(3);
  const copy: Tokenizer = Tokenizer.fromJSON(tok.toJSONString(), { type: 'int32' });
  const size: number = copy.vocabSize + (copy.kind === 'bpe' ? 1 : 0);
  const text: string = await model.generate('Ma', { maxNewTokens: 8, temperature: 0.8, topK: 5, seed: 0, onToken: (t: string, id: number) => console.log(t, id) });
  // @ts-expect-error the seed is a number
  await model.generate('Ma', { seed: 0n });
  // @ts-expect-error generate resolves to a string
  const n: number = await model.generate('Ma');
  copy.free();
  return again + text + size + n;
}

export async function writeInWorker(): Promise<string> {
  const m: worker.WorkerModel = await worker.loadModel('names.onnx');
  const ids = await m.tokenizer?.encode('Ma');
  const back: string | undefined = await m.tokenizer?.decode([4, 5]);
  // @ts-expect-error the worker's tokenizer answers with promises
  const sync: string = m.tokenizer!.decode([4]);
  const text: string = await m.generate('Ma', { seed: 1, onToken: (t: string) => console.log(t) });
  await m.free();
  return text + (ids?.length ?? 0) + back + sync;
}
