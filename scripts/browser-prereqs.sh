# Shared set-up for the browser scripts (sourced, not run): scripts/serve.sh,
# tests/web/run.sh, tests/www/run.sh. Expects ROOT (the repo) to be set.

# Rebuild pkg/ when it is missing, asked for (REBUILD_PKG=1), or older than any source.
ensure_pkg() {
  if [ -n "${REBUILD_PKG:-}" ] || [ ! -f "$ROOT/pkg/qwen_webgpu_bg.wasm" ] || [ ! -f "$ROOT/pkg/index.js" ] || \
     [ -n "$(find "$ROOT/src" "$ROOT/js" "$ROOT/shaders" "$ROOT/Cargo.toml" "$ROOT/scripts/build-pkg.sh" -newer "$ROOT/pkg/qwen_webgpu_bg.wasm" -type f 2>/dev/null | head -n1)" ]; then
    echo "building the package (scripts/build-pkg.sh)"
    "$ROOT/scripts/build-pkg.sh"
  fi
}

# Node, Debian's Chromium and playwright-core (from tests/web's lockfile), installed if missing.
ensure_browser() {
  command -v node >/dev/null || { echo "node is not installed (apt-get install -y nodejs npm)" >&2; return 1; }
  if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
    echo "installing chromium"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y chromium || { $sudo apt-get update && $sudo apt-get install -y chromium; } || return 1
  fi
  if [ ! -d "$ROOT/tests/web/node_modules/playwright-core" ]; then
    (cd "$ROOT/tests/web" && npm ci --no-audit --no-fund) || return 1
  fi
}
