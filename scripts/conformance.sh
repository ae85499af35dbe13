#!/usr/bin/env bash
# The ONNX backend node conformance cases through both of kiln's engines: tract's and kiln's own.
#
#   bash scripts/conformance.sh            generate the cases (cached), run them, fail if a case on
#                                          core/tests/onnx_conformance/passing.txt (tract) or
#                                          kiln_passing.txt (kiln's engine) no longer passes, or if
#                                          kiln's engine accepts a case and gets it wrong
#   bash scripts/conformance.sh --update   the same, then rewrite both lists with today's passes
#
# Run from anywhere; uses the venv at .venv (or $VIRTUAL_ENV) for onnx. Details of every case,
# with the reason for each failure, land in target/onnx-node-cases/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-${VIRTUAL_ENV:-$PWD/.venv}/bin/python}"
CASES=target/onnx-node-cases
LIST=core/tests/onnx_conformance/passing.txt

"$PY" scripts/gen_onnx_cases.py "$CASES"
args=(--cases "$CASES" --check "$LIST")
if [[ "${1:-}" == "--update" ]]; then
  args=(--cases "$CASES" --write "$LIST")
fi
cargo run --release -q -p kiln-core --example onnx_conformance -- "${args[@]}"
