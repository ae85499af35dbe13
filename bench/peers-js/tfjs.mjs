// TensorFlow.js 4.22 with its wasm backend (XNNPACK), one thread: the browser peer built from kiln's
// trained weights. bench/tfjs_spec.py writes each benchmark model as a layer list in NHWC; this
// module builds it with tfjs-layers (the functional API: residual adds are layers.add) and runs it
// as a TF.js user would: a tensor in, model.predict, data() out.
//
// bench/infer/measure.mjs's 'tfjs-wasm' engine imports it by URL. The packages are imported one by
// one (core, layers, the wasm backend: what `@tensorflow/tfjs` bundles, minus WebGL/converter/data),
// by package name: in Node they resolve from bench/peers-js/node_modules (package.json pins 4.22.0);
// in the benchmark page an import map points them at the packages' ES-module builds (page.html).
import * as tf from '@tensorflow/tfjs-core';
import * as layers from '@tensorflow/tfjs-layers';
import * as wasm from '@tensorflow/tfjs-backend-wasm';


export const version = tf.version_core;

/** Selects the wasm backend with one thread (kiln-wasm and onnxruntime-web run one too). */
export async function init() {
  wasm.setThreadsCount(1);
  const inNode = typeof process === 'object' && typeof process.versions?.node === 'string';
  if (!inNode) wasm.setWasmPaths(new URL('./node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url).href);
  if (!(await tf.setBackend('wasm'))) throw new Error('TF.js: the wasm backend did not start');
  await tf.ready();
}

function weights(list) {
  const bytes = (b64) => (typeof Buffer !== 'undefined' ? Buffer.from(b64, 'base64') : Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  return list.map(({ shape, data }) => {
    const b = bytes(data);
    return tf.tensor(new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice(), shape);
  });
}

/** The tf.LayersModel for a spec (JSON from bench/tfjs_spec.py). */
export function build(spec) {
  const input = layers.input({ shape: spec.input_nhwc, name: spec.input });
  const values = { [spec.input]: input };
  for (const l of spec.layers) {
    const x = l.inputs.map((n) => values[n]);
    let layer;
    switch (l.op) {
      case 'Conv': {
        let y = x[0];
        if (l.pad[0] || l.pad[1]) y = layers.layers.zeroPadding2d({ padding: [[l.pad[0], l.pad[0]], [l.pad[1], l.pad[1]]] }).apply(y);
        layer = layers.layers.conv2d({ filters: l.filters, kernelSize: l.kernel, strides: l.strides, padding: l.padding, useBias: l.weights.length > 1, weights: weights(l.weights) });
        values[l.output] = layer.apply(y);
        continue;
      }
      case 'BatchNormalization':
        layer = layers.layers.batchNormalization({ axis: -1, epsilon: l.epsilon, weights: weights(l.weights) });
        break;
      case 'Relu':
        layer = layers.layers.reLU();
        break;
      case 'MaxPool':
        layer = layers.layers.maxPooling2d({ poolSize: l.pool, strides: l.strides, padding: 'valid' });
        break;
      case 'Add':
        values[l.output] = layers.layers.add().apply(x);
        continue;
      case 'GlobalAveragePool':
        layer = layers.layers.globalAveragePooling2d({});
        break;
      case 'Flatten':
        // after a global pool the value is already [batch, C]
        values[l.output] = x[0].shape.length > 2 ? layers.layers.flatten().apply(x[0]) : x[0];
        continue;
      case 'Gemm':
        layer = layers.layers.dense({ units: l.units, weights: weights(l.weights) });
        break;
      default:
        throw new Error(`tfjs.mjs: no TF.js layer for ${l.op}`);
    }
    values[l.output] = layer.apply(x[0]);
  }
  return layers.model({ inputs: input, outputs: values[spec.output] });
}

const nhwc = new WeakMap();
/** `x` ({ data, shape } in NCHW, as measure.mjs makes it) in NHWC, converted once per batch object. */
function asNhwc(x) {
  let v = nhwc.get(x);
  if (!v) {
    const [n, c, h, w] = x.shape;
    if (x.shape.length !== 4) {
      v = { data: x.data, shape: x.shape };
    } else {
      const d = new Float32Array(x.data.length);
      for (let b = 0; b < n; b++) for (let ch = 0; ch < c; ch++) for (let i = 0; i < h * w; i++) d[((b * h * w) + i) * c + ch] = x.data[((b * c) + ch) * h * w + i];
      v = { data: d, shape: [n, h, w, c] };
    }
    nhwc.set(x, v);
  }
  return v;
}

/** One prediction: the input copied in, predict, the output copied out (as the other engines do). */
export async function run(model, x) {
  const v = asNhwc(x);
  const input = tf.tensor(v.data, v.shape);
  const y = model.predict(input);
  const out = await y.data();
  input.dispose();
  y.dispose();
  return out;
}
