// What a web developer writes: import the package by name, let Vite bundle it (and its .wasm), and
// classify an image. There is no vite.config.js on purpose: kiln-wasm must need none.
import { loadModel } from "kiln-wasm";
// Any asset URL works; this app reuses the model shipped with the demo page.
import modelUrl from "../../../web-demo/model/digits.onnx?url";
// A held-out scikit-learn digit (a 3), 8x8 ink counts 0..16 drawn as gray 255 - 15*ink, scaled up 4x.
import digitUrl from "./digit-3.png";

/** Averages an image into 8x8 ink counts 0..16 (the digits model's input before scaling). */
async function inkCounts(url) {
  const bitmap = await createImageBitmap(await (await fetch(url)).blob());
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  const ink = new Float32Array(64);
  const bw = bitmap.width / 8, bh = bitmap.height / 8;
  for (let y = 0; y < bitmap.height; y++) {
    for (let x = 0; x < bitmap.width; x++) {
      ink[Math.floor(y / bh) * 8 + Math.floor(x / bw)] += (255 - data[(y * bitmap.width + x) * 4]) / 15 / (bw * bh);
    }
  }
  return ink.map(Math.round);
}

async function main() {
  document.getElementById("digit").src = digitUrl;
  const model = await loadModel(modelUrl);
  // The model says how its input was scaled in training (kiln.input_scale / kiln.input_offset in its
  // ONNX metadata, written by kiln's export_onnx); without them it takes the raw 0..16 counts.
  const scale = Number(model.metadata["kiln.input_scale"] ?? 1);
  const offset = Number(model.metadata["kiln.input_offset"] ?? 0);
  const pixels = (await inkCounts(digitUrl)).map((v) => v * scale + offset);
  const [best] = model.classify(pixels, [1, 1, 8, 8], { topK: 3 });
  const out = document.getElementById("result");
  out.textContent = `${best.label} (${(best.score * 100).toFixed(1)}%)`;
  out.dataset.label = best.label;
  model.free();
}

main().then(
  () => { document.body.dataset.state = "done"; },
  (e) => {
    document.getElementById("result").textContent = `error: ${e.message}`;
    document.body.dataset.state = "error";
  },
);
