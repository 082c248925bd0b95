#!/usr/bin/env bash
# End-to-end test of the chat page (www/): scripts/serve.sh serves the page, pkg/ and a tiny random
# checkpoint (real Qwen tokenizer, vocab 151936, hidden 32); headless Chromium (SwiftShader WebGPU)
# drives the page like a person. Prints "www: N passed, M failed" last; exits non-zero on failure.
# Screenshots go to tests/www/artifacts/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WEB="$ROOT/tests/web"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}
fail() { echo "$*" >&2; echo "www: 0 passed, 1 failed"; exit 1; }

. "$ROOT/scripts/browser-prereqs.sh"
ensure_browser || fail "www: cannot set up node, chromium and playwright-core"
ensure_pkg || fail "www: scripts/build-pkg.sh failed"

VOCAB_DIR=${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}
[ -f "$VOCAB_DIR/tokenizer.json" ] || fail "www: no $VOCAB_DIR/tokenizer.json (run scripts/fetch-vocab.sh)"
MK="$CARGO_TARGET_DIR/debug/examples/make_fixture"
if [ ! -x "$MK" ] || [ -n "$(find "$ROOT/src" "$ROOT/examples" -newer "$MK" -type f 2>/dev/null | head -n1)" ]; then
  (cd "$ROOT" && cargo build --example make_fixture) || fail "www: cargo build --example make_fixture failed"
fi
FX="$HERE/.fixtures"
rm -rf "$FX"
mkdir -p "$FX"
"$MK" "$FX/vocab" --vocab 151936 --hidden 32 --layers 1 --ff 64 --heads 2 --kv-heads 1 --seed 3 --tie >/dev/null \
  || fail "www: make_fixture failed"
cp "$VOCAB_DIR/tokenizer.json" "$FX/vocab/"

export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
mkdir -p "$HERE/artifacts"
cd "$HERE"
NODE_PATH="$WEB/node_modules" FIXTURES="$FX" ROOT="$ROOT" node run.mjs
