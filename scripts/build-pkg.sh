#!/usr/bin/env bash
# Build the npm package in pkg/: wasm-bindgen bindings + the hand-written JS layer (js/) +
# the wasm-opt -Oz module + the license texts + package.json (repository, engines, and
# "sideEffects": ["./worker.js"]: a bundler must keep worker.js's top-level code, or a worker
# file that does `import "qwen-webgpu/worker.js"` comes out empty; tests/web/package.mjs
# checks it with webpack, Vite and esbuild). Installs what it needs when missing (the wasm32
# target, wasm-bindgen-cli matching Cargo.toml's pin, binaryen's wasm-opt).
#
#   scripts/build-pkg.sh            # release build into pkg/
#   QWEN_PKG_DEBUG=1 scripts/build-pkg.sh   # skip wasm-opt (faster, bigger)
#   QWEN_WASM_TARGET_DIR=DIR scripts/build-pkg.sh   # build the wasm in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# QWEN_WASM_TARGET_DIR: a target dir of its own for the wasm build, so that it need not wait
# for cargo's lock while a native build or test run holds the usual one.
export CARGO_TARGET_DIR=${QWEN_WASM_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}}
WB_VERSION=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
[ -n "$WB_VERSION" ] || { echo "build-pkg: no wasm-bindgen = \"=x.y.z\" pin in Cargo.toml" >&2; exit 1; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "build-pkg: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$WB_VERSION" ]; then
  echo "build-pkg: installing wasm-bindgen-cli $WB_VERSION"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi
if [ -z "${QWEN_PKG_DEBUG:-}" ] && ! command -v wasm-opt >/dev/null; then
  echo "build-pkg: installing binaryen (wasm-opt)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y binaryen || { apt-get update && apt-get install -y binaryen; }
  else sudo apt-get install -y binaryen; fi
fi

cargo build --lib --release --target wasm32-unknown-unknown
RAW="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/qwen_webgpu.wasm"

OUT="$ROOT/pkg"
rm -rf "$OUT"
mkdir -p "$OUT"
IN="$RAW"
if [ -z "${QWEN_PKG_DEBUG:-}" ]; then
  # wasm-opt runs on rustc's output, before wasm-bindgen: binaryen 108 (Debian 12) rewrites
  # the export of wasm-bindgen's externref table to the funcref table, which breaks
  # instantiation ("WebAssembly.Table.set(): Argument 1 is invalid"). The feature flags are
  # those rustc 1.95 emits by default; wasm-opt 108 needs them spelled out.
  IN="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/qwen_webgpu.opt.wasm"
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue "$RAW" -o "$IN"
fi
wasm-bindgen "$IN" --out-dir "$OUT" --out-name qwen_webgpu --target web --no-typescript --omit-default-module-path
cp js/*.js js/*.d.ts "$OUT/"
cp LICENSE-MIT LICENSE-APACHE "$OUT/"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# Where the project lives: Cargo.toml's `repository` when it has one, else QWEN_PKG_REPOSITORY,
# else the default below (repository, homepage and bugs of package.json come from it).
REPO=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n1)
REPO=${REPO:-${QWEN_PKG_REPOSITORY:-https://github.com/qwen-webgpu/qwen-webgpu}}
REPO=${REPO%.git}
# Every module of js/ ships (a module left out of "files" breaks every import of the package:
# store.js once was).
JS_FILES=$(cd js && ls *.js | sed 's/.*/"&"/' | paste -sd, - | sed 's/,/, /g')
cat > "$OUT/package.json" <<JSON
{
  "name": "qwen-webgpu",
  "version": "$VERSION",
  "description": "Qwen chat models in the browser on WebGPU, with our own WGSL kernels (Rust + wasm)",
  "license": "MIT OR Apache-2.0",
  "repository": { "type": "git", "url": "git+$REPO.git" },
  "homepage": "$REPO#readme",
  "bugs": { "url": "$REPO/issues" },
  "engines": { "node": ">=18" },
  "type": "module",
  "main": "./index.js",
  "module": "./index.js",
  "types": "./index.d.ts",
  "exports": {
    ".": { "types": "./index.d.ts", "import": "./index.js", "default": "./index.js" },
    "./worker.js": "./worker.js",
    "./package.json": "./package.json"
  },
  "files": [$JS_FILES, "index.d.ts", "qwen_webgpu.js", "qwen_webgpu_bg.wasm", "README.md", "LICENSE-MIT", "LICENSE-APACHE"],
  "sideEffects": ["./worker.js"],
  "keywords": ["qwen", "llm", "webgpu", "wasm", "wgsl"]
}
JSON
[ -f js/README.md ] && cp js/README.md "$OUT/README.md"
SIZE=$(stat -c %s "$OUT/qwen_webgpu_bg.wasm")
GZ=$(gzip -9 -c "$OUT/qwen_webgpu_bg.wasm" | wc -c)
echo "build-pkg: pkg/qwen_webgpu_bg.wasm $SIZE bytes ($((SIZE / 1024)) KiB), gzip -9 $GZ bytes ($((GZ / 1024)) KiB)"
# The budget: 4.1 MB (3.0 MB until the GPU weight encoder and the model store's export came in,
# 2026-12-02: the module is then 3.01 MB, 1.08 MB gzipped; 3.1 MB until GGUF loading came in:
# its header reader, GGUF -> checkpoint mapping and tokenizer rebuilt from the file's
# vocabulary make it 3.22 MB, 1.13 MB gzipped; 3.3 MB until chat templates came in: minijinja,
# set up as transformers renders, the reply parser and the logprobs/penalty plumbing make it
# about 3.9 MB, 1.46 MB gzipped).
if [ -z "${QWEN_PKG_DEBUG:-}" ] && [ "$SIZE" -ge 4100000 ]; then
  echo "build-pkg: the .wasm is over the 4.1 MB budget" >&2
  exit 1
fi
