#!/usr/bin/env bash
# The Qwen report's table 3 for a checkpoint: perplexity of the first 1K, 2K, 4K, 8K and 16K
# tokens of a long text, plain, with dynamic NTK, with NTK + logN (what Qwen v1's config
# turns on) and with NTK + logN + layer-wise window attention.
#   scripts/perplexity-table.sh MODEL_DIR_OR_GGUF TEXT_FILE [more perplexity flags...]
# Prints the markdown table (with each cell's seconds) and writes it as JSON to $OUT
# (default perplexity-<model>.json). Settings, overridable from the environment: LENGTHS,
# MODES, KV_CACHE (default f16: 16K tokens of Qwen-1.8B take 3.2 GB; q8 halves that but adds
# its rounding to the perplexities). Flags after TEXT_FILE go to the command, e.g.
# --window pow2:1024:0.25 (default windows: pow2:S/4:4/N, see `qwen-webgpu perplexity --help`)
# or --weights f16. BIN names a built binary (else the release build is built first).
# On a CPU adapter (lavapipe) a 16K row of a 1.8B model takes many hours.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
MODEL="$1"
TEXT="$2"
shift 2
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin qwen-webgpu >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/qwen-webgpu"
fi
OUT="${OUT:-perplexity-$(basename "$MODEL").json}"
"$BIN" perplexity --model "$MODEL" --text "$TEXT" \
  --lengths "${LENGTHS:-1024,2048,4096,8192,16384}" \
  --modes "${MODES:-plain,ntk,ntk+logn,ntk+logn+window}" \
  --kv-cache "${KV_CACHE:-f16}" --json "$OUT" "$@"
echo "JSON: $OUT" >&2
