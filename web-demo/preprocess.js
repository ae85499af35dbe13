// Turns what a person draws into what the digits model was trained on.
//
// scikit-learn's digits (UCI "optdigits") were made from 32x32 black-and-white bitmaps of handwritten
// digits, each scaled so the digit spans the full height of the box and centred; every 4x4 block of
// that bitmap was then counted, giving an 8x8 image of integers 0..16 (0 = paper, 16 = all ink).
// We rebuild that from the pen strokes, so it doesn't matter how big or where on the canvas someone
// draws, or how thick the on-screen pen is:
//   1. keep the strokes as polylines (canvas pixels), not as the canvas bitmap;
//   2. scale them uniformly so their bounding box fits FIT x FIT (the longer side touches it), centred
//      in the 32x32 box;
//   3. rasterise them at 32x32 (a pixel is ink when its centre lies within half a pen width of a
//      segment), choosing the pen width that gives the originals' amount of ink: every class of
//      scikit-learn's digits carries 310 +- 35 ink pixels of 1024, so a "1" is a thick bar and an
//      "8" a thin loop. A fixed width made every "1" too faint to be a 1;
//   4. count ink per 4x4 block -> 8x8 values 0..16.
// The model's own input is then `value * input_scale + input_offset`, with scale and offset read from
// the model's ONNX metadata (kiln.input_scale / kiln.input_offset), never hard-coded here.
// Pure functions only: the page and Node's test runner use the same code.

export const BITMAP = 32; // side of the intermediate black-and-white bitmap
export const GRID = 8; // side of the model's image
export const BLOCK = BITMAP / GRID; // 4x4 bitmap pixels per model pixel, so values are 0..16
export const MAX_VALUE = BLOCK * BLOCK;
export const FIT = 28; // the longer side of the strokes' bounding box, in bitmap pixels
export const TARGET_INK = 310; // mean ink pixels of a 32x32 original (mean of the 8x8 values' sum)
export const MIN_WIDTH = 1.5, MAX_WIDTH = 11; // pen width bounds, bitmap pixels

/** Bounding box of every point of every stroke, or null when there are no points. */
export function boundingBox(strokes) {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const stroke of strokes) {
    for (const [x, y] of stroke) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`stroke point (${x}, ${y}) is not a number`);
      minX = Math.min(minX, x); maxX = Math.max(maxX, x);
      minY = Math.min(minY, y); maxY = Math.max(maxY, y);
    }
  }
  return minX === Infinity ? null : { minX, minY, maxX, maxY };
}

/**
 * Strokes (arrays of [x, y] in any units) scaled and centred into the 32x32 bitmap's coordinates,
 * without points closer than a tenth of a bitmap pixel to the previous one (a slow pen sends many).
 */
export function normalizeStrokes(strokes) {
  const box = boundingBox(strokes);
  if (!box) return [];
  const w = box.maxX - box.minX, h = box.maxY - box.minY;
  // A dot or a perfectly straight line has a zero side: scale by the other side only, and a lone dot
  // (both zero) becomes a dot in the middle rather than a division by zero.
  const longer = Math.max(w, h);
  const scale = longer > 0 ? FIT / longer : 1;
  const cx = (box.minX + box.maxX) / 2, cy = (box.minY + box.maxY) / 2;
  return strokes.filter((s) => s.length).map((s) => {
    const out = [];
    for (const [x, y] of s) {
      const p = [BITMAP / 2 + (x - cx) * scale, BITMAP / 2 + (y - cy) * scale];
      const last = out[out.length - 1];
      if (!last || Math.hypot(p[0] - last[0], p[1] - last[1]) >= 0.1) out.push(p);
    }
    return out;
  });
}

// Squared distance from (px, py) to the segment a-b.
function distance2ToSegment(px, py, [ax, ay], [bx, by]) {
  const dx = bx - ax, dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 > 0 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len2)) : 0;
  const qx = ax + t * dx - px, qy = ay + t * dy - py;
  return qx * qx + qy * qy;
}

/** Rasterises normalised strokes into a BITMAP x BITMAP Uint8Array of 0 (paper) / 1 (ink), row-major. */
export function rasterize(normStrokes, width) {
  const bitmap = new Uint8Array(BITMAP * BITMAP);
  const r2 = (width / 2) ** 2;
  for (const stroke of normStrokes) {
    // A single-point stroke (a tap) is a segment from the point to itself: a round dot.
    const pts = stroke.length === 1 ? [stroke[0], stroke[0]] : stroke;
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1], b = pts[i];
      // Only visit the pixels near this segment's bounding box.
      const x0 = Math.max(0, Math.floor(Math.min(a[0], b[0]) - width)), x1 = Math.min(BITMAP - 1, Math.ceil(Math.max(a[0], b[0]) + width));
      const y0 = Math.max(0, Math.floor(Math.min(a[1], b[1]) - width)), y1 = Math.min(BITMAP - 1, Math.ceil(Math.max(a[1], b[1]) + width));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          if (!bitmap[y * BITMAP + x] && distance2ToSegment(x + 0.5, y + 0.5, a, b) <= r2) bitmap[y * BITMAP + x] = 1;
        }
      }
    }
  }
  return bitmap;
}

const inkOf = (bitmap) => bitmap.reduce((a, b) => a + b, 0);

/**
 * The bitmap whose ink is closest to TARGET_INK, searching the pen width by bisection (ink only grows
 * with width). Returns { bitmap, width }.
 */
export function rasterizeToInk(normStrokes, target = TARGET_INK) {
  let lo = MIN_WIDTH, hi = MAX_WIDTH;
  if (inkOf(rasterize(normStrokes, hi)) <= target) return { bitmap: rasterize(normStrokes, hi), width: hi };
  for (let i = 0; i < 12; i++) {
    const mid = (lo + hi) / 2;
    if (inkOf(rasterize(normStrokes, mid)) < target) lo = mid; else hi = mid;
  }
  // Pick whichever side of the target is closer.
  const a = rasterize(normStrokes, lo), b = rasterize(normStrokes, hi);
  return Math.abs(inkOf(a) - target) <= Math.abs(inkOf(b) - target) ? { bitmap: a, width: lo } : { bitmap: b, width: hi };
}

/** Counts ink per BLOCK x BLOCK block: a 32x32 0/1 bitmap becomes GRID*GRID values 0..16 (Float32Array). */
export function blockCounts(bitmap) {
  if (bitmap.length !== BITMAP * BITMAP) throw new Error(`expected a ${BITMAP}x${BITMAP} bitmap, got ${bitmap.length} pixels`);
  const out = new Float32Array(GRID * GRID);
  for (let y = 0; y < BITMAP; y++) {
    for (let x = 0; x < BITMAP; x++) out[Math.floor(y / BLOCK) * GRID + Math.floor(x / BLOCK)] += bitmap[y * BITMAP + x];
  }
  return out;
}

/** The whole pipeline: pen strokes -> 8x8 Float32Array of 0..16, as in scikit-learn's digits. */
export function strokesToPixels(strokes) {
  const norm = normalizeStrokes(strokes);
  return norm.length ? blockCounts(rasterizeToInk(norm).bitmap) : new Float32Array(GRID * GRID);
}

/**
 * Reads kiln.input_scale / kiln.input_offset from a model's metadata (an object of strings). A model
 * without them was trained on the raw 0..16 values, so scale 1 and offset 0 leave them unchanged.
 */
export function inputTransform(metadata) {
  const read = (key, fallback) => {
    const text = metadata?.[key];
    if (text === undefined || text === null || text === "") return { value: fallback, fromModel: false };
    const value = Number(text);
    if (!Number.isFinite(value)) throw new Error(`the model's metadata ${key}="${text}" is not a number`);
    return { value, fromModel: true };
  };
  const scale = read("kiln.input_scale", 1), offset = read("kiln.input_offset", 0);
  return { scale: scale.value, offset: offset.value, fromModel: scale.fromModel || offset.fromModel };
}

/** The model's input: each 0..16 value times scale plus offset, as a new Float32Array. */
export function toModelInput(pixels, { scale, offset }) {
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = pixels[i] * scale + offset;
  return out;
}
