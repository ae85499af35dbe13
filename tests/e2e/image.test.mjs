// Images straight in, in Chromium: every image type a page has — ImageData, a canvas, an
// OffscreenCanvas, an ImageBitmap, an <img> and a VideoFrame holding the same pixels — goes through
// model.preprocess / run / classify (and kiln-wasm/worker, where an ImageBitmap is read inside the
// worker, and a batch split across two workers) and becomes the tensor Python's kiln.Preprocess.apply
// made of those pixels, to 1e-6.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO, outDir, startServer, launchBrowser, openPage } from './harness.mjs';

const OUT = outDir('image');
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

test("every browser image type becomes the tensor Python's kiln.Preprocess makes, on the page and in a Worker", { timeout: 120_000 }, async (t) => {
  execFileSync(process.env.PYTHON || path.join(REPO, '.venv/bin/python'), [path.join(REPO, 'py-bindings/tests/image_case.py'), OUT]);
  const image = JSON.parse(readFileSync(path.join(OUT, 'image.json'), 'utf8'));
  const expected = JSON.parse(readFileSync(path.join(OUT, 'expected.json'), 'utf8'));
  writeFileSync(path.join(OUT, 'index.html'), '<!doctype html><meta charset="utf-8"><title>kiln-wasm images</title><canvas id="c"></canvas>');

  const server = await startServer({ landing: '/tests/out/image/' });
  const browser = await launchBrowser();
  try {
    const { page, log, outside } = await openPage(browser.context, server.url('/tests/out/image/'));
    const got = await page.evaluate(async ({ image }) => {
      const { loadModel } = await import('/wasm/pkg/index.js');
      const { loadModel: loadInWorker, terminate } = await import('/wasm/pkg/worker.js');
      const model = await loadModel('/tests/out/image/model.onnx');
      const { width, height } = image;
      const data = new ImageData(Uint8ClampedArray.from(image.rgba), width, height);
      const canvas = document.getElementById('c');
      Object.assign(canvas, { width, height });
      canvas.getContext('2d').putImageData(data, 0, 0);
      const off = new OffscreenCanvas(width, height);
      off.getContext('2d').putImageData(data, 0, 0);
      const img = new Image();
      img.src = canvas.toDataURL('image/png');
      await img.decode();
      const sources = { ImageData: data, HTMLCanvasElement: canvas, OffscreenCanvas: off, ImageBitmap: await createImageBitmap(data), HTMLImageElement: img };
      try {
        sources.VideoFrame = new VideoFrame(canvas, { timestamp: 0 });
      } catch (e) {
        sources.VideoFrame = String(e);
      }
      const out = { tensors: {}, errors: {} };
      for (const [name, source] of Object.entries(sources)) {
        try {
          out.tensors[name] = Array.from(model.preprocess(source));
        } catch (e) {
          out.errors[name] = String(e.message ?? e);
        }
      }
      out.run = Array.from(model.run(img).data);
      out.top = model.classify(canvas, { topK: 1 })[0].label;
      const remote = await loadInWorker('/tests/out/image/model.onnx');
      out.workerBitmap = Array.from((await remote.run(await createImageBitmap(data))).data); // read in the worker
      out.workerImg = Array.from((await remote.run(img)).data); // read here, prepared there
      // two Web Workers, a batch of three split between them by rows
      const pooled = await loadInWorker('/tests/out/image/model.onnx', { threads: 2 });
      const one = model.preprocess(data);
      const three = new Float32Array(one.length * 3);
      for (let i = 0; i < 3; i++) three.set(one, i * one.length);
      const r = await pooled.run(three, [3, ...model.inputs[0].dims.slice(1)]);
      const k = r.data.length / 3;
      out.pooled = { count: pooled.threads.count, reason: pooled.threads.reason, dims: r.dims,
        rows: [0, 1, 2].map((i) => Array.from(r.data.slice(i * k, (i + 1) * k))) };
      await terminate();
      return out;
    }, { image });
    assert.deepEqual(got.errors, {}, `image types that failed: ${JSON.stringify(got.errors)}\n${log.join('\n')}`);
    for (const name of ['ImageData', 'HTMLCanvasElement', 'OffscreenCanvas', 'ImageBitmap', 'HTMLImageElement', 'VideoFrame']) {
      const d = maxDiff(got.tensors[name], expected.input);
      assert.ok(d <= 1e-6, `${name}: max |diff| ${d} from Python's tensor`);
      t.diagnostic(`${name}: max |diff| from Python ${d.toExponential(1)}`);
    }
    for (const [what, out] of [['run(<img>)', got.run], ['worker run(ImageBitmap)', got.workerBitmap], ['worker run(<img>)', got.workerImg]]) {
      assert.ok(maxDiff(out, expected.output) < 1e-5, `${what}: ${out.slice(0, 3)}… vs Python's predict ${expected.output.slice(0, 3)}…`);
    }
    assert.equal(got.top, 'abcde'[expected.output.indexOf(Math.max(...expected.output))]);
    assert.equal(got.pooled.count, 2, got.pooled.reason);
    assert.equal(got.pooled.dims[0], 3);
    for (const row of got.pooled.rows) assert.ok(maxDiff(row, expected.output) < 1e-5, `threads: 2 row ${row.slice(0, 3)}…`);
    assert.deepEqual(outside, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
