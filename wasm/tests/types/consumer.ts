// A small program written against kiln-wasm's published types, imported by package name so the
// package.json "exports" and "types" are exercised too. test.sh type-checks it (tsc --noEmit)
// in a folder where node_modules/kiln-wasm is wasm/pkg. The @ts-expect-error lines prove the
// types refuse misuse instead of being `any`.
import { init, loadModel, Model, type Prediction, type Tensor, type TensorInfo } from 'kiln-wasm';
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
  model.free();

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

  return `${batch} ${labels?.length} ${version} ${dims} ${scores.length} ${Object.keys(many)} ${best} ${at}`;
}

export async function offTheMainThread(bytes: ArrayBuffer): Promise<number> {
  const model: worker.WorkerModel = await worker.loadModel(bytes);
  const info: ReadonlyArray<worker.TensorInfo> = model.outputs;
  const out: worker.Tensor = await model.run(new Float32Array(64), [1, 64]);
  const top: worker.Prediction[] = await model.classify([0.5, 0.25], [1, 2], { topK: 1 });
  const many: Record<string, worker.Tensor> = await model.runMany({ x: { data: [1, 2], dims: [1, 2] } });
  // @ts-expect-error the worker's run is asynchronous
  const notYet: worker.Tensor = model.run(new Float32Array(64), [1, 64]);
  await model.free();
  await worker.terminate();
  return info.length + out.dims.length + top.length + Object.keys(many).length + (notYet ? 1 : 0);
}
