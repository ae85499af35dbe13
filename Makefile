# kiln's task runner. `make demo` and `make test` are the front door; `make help` lists the rest.
# Every target installs what it needs when it is missing, and is safe to run again.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(HOME)/.cargo/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

.PHONY: help demo test lint test-rust conformance py test-py test-ray notebooks wasm test-js chromium test-e2e dist test-dist bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# ---- the front door ---------------------------------------------------------------------------
demo: py wasm ## set up what is missing, train the default model, build the wasm, serve the web demo
	bash scripts/demo.sh

test: lint test-rust conformance test-py test-ray notebooks test-js test-e2e test-dist ## every test: Rust, Python, Ray, notebooks, JS, headless Chromium, the packages installed
	@echo "make test: all suites passed"

# ---- Rust -------------------------------------------------------------------------------------
lint: ## rustfmt and clippy (warnings are errors)
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	# the browser's modules without tract: kiln's engine (predict only), and with the Trainer, for the
	# target they ship to (wasm32 with simd128), so the core's wasm32-only code paths are linted too
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	cargo clippy --release -p kiln-wasm --target wasm32-unknown-unknown --no-default-features --features core -- -D warnings
	cargo clippy --release -p kiln-wasm --target wasm32-unknown-unknown --no-default-features --features train -- -D warnings

test-rust: ## the Rust core's unit, gradient and integration tests
	cargo test --release -p kiln-core

conformance: $(VENV)/.stamp ## ONNX backend node cases through both engines, tract's and kiln's (regression lists in core/tests/onnx_conformance)
	bash scripts/conformance.sh

# ---- Python -----------------------------------------------------------------------------------
$(VENV)/.stamp: py-bindings/requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r py-bindings/requirements-dev.txt
	touch $@

py: $(VENV)/.stamp ## build the Python package (release) into .venv
	cd py-bindings && maturin develop --release -q

test-py: py ## pytest over py-bindings/tests and the stub check
	cd py-bindings && python -m pytest -q tests --ignore=tests/test_ray.py
	bash scripts/stubtest.sh

# Ray probes public addresses at start: its tests and notebook run in a network namespace with only loopback
test-ray: py ## kiln.ray on Ray Tune/Train/Data, inside a loopback-only network namespace
	cd py-bindings && bash ../scripts/netns.sh python -m pytest -q tests/test_ray.py

notebooks: py wasm ## run every notebook top to bottom (in a loopback-only network namespace: notebook 05 starts Ray)
	bash scripts/netns.sh python scripts/run_notebooks.py notebooks

# ---- wasm and the browser ---------------------------------------------------------------------
wasm: ## build wasm/pkg (installs the wasm target, wasm-bindgen-cli and npm deps when missing); prints sizes
	bash wasm/build.sh

test-js: wasm py ## Node's test runner over wasm/pkg, and a TypeScript check of index.d.ts
	bash wasm/test.sh

chromium: ## install Debian's chromium for the browser tests when missing
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)

test-e2e: py wasm chromium ## the journeys across languages: Python → ONNX → Node → the page in headless Chromium
	bash tests/run.sh

# ---- the packages as users install them ----------------------------------------------------------
dist: py wasm ## the abi3 wheel, the sdist and the npm tarball in dist/ (contents checked, sizes printed)
	bash scripts/dist.sh

test-dist: dist chromium ## install dist/ as users do, outside the repo: a fresh venv; Vite, webpack, Node and a static page
	bash tests/dist/run.sh

bench: py wasm chromium ## kiln against its peers in one run (training and inference); writes BENCHMARKS.md
	bash bench/run.sh

clean: ## remove build outputs (keeps .venv and node_modules)
	cargo clean
	rm -rf wasm/pkg/*.wasm target-wasm
