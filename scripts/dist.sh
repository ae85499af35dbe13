#!/usr/bin/env bash
# `make dist`: the packages as users install them, in dist/:
#   kiln-VERSION-cp39-abi3-manylinux_*.whl   one wheel for every CPython >= 3.9 (abi3), tagged with the
#                                            oldest manylinux policy its glibc symbols allow
#   kiln-VERSION.tar.gz                      the sdist (kiln-core's and kiln-py's sources, Cargo.lock)
#   kiln-wasm-VERSION.tgz                    `npm pack` of wasm/pkg
# The wheel is the library `make py` builds (same cargo profile, features and strip setting), so after
# `make py` this costs seconds, not a second compile. Each artefact's contents are checked against what
# it must hold (and nothing else for the npm tarball); sizes are printed last.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/dist"
python="${PYTHON:-$root/.venv/bin/python}"
export PATH="$root/.venv/bin:$HOME/.cargo/bin:$PATH" VIRTUAL_ENV="${VIRTUAL_ENV:-$root/.venv}"
# the one version: the workspace Cargo.toml's (the wheel, the npm package and kiln.__version__ all read it)
version="$(bash scripts/version.sh)"
rm -rf "$out"
mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }

step "maturin build --release (abi3 wheel) and maturin sdist"
# cargo's "no documentation, homepage or repository" notes are filtered; everything else is shown
(cd py-bindings && maturin build --release --out "$out")
(cd py-bindings && maturin sdist --out "$out" 2>&1 | grep -v -E "manifest has no documentation|^ *\|$|= note: see https://doc.rust-lang.org/cargo/reference/manifest|^From .cargo package" || true)
wheel="$(ls "$out"/kiln-"$version"-*.whl)"
sdist="$out/kiln-$version.tar.gz"
[[ -f "$wheel" && -f "$sdist" ]] || { echo "dist: maturin wrote no wheel or sdist for kiln $version" >&2; exit 1; }

step "npm pack wasm/pkg"
# npm ships README and LICENSE; the license lives once, at the repository's root.
cp LICENSE wasm/pkg/LICENSE
(cd "$out" && npm pack "$root/wasm/pkg" --silent >/dev/null)
tarball="$out/kiln-wasm-$version.tgz"
[[ -f "$tarball" ]] || { echo "dist: npm pack wrote no $tarball (is wasm/pkg/package.json at version $version?)" >&2; exit 1; }

step "contents and sizes"
"$python" scripts/check_dist.py "$wheel" "$sdist" "$tarball"

