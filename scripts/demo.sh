#!/usr/bin/env bash
# `make demo`: retrain the demo's digits model and the text page's two name models (quickly), then
# serve the pages on 127.0.0.1. The repo ships trained models in web-demo/model/, so the pages work even
# when training can't run; a failed retrain is reported and the shipped model is served.
#   PORT=8080 make demo      # another port (a taken port falls back to a free one)
#   SKIP_TRAIN=1 make demo   # serve what is in web-demo/model/ as it is
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
PORT="${PORT:-8000}"

if [[ ! -f wasm/pkg/index.js ]]; then
  echo "demo.sh: wasm/pkg/index.js is missing; build kiln-wasm first with \`make wasm\`" >&2
  exit 1
fi

if [[ -n "${SKIP_TRAIN:-}" ]]; then
  echo "== SKIP_TRAIN set: serving web-demo/model/ as it is"
elif [[ ! -f scripts/train_demo.py ]]; then
  echo "== scripts/train_demo.py is not there: serving the shipped model"
else
  echo "== retraining the demo model (scripts/train_demo.py)"
  if ! "$PY" scripts/train_demo.py; then
    echo "demo.sh: retraining FAILED (above); serving the shipped model in web-demo/model/ instead" >&2
  fi
  echo "== retraining the text page's models (scripts/train_text_demo.py, about 25 s)"
  if ! "$PY" scripts/train_text_demo.py; then
    echo "demo.sh: retraining the text models FAILED (above); serving the shipped ones instead" >&2
  fi
fi
ls -l web-demo/model/digits.onnx web-demo/model/names-language.onnx web-demo/model/names-generator.onnx web-demo/model/names-transformer.onnx

echo "== serving the repo on 127.0.0.1 (Ctrl-C to stop); open the URL below (the text page: web-demo/text.html)"
exec "$PY" scripts/serve.py --port "$PORT" --quiet
