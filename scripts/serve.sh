#!/usr/bin/env bash
# Serve the chat page (www/) and the built package (pkg/) on localhost; no server-side code.
# Builds pkg/ first when it is missing or older than the Rust/JS sources. Installs nothing by hand.
#
#   scripts/serve.sh                  # http://127.0.0.1:8080/www/
#   PORT=9000 scripts/serve.sh        # another port (PORT=0: any free one)
#   MODELS=/path/to/dir scripts/serve.sh   # also serve DIR at /models/ (Range requests), so a
#                                          # checkpoint folder DIR/NAME loads from URL /models/NAME/
#   HOST=0.0.0.0 scripts/serve.sh     # listen beyond localhost (WebGPU then needs https)
#   ALLOWED_HOSTS=box.lan scripts/serve.sh # Host names accepted besides localhost/127.0.0.1/[::1]
#   NO_PYODIDE=1 scripts/serve.sh     # don't install/serve Pyodide (the page then has no Python tool)
#
# Pyodide (the page's Python code interpreter) comes from the pinned `pyodide` npm package,
# installed once into ~/.cache by scripts/fetch-pyodide.sh and served at /pyodide/.
#
# The server is scripts/serve.mjs; its header lists the rules: Host header checked (DNS
# rebinding), symlinks followed only to files inside the folder served (for MODELS, also the
# blobs/ of a Hugging Face cache repo folder MODELS is in), a strict Content-Security-Policy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}
command -v node >/dev/null || { echo "serve: node is not installed (apt-get install -y nodejs)" >&2; exit 1; }

. scripts/browser-prereqs.sh
ensure_pkg

PYODIDE=""
if [ -z "${NO_PYODIDE:-}" ]; then
  PYODIDE=$(scripts/fetch-pyodide.sh) || { echo "serve: scripts/fetch-pyodide.sh failed: the page's Python tool will be off" >&2; PYODIDE=""; }
fi

export SERVE_PYODIDE=$PYODIDE
export SERVE_ROOT=$ROOT SERVE_PORT=${PORT:-8080} SERVE_HOST=${HOST:-127.0.0.1} SERVE_MODELS=${MODELS:-} SERVE_ALLOWED_HOSTS=${ALLOWED_HOSTS:-}
exec node scripts/serve.mjs
