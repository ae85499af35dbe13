#!/usr/bin/env bash
# Prints kiln's version: [workspace.package] version in the root Cargo.toml, the one place it is written.
# kiln-core (kiln.version in exported models), kiln-py (kiln.__version__, the wheel) and kiln-wasm inherit
# it through `version.workspace = true`; wasm/build.sh copies it into wasm/pkg/package.json.
set -euo pipefail
awk '/^\[workspace\.package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' \
    "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/Cargo.toml"
