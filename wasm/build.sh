#!/usr/bin/env bash
# Builds the npm package kiln-wasm into wasm/pkg: cargo (wasm32, profiles `wasm` / `wasm-core`, simd128) →
# wasm-bindgen (--target web) → wasm-opt (npm's binaryen) → prints raw / gzip / brotli sizes.
# Installs what is missing first, and is safe to run again: each step is skipped when its
# output is current. `make wasm` runs this.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
target=wasm32-unknown-unknown
profile=wasm
# cargo's target folder: CARGO_TARGET_DIR when set (a checkout sharing compiled dependencies)
cargo_target="${CARGO_TARGET_DIR:-$root/target}"
out="$cargo_target/$target/$profile"
pkg="$here/pkg"

step() { printf '\n== %s\n' "$*"; }

# ---- toolchain ---------------------------------------------------------------------------------
if ! rustup target list --installed | grep -qx "$target"; then
    step "rustup target add $target"
    rustup target add "$target"
fi

# wasm-bindgen's CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock, or the
# glue it writes does not match the module.
bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ -z "$bindgen_version" ]; then
    step "resolving Cargo.lock"
    cargo metadata --format-version 1 >/dev/null # adds the wasm crates to Cargo.lock, nothing else
    bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $bindgen_version" ]; then
    step "cargo install wasm-bindgen-cli $bindgen_version (about 3 minutes, once)"
    # Without --locked: the CLI's own lock file pins a webpki-roots that no longer resolves.
    cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

# npm's binaryen, not Debian's: Debian's wasm-opt (108) writes modules that fail to load.
if [ ! -x "$here/node_modules/.bin/wasm-opt" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    step "npm ci (binaryen, typescript, onnxruntime-web for the benchmark)"
    (cd "$here" && npm ci --no-audit --no-fund)
fi

# ---- the version: the workspace Cargo.toml's, copied into the npm package ------------------------
version="$(bash "$root/scripts/version.sh")"
node -e '
    const fs = require("fs"); const [file, version] = process.argv.slice(1);
    const pkg = JSON.parse(fs.readFileSync(file, "utf8"));
    if (pkg.version !== version) { pkg.version = version; fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + "\n"); console.log(`wasm/pkg/package.json: version ${version}`); }
    const js = file.replace(/package\.json$/, "version.js"); const text = fs.readFileSync(js, "utf8");
    const line = `export const version = ${JSON.stringify(version).replace(/"/g, "\x27")};`;
    if (!text.includes(line)) fs.writeFileSync(js, text.replace(/^export const version = .*$/m, line));
' "$pkg/package.json" "$version"

# ---- compile, bindgen, wasm-opt: three modules from the one crate -------------------------------
# kiln_core_bg.wasm (feature `core`): kiln's own ONNX engine, which runs the models kiln exports,
#   tokenizers, preprocessing and drift; no tract, no backward code. Small; index.js loads every
#   model with it first.
# kiln_train_bg.wasm (feature `train`): the same plus the Trainer; fetched only to train.
# kiln_wasm_bg.wasm (feature `infer`): tract, for the models kiln's engine declines.
# .cargo/config.toml sets simd128 for this target, but a RUSTFLAGS in the environment would
# replace it: keep simd128 in that case too (tract's SIMD kernels are 2.5x faster).
if [ -n "${RUSTFLAGS:-}" ]; then
    export RUSTFLAGS="$RUSTFLAGS -C target-feature=+simd128"
fi
# Not -O/-Oz: those shrink the raw file but grow the gzip and brotli a page downloads (measured:
# 2.33 → 2.46 MB gzip) and take minutes. These passes shrink both, in seconds. The --enable flags
# are the features rustc emits; without them validation fails.
opt_flags=(--strip-debug --strip-producers
    --vacuum --merge-blocks --duplicate-function-elimination --remove-unused-module-elements --reorder-functions
    --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
    --enable-mutable-globals --enable-multivalue --enable-reference-types --enable-simd)

# build_module NAME FEATURE PROFILE [GLUE]: cargo → wasm-bindgen → wasm-opt into $pkg/NAME.js +
# NAME_bg.wasm. With GLUE (a module already built), NAME is a second build of GLUE's code: only
# NAME_bg.wasm is kept, after checking that wasm-bindgen wrote exactly GLUE.js for it (index.js
# loads either .wasm through the one GLUE.js).
build_module() {
    local name="$1" feature="$2" profile="$3" glue="${4:-}"
    step "cargo build -p kiln-wasm --target $target --profile $profile --no-default-features --features $feature${RUSTFLAGS:+ (RUSTFLAGS=$RUSTFLAGS)}"
    cargo build -p kiln-wasm --target "$target" --profile "$profile" --no-default-features --features "$feature"
    # Both modules are built from one crate, so cargo names both kiln_wasm.wasm: keep each one's copy.
    cp "$cargo_target/$target/$profile/kiln_wasm.wasm" "$out/module-$name.wasm"
    # bindgen + wasm-opt, skipped when the compiled module did not change
    local flags=("${opt_flags[@]}")
    [[ "${RUSTFLAGS:-}" == *relaxed-simd* ]] && flags+=(--enable-relaxed-simd)
    local stamp="$out/$name.pkg-stamp"
    local want_stamp
    want_stamp="$(sha256sum "$out/module-$name.wasm" | cut -d' ' -f1) bindgen=$bindgen_version opt=${flags[*]} glue=$glue"
    local js="$pkg/$name.js"
    [ -n "$glue" ] && js="$pkg/$glue.js"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -f "$pkg/${name}_bg.wasm" ] && [ -f "$js" ]; then
        step "wasm/pkg/$name is current (bindgen and wasm-opt skipped)"
        return
    fi
    local dest="$pkg"
    [ -n "$glue" ] && dest="$out/bindgen-$name" && rm -rf "$dest"
    step "wasm-bindgen --target web → $dest/$name.js"
    # --experimental-reset-state-function: index.js starts a fresh instance after a Rust panic
    # (an abort on wasm32) so the package keeps working; --omit-default-module-path: index.js
    # alone says where the .wasm is (Node reads it from disk, pages fetch it).
    # (a second build is bound under GLUE's name: the glue names its own file in its imports)
    wasm-bindgen "$out/module-$name.wasm" --out-dir "$dest" --out-name "${glue:-$name}" --target web \
        --omit-default-module-path --experimental-reset-state-function
    if [ -n "$glue" ]; then
        if ! cmp -s "$dest/$glue.js" "$pkg/$glue.js"; then
            echo "build.sh: wasm-bindgen's glue for $name differs from $glue.js; one glue cannot load both modules" >&2
            diff "$dest/$glue.js" "$pkg/$glue.js" | head -20 >&2
            exit 1
        fi
        mv "$dest/${glue}_bg.wasm" "$pkg/${name}_bg.wasm"
        rm -rf "$dest"
    fi
    step "wasm-opt ${flags[*]}"
    local raw_before
    raw_before=$(stat -c %s "$pkg/${name}_bg.wasm")
    "$here/node_modules/.bin/wasm-opt" "${flags[@]}" "$pkg/${name}_bg.wasm" -o "$pkg/${name}_bg.wasm.opt"
    mv "$pkg/${name}_bg.wasm.opt" "$pkg/${name}_bg.wasm"
    echo "wasm-opt: $raw_before → $(stat -c %s "$pkg/${name}_bg.wasm") bytes"
    echo "$want_stamp" > "$stamp"
}
build_module kiln_wasm infer wasm
build_module kiln_core core wasm-core
build_module kiln_train train wasm-core
# kiln_core_relaxed_bg.wasm: kiln_core again with relaxed SIMD (fused multiply-adds in the
# convolution and matrix kernels). Engines without relaxed SIMD refuse the whole module, so
# core.js loads it only where WebAssembly.validate accepts a relaxed-SIMD probe, and kiln_core_bg.wasm
# elsewhere. Its own profile keeps its objects apart from the simd128 build's.
RUSTFLAGS="${RUSTFLAGS:--C target-feature=+simd128} -C target-feature=+relaxed-simd" \
    build_module kiln_core_relaxed core wasm-relaxed kiln_core

# ---- sizes -------------------------------------------------------------------------------------
step "sizes"
# Brotli at quality 11 takes ~15 s on this file: reuse the figures while the file is unchanged.
for name in kiln_core kiln_core_relaxed kiln_train kiln_wasm; do
    sizes_cache="$out/$name.sizes"
    pkg_sum="$(sha256sum "$pkg/${name}_bg.wasm" | cut -d' ' -f1)"
    if [ -f "$sizes_cache" ] && [ "$(head -1 "$sizes_cache")" = "$pkg_sum" ]; then
        tail -n +2 "$sizes_cache"
    else
        node "$here/sizes.mjs" "$pkg/${name}_bg.wasm" | tee "$sizes_cache.new"
        { echo "$pkg_sum"; cat "$sizes_cache.new"; } > "$sizes_cache"
        rm -f "$sizes_cache.new"
    fi
done
