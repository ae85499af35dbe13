// The in-browser training race itself, the same in Node and in a page: kiln-wasm's Trainer against
// TensorFlow.js's `model.fit` on the digits CNN (bench/common.py's "cnn"), the same initial weights
// (kiln's seed 0), data, batch size, optimizer (Adam) and loss (cross-entropy on logits).
// train_race.mjs runs it in Node (kiln, tfjs-cpu, tfjs-wasm), train_race_browser.mjs in headless
// Chromium (kiln, tfjs-webgl).
//
// `read(name)` gives the bytes of a file bench/make_models.py wrote (race.json, race_*.bin,
// race_cnn.kiln, race_cnn.tfjs.json); `kilnUrl` is kiln-wasm's index.js. samples/s = training
// samples × epochs / the wall time of the fit call alone; accuracy is on the held-out digits after it.

const argmaxAccuracy = (logits, labels, classes = 10) => {
  let right = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let k = 1; k < classes; k++) if (logits[i * classes + k] > logits[i * classes + best]) best = k;
    right += best === labels[i];
  }
  return right / labels.length;
};

const text = (bytes) => new TextDecoder().decode(bytes);
const typed = (bytes, T) => new T(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));

async function kiln(kilnUrl, read, info, data, epochs) {
  const { Trainer, version } = await import(kilnUrl);
  const [c, h, w] = info.shape;
  const t = await Trainer.fromKiln(await read('race_cnn.kiln'));
  t.compile({ optimizer: 'adam', lr: info.lr, loss: 'cross_entropy', metrics: [] });
  const t0 = performance.now();
  t.fit(data.xtr, [info.train, c, h, w], data.ytr, { epochs, batchSize: info.batch });
  const seconds = (performance.now() - t0) / 1000;
  const out = t.predict(data.xte, [info.test, c, h, w]);
  return { version, backend: 'wasm (kiln_train_bg.wasm)', seconds, accuracy: argmaxAccuracy(out.data, data.yte) };
}

async function tfjs(backend, read, info, data, epochs) {
  const tf = await import('@tensorflow/tfjs-core');
  // one backend package per run (the cpu package needs seedrandom, which has no ES module for a page)
  if (backend === 'cpu') await import('@tensorflow/tfjs-backend-cpu');
  if (backend === 'webgl') await import('@tensorflow/tfjs-backend-webgl');
  const peer = await import('./tfjs.mjs');
  if (backend === 'wasm') await peer.init();
  else if (!(await tf.setBackend(backend))) throw new Error(`TF.js: backend ${backend} did not start`);
  await tf.ready();
  const [c, h, w] = info.shape;
  const model = peer.build(JSON.parse(text(await read('race_cnn.tfjs.json'))));
  const nhwc = (x, n) => tf.tidy(() => tf.transpose(tf.tensor(x, [n, c, h, w]), [0, 2, 3, 1]));
  const xs = nhwc(data.xtr, info.train);
  const ys = tf.oneHot(tf.tensor1d(data.ytr, 'int32'), 10);
  model.compile({ optimizer: tf.train.adam(info.lr), loss: (y, logits) => tf.losses.softmaxCrossEntropy(y, logits) });
  const t0 = performance.now();
  await model.fit(xs, ys, { epochs, batchSize: info.batch, shuffle: true, verbose: 0 });
  const seconds = (performance.now() - t0) / 1000;
  const out = await model.predict(nhwc(data.xte, info.test)).data();
  let renderer;
  if (backend === 'webgl') {
    // which GL did the page get: on a machine without a GPU, Chromium's is SwiftShader (on the CPU)
    const gl = tf.backend().gpgpu?.gl;
    const ext = gl?.getExtension('WEBGL_debug_renderer_info');
    renderer = ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : 'unknown';
  }
  return { version: tf.version_core, backend: renderer ? `webgl (${renderer})` : backend, seconds, accuracy: argmaxAccuracy(out, data.yte) };
}

/** One engine's run: { version, backend, seconds, accuracy, samples_per_s } or { cannot_train }. */
export async function race({ engine, epochs, read, kilnUrl }) {
  const info = JSON.parse(text(await read('race.json')));
  const data = {
    xtr: typed(await read('race_x_train.bin'), Float32Array),
    ytr: typed(await read('race_y_train.bin'), Int32Array),
    xte: typed(await read('race_x_test.bin'), Float32Array),
    yte: typed(await read('race_y_test.bin'), Int32Array),
  };
  const base = { engine, epochs, batch_size: info.batch, train_samples: info.train };
  try {
    const result = engine === 'kiln'
      ? await kiln(kilnUrl, read, info, data, epochs)
      : await tfjs(engine.replace(/^tfjs-/, ''), read, info, data, epochs);
    return { ...base, ...result, samples_per_s: (info.train * epochs) / result.seconds };
  } catch (e) {
    // TF.js 4.22's wasm backend registers no Conv2DBackpropFilter: that error is the measurement
    return { ...base, cannot_train: String(e.message ?? e).split('\n')[0] };
  }
}
