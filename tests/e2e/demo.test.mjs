// The demo page as a person uses it, in headless Chromium: it opens offline, a digit drawn stroke by
// stroke with the mouse is recognised, another .onnx chosen in the file picker (or dropped) is
// described, broken files get a clear message, and screenshots land in tests/out/demo/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { DRAWN_DIGITS } from "./shapes.mjs";
import { REPO, OUT, outDir, startServer, launchBrowser, openPage, waitForDemo } from "./harness.mjs";

const PICKER = path.join(OUT, "picker"); // written by tests/picker_models.py
const SHOTS = outDir("demo");
const SHIPPED = path.join(REPO, "web-demo/model/digits.onnx");

// The plainest style of a few digits (shapes.mjs): a round 0, a straight 1, a 3, a 7 with its bar.
const DIGITS = { 0: DRAWN_DIGITS[0][0], 1: DRAWN_DIGITS[1][0], 3: DRAWN_DIGITS[3][0], 7: DRAWN_DIGITS[7][1] };

let server, browser, page, log, outside;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  ({ page, log, outside } = await openPage(browser.context, server.url("/web-demo/")));
  await waitForDemo(page, log);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function drawDigit(strokes) {
  await page.click("#clear");
  const box = await page.locator("#pad").boundingBox();
  // Keep a margin: people rarely draw to the very edge, and the page must not care where they draw.
  const at = ([x, y]) => [box.x + box.width * (0.1 + 0.8 * x), box.y + box.height * (0.1 + 0.8 * y)];
  for (const stroke of strokes) {
    const [x0, y0] = at(stroke[0]);
    await page.mouse.move(x0, y0);
    await page.mouse.down();
    for (const p of stroke.slice(1)) {
      const [x, y] = at(p);
      await page.mouse.move(x, y, { steps: 6 }); // intermediate pointermoves, like a real hand
    }
    await page.mouse.up();
  }
  // pointerup predicts; wait for the guesses to reflect this drawing.
  await page.waitForFunction(() => document.querySelectorAll("#guesses .guess").length === 3);
  return page.evaluate(() => [...document.querySelectorAll("#guesses .guess")].map((g) => ({
    label: g.querySelector(".label").textContent,
    score: parseFloat(g.querySelector(".score").textContent),
  })));
}

test("the shipped model opens offline and shows its size, load time and a first prediction", async (t) => {
  assert.deepEqual(outside, [], "the page must not reach beyond 127.0.0.1");
  const size = statSync(SHIPPED).size;
  const info = await page.evaluate(() => ({
    cold: performance.getEntriesByName("kiln:first-prediction")[0]?.startTime,
    // Where the cold start goes: the page's own marks, plus the browser's view of the .wasm fetch.
    marks: Object.fromEntries(performance.getEntriesByType("mark").map((m) => [m.name, Math.round(m.startTime)])),
    wasm: performance.getEntriesByType("resource").filter((r) => r.name.endsWith(".wasm")).map((r) => ({ bytes: r.encodedBodySize, ms: Math.round(r.duration) }))[0],
    domContentLoaded: Math.round(performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd),
    model: window.kilnDemo.model,
    stats: ["stat-size", "stat-load", "stat-latency", "stat-cold"].map((id) => document.getElementById(id).textContent),
    guesses: document.querySelectorAll("#guesses .guess").length,
  }));
  assert.equal(info.model.size, size, "the page reports the shipped file's size");
  assert.ok(info.model.transform.fromModel, "scale/offset come from the model's metadata");
  assert.equal(info.guesses, 3, "a test digit is shown with three guesses at start");
  for (const s of info.stats) assert.match(s, /\d/, `every stat shows a number: ${info.stats}`);
  assert.ok(info.cold > 0 && info.cold < 10_000, `cold start ${info.cold} ms`);
  const record = { navigation_to_first_prediction_ms: info.cold, model_bytes: size, load_ms: info.model.loadMs, dom_content_loaded_ms: info.domContentLoaded, marks_ms: info.marks, wasm_fetch: info.wasm, stats: info.stats };
  writeFileSync(path.join(SHOTS, "cold-start.json"), JSON.stringify(record, null, 2));
  t.diagnostic(`cold start (navigation -> first prediction): ${info.cold.toFixed(1)} ms; model ${size} bytes; marks ${JSON.stringify(info.marks)}; wasm ${JSON.stringify(info.wasm)}`);
  await page.screenshot({ path: path.join(SHOTS, "start.png"), fullPage: true });
});

for (const [digit, strokes] of Object.entries(DIGITS)) {
  test(`a ${digit} drawn stroke by stroke with the mouse is the top guess`, async (t) => {
    const guesses = await drawDigit(strokes);
    t.diagnostic(`drawn ${digit}: ${guesses.map((g) => `${g.label} ${g.score}%`).join(", ")}`);
    assert.equal(guesses[0].label, digit, `top guesses for a drawn ${digit}: ${JSON.stringify(guesses)}`);
    const seen = await page.evaluate(() => document.getElementById("seen-text").textContent);
    assert.doesNotMatch(seen, /total 0\)/, "the 8x8 preview shows ink");
    await page.screenshot({ path: path.join(SHOTS, `drawn-${digit}.png`), fullPage: true });
  });
}

test("Clear empties the pad and the guesses", async () => {
  await drawDigit(DIGITS[1]);
  await page.click("#clear");
  assert.equal(await page.locator("#guesses .guess").count(), 0);
  assert.match(await page.locator("#seen-text").textContent(), /total 0\)/);
});

test("another .onnx from the file picker is described: inputs, outputs, labels", async () => {
  await page.setInputFiles("#file", path.join(PICKER, "iris.onnx"));
  await page.waitForFunction(() => document.getElementById("model-info").textContent.includes("iris.onnx"));
  const text = await page.locator("#model-info").textContent();
  for (const want of ["features", "[N, 4]", "probabilities", "[N, 3]", "setosa, versicolor, virginica", "kiln-tests", "trained_on"]) {
    assert.ok(text.includes(want), `model description lacks ${JSON.stringify(want)}: ${text}`);
  }
  assert.match(await page.locator("#pad-note").textContent(), /isn't one 8×8 image/);
  assert.equal(await page.locator("#error").isVisible(), false);
  await page.click("#try-zeros");
  assert.match(await page.locator("#run-output").textContent(), /output \[1, 3\]/);
  await page.screenshot({ path: path.join(SHOTS, "other-model.png"), fullPage: true });
});

for (const [file, why] of [["broken.onnx", "a truncated model"], ["not-a-model.onnx", "a text file"]]) {
  test(`${why} gets a friendly error and the open model stays usable`, async () => {
    await page.setInputFiles("#file", path.join(PICKER, file));
    const error = page.locator("#error");
    await error.waitFor({ state: "visible" });
    const text = await error.textContent();
    assert.ok(text.includes(`Couldn't run “${file}”`), text);
    assert.match(text, /still loaded/);
    // The engine's own reason follows the headline; it must say something, not echo "undefined".
    const detail = await error.locator(".detail").textContent();
    assert.ok(detail.length > 40 && !/undefined|\[object/.test(detail), detail);
    assert.ok((await page.locator("#model-info").textContent()).includes("iris.onnx"), "the previous model is still shown");
    await page.screenshot({ path: path.join(SHOTS, `error-${file.replace(".onnx", "")}.png`), fullPage: true });
  });
}

test("a model dropped onto the page replaces the open one; Back returns to the digits model", async () => {
  const bytes = [...readFileSync(SHIPPED)];
  // What a drag from the desktop delivers: a drop event carrying a File.
  await page.evaluate((data) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(data)], "dropped-digits.onnx"));
    document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, bytes);
  await page.waitForFunction(() => document.getElementById("model-info").textContent.includes("dropped-digits.onnx"));
  assert.equal(await page.locator("#error").isVisible(), false);
  const guesses = await drawDigit(DIGITS[0]);
  assert.equal(guesses[0].label, "0", "the dropped digits model drives the pad");
  await page.locator("#back").click();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.includes("shipped"));
  assert.equal(await page.locator("#guesses .guess").count(), 3, "back on the shipped model, a test digit is predicted");
  assert.deepEqual(outside, [], "nothing left 127.0.0.1 during the whole session");
});

test("a ResNet kiln exported from an nn.Module (residual blocks) runs from the picker on kiln's engine, without tract", async () => {
  const fetched = [];
  const onRequest = (r) => fetched.push(r.url());
  page.on("request", onRequest);
  try {
    await page.setInputFiles("#file", path.join(PICKER, "resnet.onnx"));
    await page.waitForFunction(() => document.getElementById("model-info").textContent.includes("resnet.onnx"));
    assert.equal(await page.locator("#error").isVisible(), false);
    const info = await page.locator("#model-info").textContent();
    assert.match(info, /Enginekiln's own/, info);
    const guesses = await drawDigit(DIGITS[3]);
    assert.equal(guesses[0].label, "3", `the ResNet reads the drawn 3: ${JSON.stringify(guesses)}`);
    assert.ok(!fetched.some((u) => u.includes("kiln_wasm_bg")), "tract's module was not fetched for it");
    await page.screenshot({ path: path.join(SHOTS, "resnet.png"), fullPage: true });
  } finally {
    page.off("request", onRequest);
  }
  await page.locator("#back").click();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.includes("shipped"));
});

test("a finger draws too: touch events through Chromium's input pipeline", async () => {
  await page.click("#clear");
  const box = await page.locator("#pad").boundingBox();
  const cdp = await browser.context.newCDPSession(page);
  const at = (x, y) => [{ x: box.x + box.width * x, y: box.y + box.height * y, id: 1, radiusX: 4, radiusY: 4, force: 1 }];
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: at(0.5, 0.15) });
  for (let i = 1; i <= 20; i++) await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: at(0.5, 0.15 + (0.7 * i) / 20) });
  await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
  await page.waitForFunction(() => document.querySelectorAll("#guesses .guess").length === 3);
  assert.equal(await page.locator("#guesses .guess:first-child .label").textContent(), "1");
  await cdp.detach();
});

test("without a kiln-wasm build the page says how to get one instead of going blank", async () => {
  // A tree with the page but no wasm/pkg, as in a fresh clone before `make wasm`.
  const root = outDir("no-wasm-root");
  if (!existsSync(path.join(root, "web-demo"))) symlinkSync(path.join(REPO, "web-demo"), path.join(root, "web-demo"));
  const bare = await startServer({ root });
  try {
    const { page: p } = await openPage(browser.context, bare.url("/web-demo/"));
    await p.waitForFunction(() => document.body.dataset.state);
    assert.equal(await p.evaluate(() => document.body.dataset.state), "error");
    assert.match(await p.locator("#error").innerText(), /kiln-wasm could not be loaded.*make wasm/s);
    await p.close();
  } finally {
    await bare.stop();
  }
});
