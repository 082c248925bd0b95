// The static server of scripts/serve.sh (run through it: it builds pkg/ first). Serves
//   /www/     the chat page (www/)         /pkg/     the built package (pkg/)
//   /models/  SERVE_MODELS, if set (HTTP Range supported)
//   /pyodide/ SERVE_PYODIDE, if set: the Pyodide runtime of scripts/fetch-pyodide.sh (the chat
//             page's Python sandbox loads it from here, our own origin, never from a CDN)
// Env: SERVE_ROOT (the repo), SERVE_PORT (0: any free port), SERVE_HOST (listen address),
// SERVE_MODELS (a folder or empty), SERVE_ALLOWED_HOSTS (extra Host names, comma-separated),
// SERVE_PYODIDE (a folder or empty).
//
// Safety rules (tests/www/run.mjs checks each):
// - Host header: only localhost, 127.0.0.1, [::1] (plus SERVE_HOST when it is a specific address,
//   plus SERVE_ALLOWED_HOSTS), each with the served port; anything else gets 421, so a DNS-rebinding
//   page cannot read www/, pkg/ or the models.
// - Symlinks: a path is resolved with realpath and served only when the real file lies inside the
//   real root it was asked under (www/, pkg/, MODELS). For MODELS one more place is allowed: when
//   MODELS is, or is inside, a Hugging Face cache repo folder (…/models--ORG--NAME/), that folder's
//   blobs/ (snapshots/REV/FILE are links to ../../blobs/HASH). Anything else: 403.
// - Only regular files are served (a FIFO, a socket, a directory: 404), opened without blocking;
//   a file that cannot be opened or read answers an error (or closes the response), never kills
//   the server.
// - Content-Security-Policy on every response (the same policy as the pages' <meta>, plus
//   frame-ancestors): scripts, workers and styles only from this origin, wasm allowed,
//   connections to this origin and to any https: host (the model URL is typed by the user).
// - The Python sandbox's worker script (/www/python-worker.js) gets SANDBOX_CSP instead: a
//   dedicated worker runs under the policy of its own script's response (not the page's), and
//   this one forbids every connection (connect-src 'none'), eval, nested workers and scripts
//   from anywhere but this origin; the worker gets Pyodide's files as bytes from the page.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const root = process.env.SERVE_ROOT || path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const models = process.env.SERVE_MODELS || "";
const listenHost = process.env.SERVE_HOST || "127.0.0.1";

export const CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; " +
  "img-src 'self' data:; connect-src 'self' https: http://localhost:* http://127.0.0.1:*; " +
  "base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors 'none'";

/** The policy of the Python sandbox's worker (www/python-worker.js): no connection at all. */
export const SANDBOX_CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'none'; worker-src 'none'; " +
  "base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors 'none'";
const SANDBOX_WORKER = "www/python-worker.js"; // by its real path, however the URL spells it
const pyodideDir = process.env.SERVE_PYODIDE || "";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json", ".md": "text/plain; charset=utf-8",
  ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon" };

const real = (p) => { try { return fs.realpathSync(p); } catch { return null; } };
const inside = (file, dir) => file === dir || file.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);

/** The real roots a request under each prefix may end in. */
function roots() {
  const r = { "/www/": [real(path.join(root, "www"))], "/pkg/": [real(path.join(root, "pkg"))] };
  if (pyodideDir) r["/pyodide/"] = [real(pyodideDir)];
  if (models) {
    const m = real(models);
    const list = [m];
    // A Hugging Face cache repo folder above (or at) MODELS: allow its blobs/.
    for (let d = m; d && d !== path.dirname(d); d = path.dirname(d)) {
      if (/^models--[^/]+$/.test(path.basename(d)) && fs.existsSync(path.join(d, "snapshots"))) {
        list.push(real(path.join(d, "blobs")));
        break;
      }
    }
    r["/models/"] = list;
  }
  for (const k of Object.keys(r)) r[k] = r[k].filter(Boolean);
  return r;
}

/** Host names (lower case, without port) a request may name. */
function allowedHosts() {
  const s = new Set(["localhost", "127.0.0.1", "[::1]"]);
  if (listenHost && !["0.0.0.0", "::", "[::]"].includes(listenHost)) s.add(listenHost.includes(":") ? `[${listenHost.replace(/^\[|\]$/g, "")}]` : listenHost.toLowerCase());
  for (const h of (process.env.SERVE_ALLOWED_HOSTS || "").split(",")) if (h.trim()) s.add(h.trim().toLowerCase());
  return s;
}

export function createServer() {
  const hosts = allowedHosts();
  let port = 0;
  const text = (res, code, msg, extra = {}) =>
    res.writeHead(code, { "Content-Type": "text/plain; charset=utf-8", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", ...extra }).end(msg);
  const server = http.createServer((req, res) => {
    let fd = null;
    try {
      // Host check (DNS rebinding): a name we serve, and our port.
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(String(req.headers.host || "").toLowerCase());
      if (!m || !hosts.has(m[1]) || Number(m[2] || 80) !== port) { text(res, 421, "misdirected request: unknown Host\n"); return; }
      if (req.method !== "GET" && req.method !== "HEAD") { text(res, 405, "method not allowed\n", { Allow: "GET, HEAD" }); return; }
      let p;
      try { p = decodeURIComponent(new URL(req.url, "http://x").pathname); } catch { text(res, 400, "bad path\n"); return; }
      if (p.includes("\0")) { text(res, 400, "bad path\n"); return; }
      if (p === "/" || p === "/www") { res.writeHead(302, { Location: "/www/", "Content-Security-Policy": CSP }).end(); return; }
      const prefix = ["/www/", "/pkg/", "/models/", "/pyodide/"].find((x) => p.startsWith(x));
      const allowed = prefix && roots()[prefix];
      if (!allowed || !allowed.length) { text(res, 404, "not found\n"); return; }
      let rel = p.slice(prefix.length);
      if (prefix === "/www/" && (rel === "" || rel.endsWith("/"))) rel += "index.html";
      const base = allowed[0];
      const asked = path.resolve(base, rel);
      if (!inside(asked, base)) { text(res, 403, "forbidden\n"); return; }
      const file = real(asked);
      if (file === null) { text(res, 404, "not found\n"); return; }
      if (!allowed.some((d) => inside(file, d))) { text(res, 403, "forbidden: the link leads outside the served folder\n"); return; }
      // Open first (without blocking: a FIFO must not hang us), then look at what was opened.
      try {
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch (e) {
        text(res, e.code === "ENOENT" ? 404 : 403, e.code === "ENOENT" ? "not found\n" : `cannot read this file (${e.code})\n`);
        return;
      }
      const st = fs.fstatSync(fd);
      if (!st.isFile()) { text(res, 404, "not found\n"); return; }
      const h = { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream", "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": file === real(path.join(root, SANDBOX_WORKER)) ? SANDBOX_CSP : CSP };
      const r = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || "");
      let start = 0, end = st.size - 1, code = 200;
      if (r) {
        start = Number(r[1]); end = r[2] === "" ? st.size - 1 : Math.min(Number(r[2]), st.size - 1);
        if (start >= st.size || end < start) { res.writeHead(416, { ...h, "Content-Range": `bytes */${st.size}` }).end(); return; }
        code = 206; h["Content-Range"] = `bytes ${start}-${end}/${st.size}`;
      }
      h["Content-Length"] = st.size === 0 ? 0 : end - start + 1;
      if (req.method === "HEAD" || st.size === 0) { res.writeHead(code, h).end(); return; }
      // Headers go out with the first chunk, so that a file that fails to read (EIO, EISDIR,
      // EACCES under an odd mount) still gets an HTTP error; a later failure closes the response.
      res.statusCode = code;
      for (const [k, v] of Object.entries(h)) res.setHeader(k, v);
      const stream = fs.createReadStream(null, { fd, start, end, autoClose: true });
      fd = null; // the stream owns it now
      stream.on("error", (e) => {
        if (!res.headersSent) {
          for (const k of ["Content-Length", "Content-Range", "Accept-Ranges"]) res.removeHeader(k);
          text(res, 403, `cannot read this file (${e.code || e.message})\n`);
        } else res.destroy(e);
      });
      stream.pipe(res);
      res.on("close", () => stream.destroy());
    } catch (e) {
      if (!res.headersSent) text(res, 500, String(e)); else res.destroy();
    } finally {
      if (fd !== null) { try { fs.closeSync(fd); } catch { /* ignore */ } }
    }
  });
  server.on("listening", () => { port = server.address().port; });
  server.on("clientError", (e, sock) => { try { sock.end("HTTP/1.1 400 Bad Request\r\n\r\n"); } catch { /* ignore */ } });
  return server;
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(new URL(import.meta.url).pathname)) {
  const server = createServer();
  server.listen(Number(process.env.SERVE_PORT || 0), listenHost, () => {
    const a = server.address();
    const host = a.address === "0.0.0.0" || a.address === "::" ? "127.0.0.1" : a.address.includes(":") ? `[${a.address}]` : a.address;
    console.log(`Qwen chat: http://${host}:${a.port}/www/` + (models ? `  (models: http://${host}:${a.port}/models/)` : ""));
    if (!pyodideDir) console.log("(no Pyodide: the page's Python tool is off; scripts/fetch-pyodide.sh installs it)");
    console.log("Ctrl+C stops the server.");
  });
}
