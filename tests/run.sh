#!/usr/bin/env bash
# kiln's journeys across languages (`make test-e2e` runs this after `make py wasm chromium`):
#   1. Python: models for the file-picker tests, then kiln trains on digits, exports ONNX and runs the same
#      100 test images through model.predict, onnxruntime and kiln.InferenceSession (tests/journey.py);
#   2. Node's test runner over tests/e2e: kiln-wasm in Node, the demo page in headless Chromium, the
#      drawing/file-picker journey and the Vite embedding.
# A failing Python journey doesn't stop the browser tests (they say what is missing); the script still
# exits non-zero. Artefacts and screenshots go to tests/out/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || { echo "tests/run.sh: no Python at $PY (run \`make py\`, or set PYTHON)" >&2; exit 1; }
command -v node >/dev/null || { echo "tests/run.sh: node is not installed (Node >= 20 is needed)" >&2; exit 1; }
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[[ -x "$CHROMIUM" ]] || { echo "tests/run.sh: no Chromium at $CHROMIUM (run \`make chromium\`)" >&2; exit 1; }
export CHROMIUM PYTHON="$PY"

# npm ci only when node_modules is missing or older than its lock file: fast on every later run.
npm_ci() {
  local dir="$1"
  if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
    echo "== npm ci in ${dir#"$ROOT"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
npm_ci "$ROOT/tests"
# The embedding app links wasm/pkg (file:), so it can only be installed once the package is built.
if [[ -f "$ROOT/wasm/pkg/package.json" ]]; then
  npm_ci "$ROOT/tests/embed-vite"
else
  echo "tests/run.sh: wasm/pkg is not built yet (\`make wasm\`): the kiln-wasm tests will fail" >&2
fi

mkdir -p tests/out
status=0

echo "== Python: models for the file picker tests"
"$PY" tests/picker_models.py

echo "== Python: train, export, and run 100 test images through three Python runtimes"
# A stale journey from an earlier run must not stand in for this one.
rm -rf tests/out/journey
if ! "$PY" tests/journey.py; then
  echo "tests/run.sh: the Python journey FAILED (see above); the agreement tests will fail too" >&2
  status=1
fi

echo "== Node's test runner over tests/e2e (kiln-wasm in Node, the page in headless Chromium)"
echo "   writes tests/out/agreement.json (max |diff| figures), tests/out/demo/cold-start.json and"
echo "   screenshots tests/out/demo/*.png, tests/out/embed-vite/app.png"
# Last, so the output ends with the runner's own summary (tests / pass / fail), which CI reads.
node --test --test-reporter=spec tests/e2e/*.test.mjs || status=1
exit "$status"
