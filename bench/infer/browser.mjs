// One wasm engine on one model in headless Chromium; prints one JSON object as the last line.
//
//   node bench/infer/browser.mjs kiln-wasm|onnxruntime-web|tfjs-wasm MODEL [--models bench/out/models] [--quick]
//
// A tiny static server on 127.0.0.1 serves the repo's engine files as they ship; Debian's chromium
// (CHROMIUM overrides /usr/bin/chromium; never a downloaded browser) opens bench/infer/page.html in
// a FRESH profile, so the first visit is cold: no HTTP cache, no compiled-wasm cache. Then a second
// page in the same profile measures a repeat visit (HTTP cache and V8's wasm code cache warm).
// The cold start is the median over 5 fresh profiles (2 with --quick), each a new browser; the
// latencies come from the first.
// playwright-core comes from tests/node_modules (the browser tests' devDependency).
import { createServer } from 'node:http';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import os from 'node:os';
import { otherCpuShare } from './cpu.mjs';
import { summariseCold } from './measure.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(join(ROOT, 'tests/package.json'));
export const { chromium } = require('playwright-core');

// What a page imports: kiln-wasm's package entry, and onnxruntime-web's wasm-only build (what
// `import 'onnxruntime-web/wasm'` resolves to in a bundler: the smallest onnxruntime-web that runs
// the wasm backend, so its download is not inflated by the WebGL/WebGPU code).
export const PAGE_ENTRIES = {
  'kiln-wasm': '/wasm/pkg/index.js',
  'onnxruntime-web': '/wasm/node_modules/onnxruntime-web/dist/ort.wasm.bundle.min.mjs',
  // TF.js core + layers + the wasm backend as ES modules (page.html's import map)
  'tfjs-wasm': '/bench/peers-js/tfjs.mjs',
};
// KILN_WASM_PKG: serve another copy of the package at /wasm/pkg/ (run.sh benchmarks a snapshot, so a
// rebuild during the run cannot mix two builds into one report).
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const VERSION_FILES = {
  'kiln-wasm': join(KILN_PKG, 'package.json'),
  'onnxruntime-web': join(ROOT, 'wasm/node_modules/onnxruntime-web/package.json'),
  'tfjs-wasm': join(ROOT, 'bench/peers-js/node_modules/@tensorflow/tfjs-core/package.json'),
};
// Only these folders are served; anything else is a 404 (and a sign the harness grew a dependency).
const SERVED = ['/bench/infer/', '/bench/out/models/', '/wasm/pkg/', '/wasm/node_modules/onnxruntime-web/dist/',
  '/bench/peers-js/tfjs.mjs', '/bench/peers-js/race.mjs', '/bench/peers-js/node-stub.mjs', '/bench/peers-js/node_modules/@tensorflow/'];
const HARNESS = ['/bench/infer/', '/bench/out/models/']; // not the engine's bytes
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream' };
export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'];

/** Static server for SERVED on a free port; `log` collects every path served with status 200. */
export function serve(modelsDir) {
  const log = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const allowed = SERVED.some((p) => path.startsWith(p));
    // the models and the kiln package may live elsewhere (--models, KILN_WASM_PKG); the rest is the repo's
    const mounts = [['/bench/out/models/', modelsDir], ['/wasm/pkg/', KILN_PKG]];
    const mount = mounts.find(([prefix]) => path.startsWith(prefix));
    const file = mount ? join(mount[1], normalize(path.slice(mount[0].length))) : join(ROOT, normalize(path));
    const inside = [ROOT, modelsDir, KILN_PKG].some((dir) => file.startsWith(dir + sep));
    if (!allowed || !inside || !existsSync(file) || !statSync(file).isFile()) {
      if (process.env.BENCH_DEBUG) console.error(`browser.mjs: 404 ${path}`);
      res.writeHead(404).end();
      return;
    }
    log.push({ path, file });
    // cacheable, so the repeat visit can use the HTTP cache as a real site's static files would
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': statSync(file).size, 'Cache-Control': 'max-age=3600' });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, log, origin: `http://127.0.0.1:${server.address().port}` })));
}

/**
 * raw / gzip (level 9) / brotli (quality 11) bytes of the engine's files a page fetched: what a
 * server that compresses sends. Brotli 11 takes ~10 s on a 14 MB .wasm, so sizes are cached in
 * bench/out/sizes-cache.json by path, size and modification time.
 */
function downloadSizes(log) {
  mkdirSync(join(ROOT, 'bench/out'), { recursive: true });
  const cacheFile = join(ROOT, 'bench/out/sizes-cache.json');
  const cache = existsSync(cacheFile) ? JSON.parse(readFileSync(cacheFile, 'utf8')) : {};
  const files = [...new Map(log.filter((l) => !HARNESS.some((h) => l.path.startsWith(h))).map((l) => [l.path, l.file])).entries()];
  const rows = files.map(([path, file]) => {
    const st = statSync(file);
    const key = `${file}|${st.size}|${st.mtimeMs}`;
    if (!cache[key]) {
      const b = readFileSync(file);
      const brotli = brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } }).length;
      cache[key] = { raw: b.length, gzip: gzipSync(b, { level: 9 }).length, brotli };
    }
    return { path, ...cache[key] };
  });
  writeFileSync(cacheFile, JSON.stringify(cache, null, 1));
  const sum = (k) => rows.reduce((a, r) => a + r[k], 0);
  return { files: rows, raw: sum('raw'), gzip: sum('gzip'), brotli: sum('brotli') };
}

function usage(message) {
  console.error(`browser.mjs: ${message}\nusage: node bench/infer/browser.mjs kiln-wasm|onnxruntime-web|tfjs-wasm MODEL [--models DIR] [--quick]`);
  process.exit(2);
}

async function main() {
  const args = process.argv.slice(2);
  const [engine, modelName] = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--models');
  const modelsDir = resolve(args.includes('--models') ? args[args.indexOf('--models') + 1] : join(ROOT, 'bench/out/models'));
  if (!PAGE_ENTRIES[engine]) usage(`unknown engine ${engine}`);
  const models = JSON.parse(readFileSync(join(modelsDir, 'models.json'), 'utf8'));
  const model = models[modelName];
  if (!model) usage(`unknown model ${modelName}; models.json has ${Object.keys(models).join(', ')}`);
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) usage(`no Chromium at ${executablePath} (make chromium installs Debian's)`);

  const { server, log, origin } = await serve(modelsDir);
  const query = new URLSearchParams({ engine, entry: PAGE_ENTRIES[engine], file: `/bench/out/models/${engine === 'tfjs-wasm' ? model.tfjs_file : model.file}`, shape: model.shape.join(',') });
  if (args.includes('--quick')) query.set('quick', '1');
  // an int8 file's float model (models.json "fp32"), timed against it in the same page (kiln-wasm)
  if (model.fp32 && engine === 'kiln-wasm') query.set('twin', `${model.fp32}:/bench/out/models/${models[model.fp32].file}`);
  const loadavg = os.loadavg()[0];
  try {
    const others = otherCpuShare();
    const first = await session(executablePath, origin, query, true, others);
    const otherShare = others.share();
    const bytes = downloadSizes(log);
    const colds = [first.result.cold];
    for (let i = 1; i < (args.includes('--quick') ? 2 : 5); i++) colds.push((await session(executablePath, origin, query, false)).result.cold);
    console.log(JSON.stringify({
      env: 'chromium',
      env_version: first.userAgent.match(/Chrome\/([\d.]+)/)?.[1] ?? first.userAgent,
      engine,
      engine_version: JSON.parse(readFileSync(VERSION_FILES[engine], 'utf8')).version,
      model: modelName,
      threads: 1,
      ...first.result,
      cold: summariseCold(colds),
      repeat_visit: first.repeat,
      bytes,
      loadavg_start: loadavg,
      // share of all cores' time other processes took during the full visit (browser start included)
      other_cpu_share: otherShare,
    }));
  } finally {
    server.close();
  }
}

/**
 * A new browser on a fresh profile: the first visit (the full measurement, or the cold start only
 * when `full` is false), then with `full` a repeat visit in a new tab of the same profile.
 */
async function session(executablePath, origin, query, full, cpu = null) {
  const profile = mkdtempSync(join(tmpdir(), 'kiln-bench-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: ARGS });
  try {
    const visit = async (extra) => {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      await page.goto(`${origin}/bench/infer/page.html?${query}${extra}`);
      let result;
      try {
        result = await page.evaluate(() => window.__bench);
      } catch (e) {
        throw new Error(`${e.message.split('\n')[0]}${errors.length ? ` (page: ${errors.join(' | ')})` : ''}`);
      }
      const userAgent = await page.evaluate(() => navigator.userAgent);
      await page.close();
      return { result, userAgent };
    };
    const first = await visit(full ? '' : '&coldOnly=1');
    if (full) first.repeat = (await visit('&coldOnly=1')).result.cold;
    return first;
  } finally {
    cpu?.beforeClosingChildren();
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// run as a script (train_race_browser.mjs imports serve, ARGS and chromium from here)
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e?.stack ?? e);
    process.exit(1);
  });
}
