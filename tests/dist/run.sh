#!/usr/bin/env bash
# `make test-dist`: the packages in dist/ (`make dist`) installed the way users install them, in a
# throwaway folder outside the repository ($TMPDIR), so nothing the repo has and the packages lack can
# stand in for it:
#   1. Python: a fresh virtualenv gets the wheel alone (pip resolves only its declared dependencies) and
#      trains, exports and runs a model; then the tools the README and notebooks use, and the README's
#      Python session and notebooks 01 and 02 run against the installed wheel;
#   2. npm: a plain Node ESM script, a fresh Vite app and a fresh webpack 5 app each `npm install` the
#      tarball; the script predicts in Node (and in kiln-wasm/worker), the two apps are built and, with
#      a page that imports the package from a plain static folder (an import map, no bundler), opened in
#      headless Chromium, where each predicts on the main thread and in a Worker what Python predicted.
# Set KILN_DIST_KEEP=1 to keep the folder for a look afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/dist"
version="$(bash "$ROOT/scripts/version.sh")"
wheel="$(ls "$ROOT"/dist/kiln-"$version"-*.whl 2>/dev/null || true)"
tarball="$ROOT/dist/kiln-wasm-$version.tgz"
[[ -f "$wheel" && -f "$tarball" ]] || { echo "tests/dist: no dist/ for kiln $version: run \`make dist\` first" >&2; exit 1; }
# The interpreter the repo's .venv was made from: the fresh virtualenv starts from the same Python, with
# none of the .venv's packages.
base_python="$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}" PYTHON="$ROOT/.venv/bin/python"

work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-dist-XXXXXX")"
cleanup() { if [[ "${KILN_DIST_KEEP:-}" == 1 ]]; then echo "tests/dist: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
shared="$work/shared" # what Python leaves for the JS installs: the two models and cases.json
mkdir -p "$shared"
step() { printf '\n== %s\n' "$*"; }
timed() { local start=$SECONDS; "$@"; echo "   ($((SECONDS - start)) s)"; }
# Versions of the tools the README and notebooks use: the ones the repo's tests pin.
pins() { for p in "$@"; do grep -E "^$p(\[.*\])?==" "$ROOT/py-bindings/requirements-dev.txt" | cut -d' ' -f1; done; }

# ---- 1. Python ------------------------------------------------------------------------------------
step "a fresh virtualenv with $(basename "$wheel") and nothing else"
venv="$work/venv"
"$base_python" -m venv "$venv"
timed "$venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
(cd "$work" && "$venv/bin/python" "$HERE/wheel_alone.py" "$ROOT")

step "the README's Python session, against the installed wheel"
tools=(scikit-learn matplotlib onnx onnxruntime nbclient nbformat ipykernel ipywidgets)
timed "$venv/bin/python" -m pip install -q --disable-pip-version-check $(pins "${tools[@]}")
mkdir -p "$work/readme"
(cd "$work/readme" && timed "$venv/bin/python" "$HERE/readme_session.py" "$ROOT/README.md" "$shared")

step "notebooks 01 and 02, against the installed wheel"
mkdir -p "$work/notebooks"
cp "$ROOT"/notebooks/01-*.ipynb "$ROOT"/notebooks/02-*.ipynb "$work/notebooks/"
(cd "$work" && timed "$venv/bin/python" "$ROOT/scripts/run_notebooks.py" "$work/notebooks")

# ---- 2. npm -----------------------------------------------------------------------------------------
# An app from its template (package.json and, for the bundlers, the lock file that pins their trees),
# then `npm install ./kiln-wasm.tgz` as a user adds a package. npm's cache (~/.npm) makes it quick.
install_app() {
    local name="$1"
    cp -r "$HERE/$name" "$work/$name"
    cp "$tarball" "$work/$name/kiln-wasm.tgz"
    (cd "$work/$name" && npm install --prefer-offline --no-audit --no-fund --loglevel=error ./kiln-wasm.tgz)
}

step "a plain Node ESM script: npm install the tarball, predict"
timed install_app node-esm
(cd "$work/node-esm" && node check.mjs "$shared")

step "a fresh Vite app: npm install the tarball, vite build"
timed install_app vite
mkdir -p "$work/vite/public"
cp -r "$HERE/app/index.html" "$HERE/app/src" "$work/vite/"
cp "$shared"/*.onnx "$shared/cases.json" "$work/vite/public/"
(cd "$work/vite" && timed node node_modules/vite/bin/vite.js build --outDir "$work/vite/dist" --logLevel warn)

step "a fresh webpack 5 app: npm install the tarball, webpack"
timed install_app webpack
cp -r "$HERE/app/src" "$work/webpack/"
(cd "$work/webpack" && OUT_DIR="$work/webpack/dist" timed node node_modules/webpack-cli/bin/cli.js --config webpack.config.js --no-stats)
# webpack's bundle is a classic script: it finds its chunks and assets from document.currentScript
sed 's#<script type="module" src="./src/main.js"></script>#<script defer src="./main.js"></script>#' "$HERE/app/index.html" > "$work/webpack/dist/index.html"
cp "$shared"/*.onnx "$shared/cases.json" "$work/webpack/dist/"

step "a plain static folder: the installed package copied beside a page that imports it through an import map"
mkdir -p "$work/static/node_modules"
cp -r "$work/node-esm/node_modules/kiln-wasm" "$work/static/node_modules/"
cp -r "$HERE/app/src" "$work/static/"
cp "$HERE/static/index.html" "$work/static/"
cp "$shared"/*.onnx "$shared/cases.json" "$work/static/"

step "the three pages in headless Chromium"
if [[ ! -d "$ROOT/tests/node_modules/playwright-core" || "$ROOT/tests/package-lock.json" -nt "$ROOT/tests/node_modules/.package-lock.json" ]]; then
    (cd "$ROOT/tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
cd "$ROOT/tests"
KILN_DIST_WORK="$work" node --test --test-reporter=spec dist/browser.test.mjs
