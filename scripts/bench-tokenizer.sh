#!/usr/bin/env bash
# Tokenizer encode throughput: ours (both formats) and Python tiktoken on the same ~1 MB text.
#
#   bash scripts/bench-tokenizer.sh [MB]
#
# Needs the vocabulary (scripts/fetch-vocab.sh, run here if missing) and `pip install tiktoken`
# for the reference line. Single-threaded on both sides; the best of 3 runs is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-1}"
export QWEN_VOCAB_DIR="${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}"
bash scripts/fetch-vocab.sh >/dev/null

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cargo run --quiet --release --example tokenizer_bench -- --mb "$MB" --dump-text "$TMP/bench.txt"

PY=python3
command -v "$PY" >/dev/null 2>&1 || PY=python
if ! "$PY" -c "import tiktoken" 2>/dev/null; then
    echo "python tiktoken not installed (pip install tiktoken): reference skipped"
    exit 0
fi
"$PY" - "$TMP/bench.txt" <<'PYEOF'
import os, sys, time, unicodedata
sys.path.insert(0, "scripts")
from make_tokenizer_golden import load_encoding
import tiktoken

enc = load_encoding(os.path.join(os.environ["QWEN_VOCAB_DIR"], "qwen.tiktoken"))
with open(sys.argv[1], "rb") as f:
    raw = f.read()
text = raw.decode("utf-8")
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    ids = enc.encode_ordinary(unicodedata.normalize("NFC", text))
    best = min(best, time.perf_counter() - t0)
h = 0xCBF29CE484222325
for i in ids:
    for b in i.to_bytes(4, "little"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
print(f"python tiktoken {tiktoken.__version__:<7} encode {len(raw) / best / 1e6:7.2f} MB/s {len(ids) / best:10.0f} tokens/s  ({len(ids)} tokens, hash {h:016x}; NFC + encode_ordinary)")
PYEOF
