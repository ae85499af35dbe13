// scripts/serve.py, the static server behind `make demo` and the browser tests: MIME types that
// browsers insist on for wasm and modules, no stale cache, loopback only, and a short landing URL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, outDir, startServer } from "./harness.mjs";

const ROOT = outDir("serve-fixture");
let server;

before(async () => {
  writeFileSync(path.join(ROOT, "mod.wasm"), new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
  writeFileSync(path.join(ROOT, "mod.mjs"), "export const x = 1;\n");
  writeFileSync(path.join(ROOT, "m.onnx"), new Uint8Array([8, 8]));
  server = await startServer({ root: ROOT, landing: "/web-demo/" });
});
after(() => server?.stop());

test("serves wasm, modules and models with the types browsers require, uncached", async () => {
  for (const [file, type] of [["mod.wasm", "application/wasm"], ["mod.mjs", "text/javascript"], ["m.onnx", "application/octet-stream"]]) {
    const res = await fetch(server.url(`/${file}`));
    assert.equal(res.status, 200, file);
    assert.equal(res.headers.get("content-type"), type, file);
    assert.equal(res.headers.get("cache-control"), "no-cache", `${file}: a retrained model must show on reload`);
  }
  assert.equal((await fetch(server.url("/nope.js"))).status, 404);
});

test("the bare address lands on the demo and the server listens on 127.0.0.1 only", async () => {
  const res = await fetch(server.url("/"), { redirect: "manual" });
  assert.equal(res.status, 302);
  assert.equal(res.headers.get("location"), "/web-demo/");
  assert.match(server.origin, /^http:\/\/127\.0\.0\.1:\d+$/);
});

test("a taken port falls back to a free one, or fails clearly with --strict-port", async () => {
  const port = new URL(server.origin).port;
  const second = await startServer({ root: ROOT, port });
  try {
    assert.notEqual(new URL(second.origin).port, port, "the second server picked another port");
    assert.equal((await fetch(second.url("/mod.mjs"))).status, 200);
  } finally {
    await second.stop();
  }
  const py = process.env.PYTHON || path.join(REPO, ".venv/bin/python");
  const strict = spawnSync(py, [path.join(REPO, "scripts/serve.py"), "--port", port, "--strict-port", "--root", ROOT], { encoding: "utf8", timeout: 10_000 });
  assert.notEqual(strict.status, 0);
  assert.match(strict.stderr, new RegExp(`cannot listen on 127.0.0.1:${port}`));
  const bad = spawnSync(py, [path.join(REPO, "scripts/serve.py"), "--root", path.join(ROOT, "missing")], { encoding: "utf8", timeout: 10_000 });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /is not a folder/);
});
