#!/usr/bin/env bash
# Loading a full-size Qwen-1.8B-shaped bf16 checkpoint in headless Chromium, first load vs
# reload from the model store (issue 13): sets up node, Chromium and playwright-core, builds
# pkg/ when stale, writes the 3.7 GB folder when missing, then runs load-bench-browser.mjs
# (its header lists the options: LOAD_BENCH_DIR, FORMATS, GPU_ENCODER, CONTEXT, WORK, ...).
# Tens of minutes on a 2-core machine; prints a markdown table, figures in WORK/results.json.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}
. "$ROOT/scripts/browser-prereqs.sh"
ensure_browser
[ -n "${PKG:-}" ] || ensure_pkg
export LOAD_BENCH_DIR=${LOAD_BENCH_DIR:-$HOME/.cache/qwen-webgpu/load-bench/qwen18b-bf16}
if [ ! -f "$LOAD_BENCH_DIR/model.safetensors" ] || [ ! -f "$LOAD_BENCH_DIR/config.json" ]; then
  (cd "$ROOT" && cargo run --release --example load_bench -- --write "$LOAD_BENCH_DIR")
fi
exec node "$ROOT/scripts/load-bench-browser.mjs"
