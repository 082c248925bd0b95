#!/usr/bin/env bash
# Serve the chat page (www/) and the built package (pkg/) on localhost; no server-side code.
# Builds pkg/ first when it is missing or older than the Rust/JS sources. Installs nothing by hand.
#
#   scripts/serve.sh                  # http://127.0.0.1:8080/www/
#   PORT=9000 scripts/serve.sh        # another port (PORT=0: any free one)
#   MODELS=/path/to/dir scripts/serve.sh   # also serve DIR at /models/ (Range requests), so a
#                                          # checkpoint folder DIR/NAME loads from URL /models/NAME/
#   HOST=0.0.0.0 scripts/serve.sh     # listen beyond localhost (WebGPU then needs https)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen-webgpu/target}
command -v node >/dev/null || { echo "serve: node is not installed (apt-get install -y nodejs)" >&2; exit 1; }

. scripts/browser-prereqs.sh
ensure_pkg

export SERVE_ROOT=$ROOT SERVE_PORT=${PORT:-8080} SERVE_HOST=${HOST:-127.0.0.1} SERVE_MODELS=${MODELS:-}
exec node --input-type=module -e '
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
const root = process.env.SERVE_ROOT, models = process.env.SERVE_MODELS;
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json", ".md": "text/plain; charset=utf-8",
  ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon" };
const server = http.createServer((req, res) => {
  try {
    const p = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (p === "/" || p === "/www") { res.writeHead(302, { Location: "/www/" }).end(); return; }
    let base, rel;
    if (p.startsWith("/www/")) { base = path.join(root, "www"); rel = p.slice(5) || "index.html"; }
    else if (p.startsWith("/pkg/")) { base = path.join(root, "pkg"); rel = p.slice(5); }
    else if (models && p.startsWith("/models/")) { base = path.resolve(models); rel = p.slice(8); }
    else { res.writeHead(404, { "Content-Type": "text/plain" }).end("not found"); return; }
    const file = path.resolve(base, rel);
    if (file !== base && !file.startsWith(base + path.sep)) { res.writeHead(403).end(); return; }
    let st;
    try { st = fs.statSync(file); } catch { res.writeHead(404, { "Content-Type": "text/plain" }).end("not found"); return; }
    if (!st.isFile()) { res.writeHead(404, { "Content-Type": "text/plain" }).end("not found"); return; }
    const h = { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream", "Accept-Ranges": "bytes",
      "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff" };
    const r = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || "");
    let start = 0, end = st.size - 1, code = 200;
    if (r) {
      start = Number(r[1]); end = r[2] === "" ? st.size - 1 : Math.min(Number(r[2]), st.size - 1);
      if (start >= st.size || end < start) { res.writeHead(416, { ...h, "Content-Range": `bytes */${st.size}` }).end(); return; }
      code = 206; h["Content-Range"] = `bytes ${start}-${end}/${st.size}`;
    }
    h["Content-Length"] = st.size === 0 ? 0 : end - start + 1;
    res.writeHead(code, h);
    if (req.method === "HEAD" || st.size === 0) { res.end(); return; }
    fs.createReadStream(file, { start, end }).pipe(res);
  } catch (e) { res.writeHead(500, { "Content-Type": "text/plain" }).end(String(e)); }
});
server.listen(Number(process.env.SERVE_PORT), process.env.SERVE_HOST, () => {
  const a = server.address();
  const host = a.address === "0.0.0.0" ? "127.0.0.1" : a.address;
  console.log(`Qwen chat: http://${host}:${a.port}/www/` + (models ? `  (models: http://${host}:${a.port}/models/)` : ""));
  console.log("Ctrl+C stops the server.");
});
'
