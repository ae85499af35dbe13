#!/usr/bin/env bash
# kiln-wasm's tests (`make test-js`): builds the test models with the venv's Python (onnx.helper
# graphs, skl2onnx pipelines, onnxruntime's reference outputs), type-checks a consumer of
# index.d.ts with tsc, then runs Node's test runner over wasm/tests against wasm/pkg. The runner's
# summary (# pass N / # fail 0) is the last thing printed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$root/.venv/bin/python}"

if [ ! -f "$here/pkg/kiln_wasm_bg.wasm" ] || [ ! -f "$here/pkg/kiln_wasm.js" ] || [ ! -f "$here/pkg/kiln_core_bg.wasm" ] || [ ! -f "$here/pkg/kiln_core.js" ] || [ ! -f "$here/pkg/kiln_core_relaxed_bg.wasm" ] || [ ! -f "$here/pkg/kiln_train_bg.wasm" ] || [ ! -f "$here/pkg/kiln_train.js" ]; then
    bash "$here/build.sh"
fi
if [ ! -x "$here/node_modules/.bin/tsc" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== test models (onnx.helper, skl2onnx; onnxruntime reference outputs)"
"$python" "$here/tests/make_models.py" "$work/models"

echo "== tsc --noEmit: a consumer of index.d.ts / worker.d.ts, imported by package name"
# node_modules/kiln-wasm → wasm/pkg, so TypeScript resolves the package.json "exports" as an
# installed package's would.
mkdir -p "$work/consumer/node_modules"
cp "$here/tests/types/consumer.ts" "$here/tests/types/tsconfig.json" "$work/consumer/"
echo '{ "type": "module" }' > "$work/consumer/package.json"
ln -s "$here/pkg" "$work/consumer/node_modules/kiln-wasm"
(cd "$work/consumer" && "$here/node_modules/.bin/tsc" -p tsconfig.json)
# The same resolution at run time: Node finds both entry points through "exports".
(cd "$work/consumer" && node --input-type=module -e "
    const main = await import('kiln-wasm'); const w = await import('kiln-wasm/worker');
    if (typeof main.loadModel !== 'function' || typeof w.loadModel !== 'function') throw new Error('exports broken');
    console.log('package exports resolve: kiln-wasm, kiln-wasm/worker');")

cd "$here"
# Node 20 runs relaxed SIMD only behind a flag, so the run below tests kiln_core_bg.wasm; the
# conformance cases run once more on kiln_core_relaxed_bg.wasm, which pages in Chromium load.
echo "== node --experimental-wasm-relaxed-simd --test wasm/tests/conformance.test.mjs (the relaxed-SIMD module)"
KILN_WASM_MODELS="$work/models" KILN_PYTHON="$python" node --experimental-wasm-relaxed-simd --test --test-reporter=dot tests/conformance.test.mjs

echo "== node --test wasm/tests"
KILN_WASM_MODELS="$work/models" KILN_PYTHON="$python" node --test --test-reporter=tap tests/*.test.mjs
