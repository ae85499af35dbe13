// One app, built three ways by tests/dist (Vite, webpack 5, and no bundler with an import map): it
// imports kiln-wasm by its package name, as any app that ran `npm install kiln-wasm` would, predicts
// the five digits Python predicted (cases.json, next to the page) on the main thread and in a Worker
// (kiln-wasm/worker), runs the README's photo in as an ImageData, and leaves the numbers in
// window.kilnResult for the test to compare.
import { loadModel, version } from 'kiln-wasm';
import { loadModel as loadInWorker } from 'kiln-wasm/worker';

async function main() {
  const cases = await (await fetch(new URL('./cases.json', document.baseURI))).json();
  const input = new Float32Array(cases.inputs);
  const modelUrl = new URL('./digits.onnx', document.baseURI).href;

  const model = await loadModel(modelUrl);
  const out = model.run(input, cases.dims);
  const top = model.classify(input.subarray(0, input.length / cases.dims[0]), [1, ...cases.dims.slice(1)], { topK: 1 })[0];
  document.getElementById('main').textContent = `${model.engine}: ${top.label} (${top.score.toFixed(3)})`;

  const remote = await loadInWorker(modelUrl);
  const fromWorker = await remote.run(input, cases.dims);
  document.getElementById('worker').textContent = `${fromWorker.dims.join('×')} outputs`;

  // An image straight in: the README's photo as an ImageData, prepared as its export declared.
  const photo = await loadModel(new URL('./digits-images.onnx', document.baseURI).href);
  const image = new ImageData(Uint8ClampedArray.from(cases.photo.rgba), cases.photo.width, cases.photo.height);
  const photoInput = photo.preprocess(image);
  const photoOut = photo.run(image);

  window.kilnResult = {
    photoInput: Array.from(photoInput),
    photoOut: Array.from(photoOut.data),
    version,
    engine: model.engine,
    simd: model.simd,
    modelVersion: model.metadata['kiln.version'] ?? null,
    main: Array.from(out.data),
    worker: Array.from(fromWorker.data),
    top: top.label,
  };
  document.body.dataset.state = 'done';
}

main().catch((e) => {
  window.kilnResult = { error: String(e && e.stack ? e.stack : e) };
  document.body.dataset.state = 'failed';
});
