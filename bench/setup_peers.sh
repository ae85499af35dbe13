#!/usr/bin/env bash
# Create bench/.venv-peers with PyTorch (CPU use), numpy, scikit-learn, threadpoolctl, onnxruntime and
# matplotlib. Idempotent: does nothing when the venv already matches requirements-peers.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-peers"
REQ="$HERE/requirements-peers.txt"
STAMP="$VENV/.stamp"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  exit 0
fi
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "setup_peers: installing $(grep -cv '^\s*#' "$REQ") packages into bench/.venv-peers (torch is ~5.6 GB; about a minute on a fast link)" >&2
"$VENV/bin/python" -m pip install -q -r "$REQ"
"$VENV/bin/python" -c "import torch, sklearn, threadpoolctl, onnxruntime, matplotlib; torch.zeros(1).sum()"
echo "$want" > "$STAMP"
