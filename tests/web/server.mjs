// A tiny static file server for the browser tests, with HTTP Range support.
//   /pkg/...              the built package (repo root pkg/)
//   /tests/web/...        test pages
//   /fx/NAME/...          fixture folders (FIXTURES dir), Range supported
//   /norange/NAME/...     the same files, Range ignored (200 + whole body): the streamed fallback
//   /rangeonce/NAME/...   the same files, Range honoured only from byte 0 (later ranges: 200 + whole body)
//   /slow/NAME/...        the same files, each response delayed (abort-while-loading tests)
//   /endless/NAME/...     an endless body (no Content-Length) for every file: size caps
//   /drop/NAME/...        the same files; the first response per path longer than DROP_AFTER
//                         bytes is cut (connection destroyed) after DROP_AFTER bytes of body
//   /flaky/NAME/...       the first request per path is answered 503, the second 429 (both
//                         Retry-After: 0), then the file
//   /gzip/NAME/...        .json and .safetensors sent gzipped (Content-Encoding: gzip, the
//                         encoded Content-Length), Range ignored, as a compressing server does
//   /redir/NAME/...       302 to /fx/NAME/... (same origin)
//   /xredir/NAME/...      302 to http://localhost:PORT/cors/NAME/... (another origin)
//   /cors/NAME/...        for another origin: Access-Control-Allow-Origin and
//                         Access-Control-Expose-Headers: Content-Range, Content-Encoding
//   /corshidden/NAME/...  Access-Control-Allow-Origin only: Content-Range is not exposed
// Host header: only localhost, 127.0.0.1 or [::1] with this server's port (else 421), as
// scripts/serve.mjs checks it (DNS rebinding).
// `server.counts` counts, per path, the responses that sent a whole file (200); `server.log`
// lists fixture requests ({ path, range, status, sent, dropped }); `server.maxInFlight` is the
// most fixture responses in progress at once; `server.reset()` clears the log, the counter,
// and which paths were dropped or failed already.
// Paths are checked against their folder with a separator (`/fx/..%2ffx-secret/` is refused);
// a file that cannot be opened or read is an HTTP error (or a closed response), never a crash.
// Usage: node server.mjs ROOT FIXTURES [PORT]   (prints "listening PORT")
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const [root, fixtures, portArg] = process.argv.slice(2);
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".wasm": "application/wasm", ".json": "application/json" };

/** `file` is `dir` or inside it (a path prefix ends at a separator). */
export const inside = (file, dir) => {
  const f = path.resolve(file), d = path.resolve(dir);
  return f === d || f.startsWith(d.endsWith(path.sep) ? d : d + path.sep);
};

/** Bytes of body the first long response per path under /drop/ sends before the cut. */
export const DROP_AFTER = 3000;

/** Host names a request may name (with this server's port), as scripts/serve.mjs. */
const HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

export function startServer(root, fixtures, port = 0) {
  const counts = new Map();
  const log = [];
  const dropped = new Set();
  const failed = new Map();
  let inFlight = 0;
  const server = http.createServer(async (req, res) => {
    let fd = null;
    try {
      const own = server.address().port;
      const h = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(String(req.headers.host || "").toLowerCase());
      if (!h || !HOSTS.has(h[1]) || Number(h[2] || 80) !== own) {
        res.writeHead(421, { "Content-Type": "text/plain" }).end("misdirected request: unknown Host\n");
        return;
      }
      const url = new URL(req.url, "http://localhost");
      let p = decodeURIComponent(url.pathname);
      let file;
      let ranges = true;
      let delay = 0;
      const m = p.match(/^\/(fx|norange|slow|rangeonce|endless|drop|flaky|gzip|redir|xredir|cors|corshidden)\/(.*)$/);
      const kind = m?.[1];
      const cors = {};
      if (kind === "cors" || kind === "corshidden" || kind === "xredir") {
        cors["Access-Control-Allow-Origin"] = "*";
        if (kind === "cors") cors["Access-Control-Expose-Headers"] = "Content-Range, Content-Encoding";
        if (req.method === "OPTIONS") {
          res.writeHead(204, { ...cors, "Access-Control-Allow-Headers": "Range", "Access-Control-Allow-Methods": "GET, HEAD" }).end();
          return;
        }
      }
      if (m) {
        file = path.join(fixtures, m[2]);
        ranges = kind !== "norange" && kind !== "gzip";
        delay = kind === "slow" ? 300 : 0;
      } else {
        file = path.join(root, p);
      }
      const base = m ? fixtures : root;
      if (!inside(file, base)) { res.writeHead(403).end(); return; }
      const entry = m ? { path: url.pathname, range: req.headers.range || null, status: 0, sent: 0, dropped: false } : null;
      if (entry) {
        log.push(entry);
        inFlight++;
        server.maxInFlight = Math.max(server.maxInFlight, inFlight);
        res.on("close", () => { inFlight--; });
        const w = res.writeHead.bind(res);
        res.writeHead = (status, ...rest) => { entry.status = status; return w(status, ...rest); };
      }
      if (kind === "redir" || kind === "xredir") {
        const to = kind === "redir" ? `/fx/${m[2]}` : `http://localhost:${own}/cors/${m[2]}`;
        res.writeHead(302, { ...cors, Location: to, "Cache-Control": "no-store" }).end();
        return;
      }
      if (kind === "flaky") {
        const n = failed.get(url.pathname) || 0;
        if (n < 2) {
          failed.set(url.pathname, n + 1);
          res.writeHead(n === 0 ? 503 : 429, { "Retry-After": "0", "Cache-Control": "no-store" }).end("try again");
          return;
        }
      }
      if (m && m[1] === "endless") {
        res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => { while (!res.destroyed && res.write(chunk)); };
        res.on("drain", pump);
        req.on("close", () => res.destroy());
        pump();
        return;
      }
      if (delay) await new Promise((r) => setTimeout(r, delay));
      try {
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch (e) {
        res.writeHead(e.code === "ENOENT" || e.code === "ENOTDIR" ? 404 : 403, { "Content-Type": "text/plain", ...cors }).end(`cannot open (${e.code})`);
        return;
      }
      const st = fs.fstatSync(fd);
      if (!st.isFile()) { res.writeHead(404, cors).end(); return; }
      const headers = {
        "Content-Type": TYPES[path.extname(file)] || "application/octet-stream",
        "Cache-Control": "no-store",
        ...cors,
      };
      if (kind === "gzip" && /\.(json|safetensors)$/.test(file) && /\bgzip\b/.test(req.headers["accept-encoding"] || "")) {
        const gz = zlib.gzipSync(fs.readFileSync(fd));
        res.writeHead(200, { ...headers, "Content-Encoding": "gzip", "Content-Length": gz.length, Vary: "Accept-Encoding" });
        counts.set(url.pathname, (counts.get(url.pathname) || 0) + 1);
        if (req.method === "HEAD") res.end(); else res.end(gz);
        return;
      }
      if (ranges) headers["Accept-Ranges"] = "bytes";
      let r = ranges && req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
      if (r && m && m[1] === "rangeonce" && r[1] !== "0") r = null;
      let start = 0, end = st.size - 1;
      if (r) {
        start = Number(r[1]);
        end = r[2] === "" ? st.size - 1 : Math.min(Number(r[2]), st.size - 1);
        if (start >= st.size || end < start) {
          res.writeHead(416, { ...headers, "Content-Range": `bytes */${st.size}` }).end();
          return;
        }
        res.writeHead(206, { ...headers, "Content-Range": `bytes ${start}-${end}/${st.size}`, "Content-Length": end - start + 1 });
      } else {
        res.writeHead(200, { ...headers, "Content-Length": st.size });
        if (req.method !== "HEAD") counts.set(url.pathname, (counts.get(url.pathname) || 0) + 1);
      }
      if (req.method === "HEAD" || st.size === 0) { res.end(); return; }
      if (kind === "drop" && end - start + 1 > DROP_AFTER && !dropped.has(url.pathname)) {
        // Send DROP_AFTER bytes, let them reach the socket, then cut the connection.
        dropped.add(url.pathname);
        const part = Buffer.alloc(DROP_AFTER);
        fs.readSync(fd, part, 0, DROP_AFTER, start);
        entry.dropped = true;
        entry.sent = DROP_AFTER;
        res.write(part, () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      if (entry) entry.sent = end - start + 1;
      const stream = fs.createReadStream(null, { fd, start, end, autoClose: true });
      fd = null; // the stream owns it
      stream.on("error", (e) => res.destroy(e));
      res.on("close", () => stream.destroy());
      stream.pipe(res);
    } catch (e) {
      if (!res.headersSent) res.writeHead(500).end(String(e)); else res.destroy();
    } finally {
      if (fd !== null) { try { fs.closeSync(fd); } catch { /* ignore */ } }
    }
  });
  server.counts = counts;
  server.log = log;
  server.maxInFlight = 0;
  server.reset = () => { log.length = 0; server.maxInFlight = 0; dropped.clear(); failed.clear(); };
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

if (root && fixtures) {
  const s = await startServer(root, fixtures, Number(portArg || 0));
  console.log(`listening ${s.address().port}`);
}
