// The in-browser training race: kiln-wasm's Trainer against TensorFlow.js's `model.fit`, the same
// digits CNN (bench/common.py's "cnn": conv16-pool-conv32-pool-linear), the same initial weights,
// data, batch size (32), optimizer (Adam, lr 1e-3) and loss (cross-entropy on logits). One engine
// and backend per Node process; prints one JSON object as the last line.
//
//   node bench/peers-js/train_race.mjs kiln|tfjs-cpu|tfjs-wasm MODELS_DIR [--epochs N]
//
// bench/make_models.py writes the inputs (race_*). samples/s = training samples × epochs / the wall
// time of the fit call alone; accuracy is on the held-out digits after it. TF.js 4.22's wasm
// backend registers no Conv2DBackpropFilter, so it cannot train this model: that row records the
// error TF.js gives, which is the measurement (its users train on the cpu backend, or WebGL).
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const [engine, dir] = process.argv.slice(2);
const epochs = process.argv.includes('--epochs') ? Number(process.argv[process.argv.indexOf('--epochs') + 1]) : 2;
const info = JSON.parse(readFileSync(join(dir, 'race.json'), 'utf8'));
const raw = (name, T) => { const b = readFileSync(join(dir, `race_${name}.bin`)); return new T(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };
const data = { xtr: raw('x_train', Float32Array), ytr: raw('y_train', Int32Array), xte: raw('x_test', Float32Array), yte: raw('y_test', Int32Array) };
const [c, h, w] = info.shape;
const argmaxAccuracy = (logits, labels, classes = 10) => {
  let right = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let k = 1; k < classes; k++) if (logits[i * classes + k] > logits[i * classes + best]) best = k;
    right += best === labels[i];
  }
  return right / labels.length;
};

async function kiln() {
  const { Trainer, version } = await import(pathToFileURL(join(KILN_PKG, 'index.js')).href);
  const t = await Trainer.fromKiln(new Uint8Array(readFileSync(join(dir, 'race_cnn.kiln'))));
  t.compile({ optimizer: 'adam', lr: info.lr, loss: 'cross_entropy', metrics: [] });
  const t0 = performance.now();
  t.fit(data.xtr, [info.train, c, h, w], data.ytr, { epochs, batchSize: info.batch });
  const seconds = (performance.now() - t0) / 1000;
  const out = t.predict(data.xte, [info.test, c, h, w]);
  return { version, backend: 'wasm (kiln_train_bg.wasm)', seconds, accuracy: argmaxAccuracy(out.data, data.yte) };
}

async function tfjs(backend) {
  const tf = await import('@tensorflow/tfjs-core');
  await import('@tensorflow/tfjs-backend-cpu');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const peer = await import('./tfjs.mjs');
  if (backend === 'wasm') wasm.setThreadsCount(1);
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js: backend ${backend} did not start`);
  await tf.ready();
  const model = peer.build(JSON.parse(readFileSync(join(dir, 'race_cnn.tfjs.json'), 'utf8')));
  const nhwc = (x, n) => tf.tidy(() => tf.transpose(tf.tensor(x, [n, c, h, w]), [0, 2, 3, 1]));
  const xs = nhwc(data.xtr, info.train);
  const ys = tf.oneHot(tf.tensor1d(data.ytr, 'int32'), 10);
  model.compile({ optimizer: tf.train.adam(info.lr), loss: (y, logits) => tf.losses.softmaxCrossEntropy(y, logits) });
  const t0 = performance.now();
  await model.fit(xs, ys, { epochs, batchSize: info.batch, shuffle: true, verbose: 0 });
  const seconds = (performance.now() - t0) / 1000;
  const xte = nhwc(data.xte, info.test);
  const out = await model.predict(xte).data();
  return { version: tf.version_core, backend, seconds, accuracy: argmaxAccuracy(out, data.yte) };
}

const loadavg = os.loadavg()[0];
let result;
try {
  result = engine === 'kiln' ? await kiln() : await tfjs(engine.replace(/^tfjs-/, ''));
  result.samples_per_s = (info.train * epochs) / result.seconds;
} catch (e) {
  result = { cannot_train: String(e.message ?? e).split('\n')[0] };
}
console.log(JSON.stringify({ case: 'train_race', env: 'node', env_version: process.versions.node, engine, epochs,
  batch_size: info.batch, train_samples: info.train, loadavg_start: loadavg, ...result }));
