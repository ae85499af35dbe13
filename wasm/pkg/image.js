// Images straight into a model: the pixels of an ImageData, ImageBitmap, canvas, OffscreenCanvas,
// <img> or VideoFrame (or any { data, width, height } RGBA object, as in Node), which kiln-core's
// preprocess turns into the model's input by the `kiln.preprocess` spec its export declared. Reading
// goes through an OffscreenCanvas, which Workers have too. Private to the package.
import { describeValue } from './util.js';

const kinds = ['ImageBitmap', 'HTMLCanvasElement', 'OffscreenCanvas', 'HTMLImageElement', 'VideoFrame', 'SVGImageElement'];
const isKind = (x) => kinds.some((k) => typeof globalThis[k] === 'function' && x instanceof globalThis[k]);

/** RGBA pixels as they are: ImageData, or an object shaped like one. */
function isPixels(x) {
  return x !== null && typeof x === 'object' && (x.data instanceof Uint8ClampedArray || x.data instanceof Uint8Array) &&
    Number.isInteger(x.width) && Number.isInteger(x.height) && x.data.length === x.width * x.height * 4;
}

/** Whether `x` is something `run(image)` takes. */
export function isImage(x) {
  return isPixels(x) || isKind(x);
}

/** `{ data, width, height }` RGBA pixels of any image source. */
export function imagePixels(image) {
  if (isPixels(image)) return image;
  if (!isKind(image)) throw new TypeError(`kiln-wasm: an image is an ImageData, ImageBitmap, canvas, OffscreenCanvas, <img> or VideoFrame, not ${describeValue(image)}`);
  const width = image.displayWidth ?? image.naturalWidth ?? image.width;
  const height = image.displayHeight ?? image.naturalHeight ?? image.height;
  if (!width || !height) {
    throw new Error('kiln-wasm: the image has no pixels yet (an <img> still loading? await img.decode() first)');
  }
  const canvas = typeof OffscreenCanvas === 'function' ? new OffscreenCanvas(width, height) : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(image, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height);
}

/** What a worker can receive: ImageData, ImageBitmap and VideoFrame travel as they are (and are read
 * in the worker); an <img> or a canvas cannot be posted, so their pixels are read here. */
export function portableImage(x) {
  const here = ['HTMLCanvasElement', 'OffscreenCanvas', 'HTMLImageElement', 'SVGImageElement'];
  return here.some((k) => typeof globalThis[k] === 'function' && x instanceof globalThis[k]) ? imagePixels(x) : x;
}
