// The in-browser training race (race.mjs) in headless Chromium: one engine per fresh profile;
// prints one JSON object as the last line.
//
//   node bench/peers-js/train_race_browser.mjs kiln|tfjs-webgl MODELS_DIR [--epochs N]
//
// TF.js's fastest backend that trains here is WebGL (its wasm backend cannot train a CNN). This
// machine has no GPU, so Chromium's WebGL is SwiftShader, a GPU emulated on the CPU: the row says
// which renderer the page got, and a real GPU would change it.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import os from 'node:os';
import { ARGS, chromium, serve } from '../infer/browser.mjs';

const [engine, dir] = process.argv.slice(2);
const epochs = process.argv.includes('--epochs') ? Number(process.argv[process.argv.indexOf('--epochs') + 1]) : 2;
if (!['kiln', 'tfjs-webgl'].includes(engine) || !dir) {
  console.error('usage: node bench/peers-js/train_race_browser.mjs kiln|tfjs-webgl MODELS_DIR [--epochs N]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (make chromium installs Debian's)`);
const loadavg = os.loadavg()[0];
const { server, origin } = await serve(resolve(dir));
const profile = mkdtempSync(join(tmpdir(), 'kiln-race-chromium-'));
// --disable-gpu stays (DEVELOPERS.md's flags): WebGL still starts, on SwiftShader
const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: ARGS });
try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${origin}/bench/infer/race.html?engine=${engine}&epochs=${epochs}`);
  const result = await page.evaluate(() => window.__race).catch((e) => {
    throw new Error(`${e.message.split('\n')[0]}${errors.length ? ` (page: ${errors.join(' | ')})` : ''}`);
  });
  const userAgent = await page.evaluate(() => navigator.userAgent);
  console.log(JSON.stringify({ case: 'train_race', env: 'chromium', env_version: userAgent.match(/Chrome\/([\d.]+)/)?.[1] ?? userAgent,
    loadavg_start: loadavg, ...result }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  server.close();
}
