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
# A GGUF of the same model (tests/www/gguf.mjs): llama.cpp's converter and llama-quantize Q4_0
# (scripts/gguf-tools.sh, cached in ~/.cache). QWEN_SKIP_GGUF=1 skips it (and those tests).
if [ -x "$ROOT/scripts/gguf-tools.sh" ] && [ -z "${QWEN_SKIP_GGUF:-}" ]; then
  GT="$ROOT/scripts/gguf-tools.sh"
  if "$GT" setup >"$FX/gguf-tools.log" 2>&1; then
    mkdir -p "$FX/gguf-src" "$FX/gguf"
    for f in config.json model.safetensors tokenizer.json; do ln -s "$FX/vocab/$f" "$FX/gguf-src/$f"; done
    cp "$("$GT" path tokenizer_config)" "$FX/gguf-src/tokenizer_config.json"
    "$GT" convert "$FX/gguf-src" "$FX/gguf-src.gguf" f16 2>>"$FX/gguf-tools.log" || fail "www: gguf-tools convert failed"
    "$GT" quantize "$FX/gguf-src.gguf" "$FX/gguf/vocab-q4_0.gguf" Q4_0 2>>"$FX/gguf-tools.log" || fail "www: gguf-tools quantize failed"
    rm -rf "$FX/gguf-src" "$FX/gguf-src.gguf"
  else
    # Outside CI a machine without the tools may skip them; CI (scripts/test.sh set them up
    # first) must run them.
    [ -z "${CI:-}" ] || fail "www: scripts/gguf-tools.sh setup failed ($FX/gguf-tools.log)"
    echo "www: scripts/gguf-tools.sh setup failed ($FX/gguf-tools.log): GGUF page tests will be skipped" >&2
  fi
fi

# The scripted checkpoint of tests/www/agent.mjs (a model that calls python, then answers):
# examples/make_scripted.rs over the real vocabulary and Qwen3's real tokenizer_config.json
# (scripts/gguf-tools.sh fetches it; without it the page's tool test is skipped).
TOKCFG=""
[ -x "$ROOT/scripts/gguf-tools.sh" ] && TOKCFG=$("$ROOT/scripts/gguf-tools.sh" path tokenizer_config 2>/dev/null || true)
if [ -n "$TOKCFG" ] && [ -f "$TOKCFG" ]; then
  MS="$CARGO_TARGET_DIR/debug/examples/make_scripted"
  if [ ! -x "$MS" ] || [ -n "$(find "$ROOT/src" "$ROOT/examples" -newer "$MS" -type f 2>/dev/null | head -n1)" ]; then
    (cd "$ROOT" && cargo build --example make_scripted) || fail "www: cargo build --example make_scripted failed"
  fi
  "$MS" "$FX/scripted" --vocab-dir "$VOCAB_DIR" --tokenizer-config "$TOKCFG" >"$FX/scripted.log" || fail "www: make_scripted failed ($FX/scripted.log)"
else
  [ -z "${CI:-}" ] || fail "www: no Qwen3 tokenizer_config.json (scripts/gguf-tools.sh setup) for the scripted checkpoint"
fi

export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
mkdir -p "$HERE/artifacts"
cd "$HERE"
NODE_PATH="$WEB/node_modules" FIXTURES="$FX" ROOT="$ROOT" node run.mjs
