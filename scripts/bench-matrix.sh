#!/usr/bin/env bash
# Run `qwen-webgpu bench` on the full Qwen-1.8B shape for several configurations, one after
# another on the same machine (compare ratios within one run), writing NAME.json and NAME.txt
# into OUT_DIR. Each spec is "name|ENV=val ...|bench args".
#   BIN=target/release/qwen-webgpu OUT_DIR=/tmp/bench scripts/bench-matrix.sh \
#     "q4q8||--weights q4 --kv-cache q8" "f16f16||--weights f16 --kv-cache f16" \
#     "q4q8_nosg||--weights q4 --kv-cache q8 --no-subgroups" \
#     "q4q8_blockprefill|QWEN_WEBGPU_PREFILL=block|--weights q4 --kv-cache q8"
# On a machine without a Vulkan loader, unpack libvulkan1 (and the glvnd libraries the
# vendor's ICD needs) first; VK_DRIVER_FILES may have to name the vendor's ICD json.
set -uo pipefail
BIN="${BIN:-target/release/qwen-webgpu}"
OUT_DIR="${OUT_DIR:-bench-results}"
mkdir -p "$OUT_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for spec in "$@"; do
  IFS='|' read -r name envs args <<<"$spec"
  echo "== $name: $envs $args"
  # shellcheck disable=SC2086
  env $envs timeout 600 "$BIN" bench --context 4096 --json "$OUT_DIR/$name.json" $args 2>&1 | tee "$OUT_DIR/$name.txt"
done
