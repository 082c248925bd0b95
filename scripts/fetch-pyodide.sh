#!/usr/bin/env bash
# Pyodide (CPython compiled to WebAssembly) for the chat page's code interpreter, from the
# `pyodide` npm package at a pinned version, checked against a pinned sha512, unpacked into a
# cache folder outside the clone. scripts/serve.mjs serves that folder at /pyodide/ (our own
# origin: the page never loads Python from a CDN). Only the core runtime is kept: no package
# wheels, so `loadPackage`/micropip have nothing to install (and the sandbox forbids them anyway).
#
#   scripts/fetch-pyodide.sh          # prints the folder (installs it first when missing)
#   QWEN_PYODIDE_DIR=DIR scripts/fetch-pyodide.sh   # another cache folder
#
# Pyodide is MPL-2.0 (https://github.com/pyodide/pyodide); its files are served unchanged.
set -euo pipefail
VERSION=314.0.8
# `npm view pyodide@$VERSION dist.integrity`: the tarball must be exactly this one.
INTEGRITY=sha512-74Wq1kXOC+CCEzAfxuRAO701nAcCMLjf8NrwvWpu8S41dVMXwXmLQ05dYB+F4e46AdnGo0oq7YHSVUpHsoarLQ==
# The runtime's files: the loader (an ES module), the Emscripten module, the wasm, the standard
# library and the lock file the loader reads at start.
FILES="pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json package.json"

DIR=${QWEN_PYODIDE_DIR:-$HOME/.cache/qwen-webgpu/pyodide/$VERSION}
complete() { for f in $FILES; do [ -s "$DIR/$f" ] || return 1; done; }
if complete; then echo "$DIR"; exit 0; fi

command -v npm >/dev/null && command -v node >/dev/null || { echo "fetch-pyodide: node and npm are not installed (apt-get install -y nodejs npm)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "pyodide@$VERSION" >/dev/null) || { echo "fetch-pyodide: npm pack pyodide@$VERSION failed" >&2; exit 1; }
TGZ="$TMP/pyodide-$VERSION.tgz"
[ -f "$TGZ" ] || { echo "fetch-pyodide: npm pack made no $TGZ" >&2; exit 1; }
GOT=$(node -e 'const c = require("crypto"), fs = require("fs"); process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$TGZ")
[ "$GOT" = "$INTEGRITY" ] || { echo "fetch-pyodide: pyodide-$VERSION.tgz has $GOT, expected $INTEGRITY" >&2; exit 1; }
mkdir -p "$TMP/x"
tar -xzf "$TGZ" -C "$TMP/x"
grep -q "\"version\": \"$VERSION\"" "$TMP/x/package/package.json" || { echo "fetch-pyodide: the tarball is not pyodide $VERSION" >&2; exit 1; }
mkdir -p "$DIR.part"
for f in $FILES; do cp "$TMP/x/package/$f" "$DIR.part/$f"; done
rm -rf "$DIR"
mv "$DIR.part" "$DIR"
complete || { echo "fetch-pyodide: $DIR is incomplete" >&2; exit 1; }
echo "$DIR"
