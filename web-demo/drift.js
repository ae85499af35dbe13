// The drift meter: every digit the page predicts (a finished stroke, a test digit) goes into a
// kiln-wasm monitor over the last WINDOW inputs, compared with the training statistics the model
// carries (export_onnx(..., reference=X_train) → metadata kiln.drift). Thick strokes, digits drawn
// off-centre or in another hand make it rise; when it says drift, "teach it" offers to fine-tune.
// A model taught on the page carries the shipped model's statistics (teach.js passes them to
// exportOnnx; for one that does not, the shipped ones are used), so the meter goes on after a swap.

const WINDOW = 20;

/**
 * Wires the meter. `page`: `el`, `onDrift(report)` (told once per episode). Returns `open(model)`
 * (a model was opened; `statistics` carries over kiln.drift for taught models), `observe(x, dims)`,
 * `report()`, `drifted()`.
 */
export function setupDrift(page) {
  const $ = (id) => document.getElementById(id);
  let monitor = null;
  let statistics = null; // the shipped model's kiln.drift, for models taught on the page

  function open(model, { taught = false } = {}) {
    monitor?.free();
    monitor = null;
    const own = model.metadata["kiln.drift"];
    if (own && !taught) statistics = own;
    const text = own ?? (taught ? statistics : null);
    if (text) {
      try {
        monitor = model.monitor({ window: WINDOW, statistics: text });
        monitor.onDrift((r) => page.onDrift(r));
      } catch (e) {
        console.warn(`drift meter: ${e.message}`);
      }
    }
    render();
  }

  function observe(x, dims) {
    if (!monitor) return;
    try {
      monitor.observe(x, dims);
    } catch (e) {
      console.warn(`drift meter: ${e.message}`);
    }
    render();
  }

  const report = () => monitor?.report() ?? null;

  function render() {
    const box = $("drift");
    const r = report();
    box.classList.toggle("off", !r);
    if (!r) {
      $("drift-meter").value = 0;
      $("drift-text").textContent = "This model carries no training statistics (export it with reference=X_train).";
      box.dataset.state = "none";
      return;
    }
    // How far the strongest test is towards the verdict's threshold: log p / log alpha.
    const level = r.observed ? Math.min(1, Math.log(Math.max(r.p_value, 1e-300)) / Math.log(r.alpha)) : 0;
    $("drift-meter").value = level;
    box.dataset.state = r.drifted ? "drift" : "quiet";
    box.dataset.level = level.toFixed(3);
    const moved = r.moved.slice(0, 3).join(", ");
    $("drift-text").textContent = r.drifted
      ? `Drift: the last ${r.observed} digits, taken together, don't look like the training digits${moved ? ` (moved: ${moved})` : ""}.`
      : `${r.observed}/${r.window} digits watched; they look like the training digits.`;
  }

  return { open, observe, report, drifted: () => !!report()?.drifted, reset: () => { monitor?.reset(); render(); } };
}
