// Per-token generation latency of the web demo's name generators (the GRU and the small causal
// transformer, web-demo/model/names-{generator,transformer}.onnx, trained by scripts/train_text_demo.py):
// kiln-wasm's model.generate against onnxruntime-web running the same file with the sampling loop in JS
// (1 thread), in Node and in headless Chromium (Debian's; a fresh profile, a static server on
// 127.0.0.1). bench/infer/generate.mjs is the measurement both environments share; it also times steps
// early (positions 2-5) and late (12-15) in the 16-id window. Prints one JSON object per model x engine
// x environment.
//
//   node bench/generate_speed.mjs [node|chromium ...] [--models gru,transformer] [--engines kiln-wasm,onnxruntime-web] [--budget 3000]
//   KILN_WASM_PKG=../other/wasm/pkg node bench/generate_speed.mjs node --engines kiln-wasm   # another build
//
// The machine is shared: the load average and the other processes' CPU share are recorded with each row.
import { createServer } from 'node:http';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os, { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { otherCpuShare } from './infer/cpu.mjs';
import { measureGenerate } from './infer/generate.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MODELS = { gru: 'web-demo/model/names-generator.onnx', transformer: 'web-demo/model/names-transformer.onnx' };
// KILN_WASM_PKG: another build of the package (another checkout's wasm/pkg, to compare two builds)
const KILN_PKG = process.env.KILN_WASM_PKG ? resolve(process.env.KILN_WASM_PKG) : join(ROOT, 'wasm/pkg');
const NODE_ENTRIES = {
  'kiln-wasm': join(KILN_PKG, 'index.js'),
  'onnxruntime-web': join(ROOT, 'wasm/node_modules/onnxruntime-web/dist/ort.node.min.mjs'),
};
const PAGE_ENTRIES = {
  'kiln-wasm': '/wasm/pkg/index.js',
  'onnxruntime-web': '/wasm/node_modules/onnxruntime-web/dist/ort.wasm.bundle.min.mjs',
};
const SERVED = ['/bench/infer/', '/web-demo/model/', '/wasm/pkg/', '/wasm/node_modules/onnxruntime-web/dist/'];
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream' };
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const envs = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const engines = opt('--engines', 'kiln-wasm,onnxruntime-web').split(',');
const budget = Number(opt('--budget', '3000'));
const models = opt('--models', 'gru,transformer').split(',');
const PROMPTS = ['', 'Ma', 'Ber'];
// ends late in the window: its generations, cut at the window, time the late positions
const LATE = 'Hohenzoll';

// the prompts' ids, from kiln's tokenizer (the JS loop for onnxruntime-web starts from the same ids)
async function promptIds(file, prompts) {
  const kiln = await import(pathToFileURL(NODE_ENTRIES['kiln-wasm']).href);
  const model = await kiln.loadModel(new Uint8Array(readFileSync(join(ROOT, file))));
  const ids = Object.fromEntries(prompts.map((p) => [p, Array.from(model.tokenizer.encode(p), Number)]));
  const info = { ids, window: model.inputs[0].dims[1], cached: model.generatesCached() };
  model.free();
  return info;
}

function serve() {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.startsWith('/wasm/pkg/') ? join(KILN_PKG, normalize(path.slice('/wasm/pkg/'.length))) : join(ROOT, normalize(path));
    const inside = [ROOT, KILN_PKG].some((dir) => file.startsWith(dir + sep));
    if (!SERVED.some((p) => path.startsWith(p)) || !inside || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, origin: `http://127.0.0.1:${server.address().port}` })));
}

async function inChromium(engine, file, { ids, window }) {
  const require = createRequire(join(ROOT, 'tests/package.json'));
  const { chromium } = require('playwright-core');
  const { server, origin } = await serve();
  const profile = mkdtempSync(join(tmpdir(), 'kiln-bench-gen-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'],
  });
  try {
    const page = await context.newPage();
    const q = new URLSearchParams({ engine, entry: PAGE_ENTRIES[engine], file: `/${file}`, prompts: JSON.stringify(ids), use: JSON.stringify(PROMPTS), late: LATE, window: String(window), budget: String(budget) });
    await page.goto(`${origin}/bench/infer/generate.html?${q}`);
    return { env: 'chromium', env_version: context.browser()?.version() ?? execFileSync(process.env.CHROMIUM || '/usr/bin/chromium', ['--version'], { encoding: 'utf8' }).trim(), ...(await page.evaluate(() => window.__bench)) };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    server.close();
  }
}

for (const key of models) {
  const file = MODELS[key];
  if (!file) throw new Error(`--models: ${key} is not one of ${Object.keys(MODELS).join(', ')}`);
  if (!existsSync(join(ROOT, file))) throw new Error(`${file} is missing: python scripts/train_text_demo.py writes it`);
  const info = await promptIds(file, [...PROMPTS, LATE]);
  for (const env of envs.length ? envs : ['node', 'chromium']) {
    for (const engine of engines) {
      const loadavg = os.loadavg()[0];
      const others = otherCpuShare();
      const r = env === 'node'
        ? { env: 'node', env_version: process.versions.node, ...(await measureGenerate({ engine, url: pathToFileURL(NODE_ENTRIES[engine]).href, bytes: new Uint8Array(readFileSync(join(ROOT, file))), promptIds: info.ids, prompts: PROMPTS, latePrompt: LATE, window: info.window, budgetMs: budget })) }
        : await inChromium(engine, file, info);
      const cached = engine === 'kiln-wasm' ? info.cached : false;
      console.log(JSON.stringify({ model: key, file, cached, ...r, threads: 1, loadavg_start: loadavg, other_cpu_share: others.share() }));
    }
  }
}
