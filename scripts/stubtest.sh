#!/usr/bin/env bash
# Check kiln's type information: the hand-written stubs of the native module (kiln/_kiln.pyi)
# against the built extension (mypy's stubtest, as pydantic-core does), then the pure-Python face
# against those stubs (mypy). Run from anywhere; uses the repo's .venv unless PYTHON is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

# Runtime-only names the stubs leave out on purpose (each one explained in the file).
ALLOW="$ROOT/py-bindings/tests/stubtest-allowlist.txt"

echo "stubtest: kiln._kiln against python/kiln/_kiln.pyi"
"$PY" -m mypy.stubtest kiln._kiln --allowlist "$ALLOW"

# tqdm ships no type information (no py.typed, no stubs installed): silence exactly that error code,
# so a module that cannot be found at all (say, kiln._kiln without its stub) still fails.
echo "mypy: py-bindings/python/kiln"
"$PY" -m mypy --disable-error-code=import-untyped --no-error-summary py-bindings/python/kiln
echo "stubtest.sh: stubs and package types check"
