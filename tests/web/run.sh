#!/usr/bin/env bash
# Browser tests: build what is missing (pkg/, the CLI, fixtures), then run tests/web/run.mjs in
# headless Chromium. Prints "web: N passed, M failed" last; exits non-zero on any failure.
#   tests/web/run.sh            # FILTER=substring runs a subset; REBUILD_PKG=1 forces pkg/
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}
fail() { echo "$*" >&2; echo "web: 0 passed, 1 failed"; exit 1; }

. "$ROOT/scripts/browser-prereqs.sh"
ensure_browser || fail "web: cannot set up node, chromium and playwright-core"
ensure_pkg || fail "web: scripts/build-pkg.sh failed"

# The native CLI and the fixture generator (the reference the browser must match).
(cd "$ROOT" && cargo build --bin qwen-webgpu --example make_fixture) || fail "web: cargo build failed"
CLI="$CARGO_TARGET_DIR/debug/qwen-webgpu"
MK="$CARGO_TARGET_DIR/debug/examples/make_fixture"

FX="$HERE/.fixtures"
rm -rf "$FX"
mkdir -p "$FX"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
"$MK" "$FX/tiny" --vocab 301 --hidden 64 --layers 2 --ff 96 --heads 4 --kv-heads 2 --seed 1 >/dev/null
"$MK" "$FX/sharded" --vocab 301 --hidden 64 --layers 2 --ff 96 --heads 4 --kv-heads 2 --seed 7 --shards 2 --tie >/dev/null
ids() { "$CLI" generate --model "$1" --prompt-ids "$2" --max-new-tokens "$3" --temperature 0 --print-ids 2>/dev/null; }
TINY=$(ids "$FX/tiny" 1,2,3 16) || fail "web: the CLI failed on the tiny fixture"
SHARDED=$(ids "$FX/sharded" 5,6,7,8 12) || fail "web: the CLI failed on the sharded fixture"
QUANT=$("$CLI" generate --model "$FX/tiny" --prompt-ids 1,2,3 --max-new-tokens 16 --temperature 0 --print-ids \
  --weights q4 --kv-cache q8 2>/dev/null) || fail "web: the CLI failed with --weights q4 --kv-cache q8"
# Window attention (tests/web/longchat.mjs): every layer sees its last 4 keys.
WINDOW=$("$CLI" generate --model "$FX/tiny" --prompt-ids 1,2,3 --max-new-tokens 16 --temperature 0 --print-ids \
  --window 4 2>/dev/null) || fail "web: the CLI failed with --window 4"
# A second turn: the first turn's prompt and reply, then new ids (the browser reuses its cache).
TURN2=$(ids "$FX/tiny" "1,2,3,$TINY,5,6,7" 16) || fail "web: the CLI failed on the second turn"
# Sampling (temperature, top-k, top-p, penalty, seed): the browser's GPU draws the CLI's ids.
SAMPLED=$("$CLI" generate --model "$FX/tiny" --prompt-ids 1,2,3 --max-new-tokens 16 --temperature 0.9 --top-k 40 \
  --top-p 0.9 --repetition-penalty 1.2 --seed 42 --print-ids 2>/dev/null) || fail "web: the CLI failed to sample"
# Pre-quantized copies (qwen-webgpu quantize): one file, and shards with an index.
"$CLI" quantize --model "$FX/tiny" --out "$FX/tiny-q4" --format q4 >/dev/null || fail "web: quantize failed"
"$CLI" quantize --model "$FX/tiny" --out "$FX/tiny-q4-sharded" --format q4 --max-shard-bytes 20000 >/dev/null \
  || fail "web: sharded quantize failed"
[ -f "$FX/tiny-q4-sharded/model.safetensors.index.json" ] || fail "web: the sharded quantize wrote one file"
PREQ=$(ids "$FX/tiny-q4" 1,2,3 16) || fail "web: the CLI failed on the pre-quantized fixture"
TINYQ4=$("$CLI" generate --model "$FX/tiny" --prompt-ids 1,2,3 --max-new-tokens 16 --temperature 0 --print-ids \
  --weights q4 2>/dev/null) || fail "web: the CLI failed with --weights q4"
[ "$PREQ" = "$TINYQ4" ] || fail "web: pre-quantized ids $PREQ differ from --weights q4 ids $TINYQ4"
# Tokenizer fixture: the real Qwen vocabulary with a tiny model (hidden 32).
VOCAB_DIR=${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}
if [ -f "$VOCAB_DIR/tokenizer.json" ]; then
  "$MK" "$FX/vocab" --vocab 151936 --hidden 32 --layers 1 --ff 64 --heads 2 --kv-heads 1 --seed 3 --tie >/dev/null
  cp "$VOCAB_DIR/tokenizer.json" "$FX/vocab/"
  VOCAB=$(ids "$FX/vocab" 9707,11,1879 8) || fail "web: the CLI failed on the vocab fixture"
  VOCABS=$("$CLI" generate --model "$FX/vocab" --prompt-ids 9707,11,1879 --max-new-tokens 8 --temperature 1.1 \
    --top-p 0.95 --seed 9 --print-ids 2>/dev/null) || fail "web: the CLI failed to sample on the vocab fixture"
else
  echo "web: no $VOCAB_DIR/tokenizer.json (scripts/fetch-vocab.sh): tokenizer tests will be skipped" >&2
  VOCAB=""
  VOCABS=""
fi
# GGUF fixtures (tests/web/gguf.mjs): the vocab model through llama.cpp's own converter and
# quantizer (scripts/gguf-tools.sh, cached in ~/.cache: set-up is slow only the first time):
# f16, and Q4_0 (Q4_0 matrices, the tied embedding Q8_0, norms and biases F32). The CLI's ids
# on each file are the reference. QWEN_SKIP_GGUF=1 skips them.
GGUFQ4=""
GGUFF16=""
if [ -n "$VOCAB" ] && [ -x "$ROOT/scripts/gguf-tools.sh" ] && [ -z "${QWEN_SKIP_GGUF:-}" ]; then
  GT="$ROOT/scripts/gguf-tools.sh"
  if "$GT" setup >"$FX/gguf-tools.log" 2>&1; then
    mkdir -p "$FX/gguf-src" "$FX/gguf"
    for f in config.json model.safetensors tokenizer.json; do ln -s "$FX/vocab/$f" "$FX/gguf-src/$f"; done
    cp "$("$GT" path tokenizer_config)" "$FX/gguf-src/tokenizer_config.json"
    "$GT" convert "$FX/gguf-src" "$FX/gguf/vocab-f16.gguf" f16 2>>"$FX/gguf-tools.log" || fail "web: gguf-tools convert failed"
    "$GT" quantize "$FX/gguf/vocab-f16.gguf" "$FX/gguf/vocab-q4_0.gguf" Q4_0 2>>"$FX/gguf-tools.log" \
      || fail "web: gguf-tools quantize failed"
    rm -rf "$FX/gguf-src"
    GGUFQ4=$(ids "$FX/gguf/vocab-q4_0.gguf" 9707,11,1879 8) || fail "web: the CLI failed on the Q4_0 GGUF"
    GGUFF16=$(ids "$FX/gguf/vocab-f16.gguf" 9707,11,1879 8) || fail "web: the CLI failed on the f16 GGUF"
  else
    # Outside CI a machine without the tools may skip them; CI (scripts/test.sh set them up
    # first) must run them.
    [ -z "${CI:-}" ] || fail "web: scripts/gguf-tools.sh setup failed ($FX/gguf-tools.log)"
    echo "web: scripts/gguf-tools.sh setup failed ($FX/gguf-tools.log): GGUF tests will be skipped" >&2
  fi
fi
# The scripted checkpoint of tests/web/agent.mjs (a model whose greedy replies are fixed: a
# tool call, the answer once a tool result is in the prompt, a text for stop strings):
# examples/make_scripted.rs over the real vocabulary and Qwen3's real tokenizer_config.json
# (scripts/gguf-tools.sh fetches it). Without them the agent tests are skipped (not in CI).
TOKCFG=""
[ -x "$ROOT/scripts/gguf-tools.sh" ] && TOKCFG=$("$ROOT/scripts/gguf-tools.sh" path tokenizer_config 2>/dev/null || true)
if [ -n "$VOCAB" ] && [ -n "$TOKCFG" ] && [ -f "$TOKCFG" ]; then
  (cd "$ROOT" && cargo build --example make_scripted) || fail "web: cargo build --example make_scripted failed"
  "$CARGO_TARGET_DIR/debug/examples/make_scripted" "$FX/scripted" --vocab-dir "$VOCAB_DIR" --tokenizer-config "$TOKCFG" \
    >"$FX/scripted.log" || fail "web: make_scripted failed ($FX/scripted.log)"
else
  [ -z "${CI:-}" ] || fail "web: no vocabulary or Qwen3 tokenizer_config.json (scripts/gguf-tools.sh setup) for the scripted checkpoint"
  echo "web: no vocabulary or Qwen3 tokenizer_config.json: the agent tests will be skipped" >&2
fi
# Corrupt copies: a truncated checkpoint and a header of garbage.
mkdir -p "$FX/truncated" "$FX/garbage"
cp "$FX/tiny/config.json" "$FX/truncated/"; head -c 100000 "$FX/tiny/model.safetensors" > "$FX/truncated/model.safetensors"
cp "$FX/tiny/config.json" "$FX/garbage/"; head -c 4096 /dev/urandom > "$FX/garbage/model.safetensors"
printf '{"tiny":[%s],"sharded":[%s],"quant":[%s],"prequant":[%s],"vocab":[%s],"sampled":[%s],"vocabSampled":[%s],"turn2":[%s],"ggufQ4":[%s],"ggufF16":[%s],"window":[%s]}\n' \
  "$TINY" "$SHARDED" "$QUANT" "$PREQ" "$VOCAB" "$SAMPLED" "$VOCABS" "$TURN2" "$GGUFQ4" "$GGUFF16" "$WINDOW" > "$FX/expected.json"

cd "$HERE"
FIXTURES="$FX" node run.mjs
