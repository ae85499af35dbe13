// "Teach it": when the model guesses wrong, the user says the right digit; after a few examples the
// page fine-tunes the network's last layer on them in a Web Worker (kiln-wasm's Trainer: kiln-core's
// fit loop compiled to wasm, the code Python trains with), shows accuracy before and after, and
// swaps the new model in. Nothing leaves the tab.
//
// Fine-tuning on three examples alone makes a network forget the rest (catastrophic forgetting:
// measured here, accuracy on the shipped test digits fell from 96% to 13%). So each round
// rehearses 200 of the original training digits (digits.json's `replay`, 20 per class) alongside
// the user's examples, each repeated REPEAT times so they weigh enough.
import { toModelInput, GRID } from "./preprocess.js";

const WORKER_URL = new URL("../wasm/pkg/worker.js", import.meta.url).href;
const MIN_EXAMPLES = 3;
const REPEAT = 10;
const FIT = { epochs: 10, batchSize: 32, lr: 2e-2 };

/**
 * Wires the teach panel. `page` gives what app.js knows: `pixelsNow()` (the 8x8 ink counts on the
 * pad, or null), `current()` (the open model), `samples()` and `replay()` (digits.json),
 * `checkpointUrl`, `swapIn(bytes, name)` (opens a new model and re-predicts), `el`, `status`.
 */
export function setupTeach(page) {
  const $ = (id) => document.getElementById(id);
  const examples = []; // [{ pixels, label }]
  let trainer = null; // a kiln-wasm/worker Trainer, made on the first round and kept between rounds
  let rounds = 0;

  function labels() {
    return page.current()?.labels ?? Array.from({ length: 10 }, (_, i) => String(i));
  }

  /** The panel is live for the shipped digits model and for models it taught. */
  function refresh() {
    const m = page.current();
    const usable = !!m && !!m.dims && (m.isShipped || m.taught) && page.checkpointUrl !== null;
    $("teach").classList.toggle("off", !usable);
    $("teach-labels").replaceChildren(...labels().map((label, index) => {
      const b = page.el("button", { type: "button", className: "secondary label-btn", textContent: label, disabled: !usable });
      b.dataset.index = String(index);
      b.addEventListener("click", () => add(index));
      return b;
    }));
    $("teach-examples").replaceChildren(...examples.map((e) => thumbnail(e)));
    const n = examples.length;
    $("teach-run").disabled = !usable || n < MIN_EXAMPLES || $("teach").dataset.state === "training";
    $("teach-run").textContent = n ? `Teach it (${n} example${n > 1 ? "s" : ""})` : "Teach it";
    $("teach-forget").disabled = n === 0;
    $("teach-save").disabled = n === 0;
    $("teach-hint").textContent = !usable
      ? "Open the shipped digits model to teach it."
      : page.drifted() && n < MIN_EXAMPLES
        ? `Your digits don't look like the training digits: pick the right label for ${MIN_EXAMPLES - n} more and fine-tune the model on them.`
        : n < MIN_EXAMPLES ? `Wrong guess? Pick the right digit below. ${MIN_EXAMPLES - n} more example${MIN_EXAMPLES - n > 1 ? "s" : ""} to start.`
          : page.drifted() ? "The drift meter is up: fine-tune on your examples." : "Ready: fine-tune on your examples.";
    $("teach").classList.toggle("drifting", page.drifted());
  }

  function thumbnail({ pixels, label }) {
    const c = page.el("canvas", { width: GRID, height: GRID, className: "thumb" });
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(GRID, GRID);
    for (let i = 0; i < GRID * GRID; i++) {
      const v = 255 - Math.round((pixels[i] / 16) * 255);
      img.data.set([v, v, v, 255], i * 4);
    }
    ctx.putImageData(img, 0, 0);
    return page.el("figure", { className: "example" }, c, page.el("figcaption", {}, labels()[label] ?? String(label)));
  }

  function add(label) {
    const pixels = page.pixelsNow();
    if (!pixels) {
      $("teach-result").textContent = "Draw a digit (or show a test digit) first, then pick its right label.";
      return;
    }
    examples.push({ pixels: Array.from(pixels), label });
    $("teach-result").textContent = `Added a “${labels()[label]}”.`;
    refresh();
  }

  /** The examples as one batch the model takes, and their labels. */
  function batch(list) {
    const t = page.current().transform;
    const x = new Float32Array(list.length * GRID * GRID);
    list.forEach((e, i) => x.set(toModelInput(Float32Array.from(e.pixels), t), i * GRID * GRID));
    return { x, dims: [list.length, 1, GRID, GRID], y: list.map((e) => e.label) };
  }

  const right = (scores, n) => `${Math.round(scores.accuracy * n)}/${n}`;

  async function teach() {
    const panel = $("teach");
    panel.dataset.state = "training";
    refresh();
    const bar = $("teach-progress");
    bar.hidden = false;
    bar.value = 0;
    const result = $("teach-result");
    try {
      const started = performance.now();
      if (!trainer) {
        result.textContent = "Loading the trainer (in a Web Worker, once)…";
        const { Trainer } = await import(WORKER_URL);
        trainer = await Trainer.fromKiln(page.checkpointUrl);
        // Only the last layer learns: the features stay what the big data set taught them.
        const { parameters } = await trainer.describe();
        const head = `${parameters.at(-1).name.split(".")[0]}.`;
        await trainer.freeze();
        await trainer.unfreeze(head);
        await trainer.compile({ optimizer: "adam", lr: FIT.lr, metrics: ["accuracy"] });
      }
      const mine = batch(examples);
      const tests = batch(page.samples());
      const before = await trainer.evaluate(mine.x, mine.dims, mine.y);
      const testBefore = tests.y.length ? await trainer.evaluate(tests.x, tests.dims, tests.y) : null;
      const rehearse = [...page.replay()];
      for (let r = 0; r < REPEAT; r++) rehearse.push(...examples);
      const data = batch(rehearse);
      result.textContent = `Fine-tuning on ${examples.length} examples (+ ${page.replay().length} rehearsed)…`;
      const fitStart = performance.now();
      await trainer.fit(data.x, data.dims, data.y, {
        ...FIT,
        onProgress: (p) => { if (p.type === "epoch") bar.value = p.epoch / FIT.epochs; },
      });
      const fitMs = performance.now() - fitStart;
      const after = await trainer.evaluate(mine.x, mine.dims, mine.y);
      const testAfter = tests.y.length ? await trainer.evaluate(tests.x, tests.dims, tests.y) : null;
      const t = page.current().transform;
      // the training statistics travel with the fine-tuned model, so the drift meter goes on
      const statistics = page.current().metadata["kiln.drift"];
      const bytes = await trainer.exportOnnx({ labels: labels(), inputScale: t.scale, inputOffset: t.offset, ...(statistics ? { statistics } : {}) });
      rounds += 1;
      await page.swapIn(bytes, `digits.onnx taught ${examples.length} examples (round ${rounds})`);
      result.replaceChildren(
        page.el("div", {}, page.el("b", {}, "Your examples: "), `${right(before, mine.y.length)} right before → ${right(after, mine.y.length)} after`),
        ...(testAfter ? [page.el("div", {}, page.el("b", {}, "Shipped test digits: "), `${right(testBefore, tests.y.length)} → ${right(testAfter, tests.y.length)}`)] : []),
        page.el("div", { className: "small" }, `${FIT.epochs} epochs in ${Math.round(fitMs)} ms in a Web Worker (${Math.round(performance.now() - started)} ms in all); the new model is loaded. Nothing was sent anywhere.`),
      );
      panel.dataset.state = "taught";
      panel.dataset.fitMs = String(Math.round(fitMs));
      panel.dataset.after = String(after.accuracy);
    } catch (e) {
      panel.dataset.state = "error";
      result.textContent = `Teaching failed: ${e.message}`;
    } finally {
      bar.hidden = true;
      refresh();
    }
  }

  $("teach-run").addEventListener("click", teach);
  $("teach-forget").addEventListener("click", () => {
    examples.length = 0;
    $("teach-result").textContent = "";
    refresh();
  });
  /** The drift meter just turned: offer to fine-tune. */
  function driftNoticed() {
    $("teach-result").textContent = "The drift meter says your digits don't look like the ones the model trained on. Correct its guesses below and teach it.";
    refresh();
  }

  /** Saves the examples as a feedback file (inputs as the model takes them, labels, model version) for retraining in Python: kiln.drift.load_feedback. Only on the user's click. */
  async function saveFeedback() {
    const kiln = page.kiln();
    const mine = batch(examples);
    const bytes = await kiln.saveFeedback({ inputs: mine.x, dims: mine.dims, labels: mine.y, modelVersion: page.current().model.version ?? "" });
    const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    const a = page.el("a", { href: url, download: "feedback.kiln-data" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    $("teach-result").textContent = `Saved ${examples.length} examples as feedback.kiln-data (${bytes.length} bytes). In Python: X, y = kiln.drift.load_feedback("feedback.kiln-data").`;
    $("teach").dataset.saved = String(bytes.length);
  }
  $("teach-save").addEventListener("click", () => saveFeedback().catch((e) => { $("teach-result").textContent = `Saving failed: ${e.message}`; }));

  /** Back on the shipped model: the next round starts again from its checkpoint. */
  function reset() {
    trainer?.free().catch(() => {});
    trainer = null;
    rounds = 0;
    $("teach-result").textContent = "";
    refresh();
  }

  return { refresh, reset, examples, driftNoticed };
}
