// Shared pieces of the browser journeys: the static server, headless Chromium, and where things live.
// The server is scripts/serve.py (the one `make demo` uses), so the tests see the page as a person does.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const OUT = path.join(REPO, "tests/out");
// The Python journey writes here (tests/journey.py); the browser tests read it.
export const JOURNEY = path.join(OUT, "journey");
// KILN_WASM_PKG points the Node side at another build of the package (e.g. a release tarball).
export const KILN_PKG = process.env.KILN_WASM_PKG ? path.resolve(process.env.KILN_WASM_PKG) : path.join(REPO, "wasm/pkg");
const PYTHON = process.env.PYTHON || (existsSync(path.join(REPO, ".venv/bin/python")) ? path.join(REPO, ".venv/bin/python") : "python3");

export function outDir(name) {
  const dir = path.join(OUT, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function readJourney() {
  const file = path.join(JOURNEY, "journey.json");
  if (!existsSync(file)) throw new Error(`${file} is missing: tests/journey.py writes it (bash tests/run.sh runs it first)`);
  return JSON.parse(readFileSync(file, "utf8"));
}

/**
 * Starts scripts/serve.py on a free port of 127.0.0.1; resolves to { origin, url(path), stop() }.
 * KILN_SERVE_ROOT serves another tree laid out like the repo (web-demo/, wasm/pkg/, tests/out/).
 */
export async function startServer({ root = process.env.KILN_SERVE_ROOT || REPO, landing = "/web-demo/", port = 0 } = {}) {
  const child = spawn(PYTHON, [path.join(REPO, "scripts/serve.py"), "--port", String(port), "--quiet", "--root", root, "--path", landing], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const origin = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`serve.py printed no URL in 10 s; stderr: ${stderr}`)), 10_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(`http://127.0.0.1:${m[1]}`); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`serve.py exited (${code}): ${stderr}`)); });
  });
  return {
    origin,
    url: (p) => new URL(p, origin).href,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", resolve);
      child.kill("SIGTERM");
    }),
  };
}

/** Debian's Chromium, headless, in a fresh profile, with every background network call switched off. */
export async function launchBrowser() {
  const profile = mkdtempSync(path.join(tmpdir(), "kiln-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page and collects what it says on the console and what it fails on, so a failing test can
 * show why. Any request leaving 127.0.0.1 fails the page: the demo must work offline.
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  const log = [];
  const outside = [];
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!["127.0.0.1", ""].includes(u.hostname) && !["data:", "blob:"].includes(u.protocol)) outside.push(r.url());
  });
  await page.goto(url);
  return { page, log, outside };
}

/** Waits for the demo to say it is ready (or failed), and throws with its error text and console if not. */
export async function waitForDemo(page, log) {
  await page.waitForFunction(() => document.body.dataset.state, null, { timeout: 30_000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state !== "ready") {
    const error = await page.locator("#error").innerText();
    throw new Error(`the demo did not start: ${error}\nconsole:\n${log.join("\n")}`);
  }
}
