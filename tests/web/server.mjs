// A tiny static file server for the browser tests, with HTTP Range support.
//   /pkg/...              the built package (repo root pkg/)
//   /tests/web/...        test pages
//   /fx/NAME/...          fixture folders (FIXTURES dir), Range supported
//   /norange/NAME/...     the same files, Range ignored (200 + whole body): the streamed fallback
//   /rangeonce/NAME/...   the same files, Range honoured only from byte 0 (later ranges: 200 + whole body)
//   /slow/NAME/...        the same files, each response delayed (abort-while-loading tests)
//   /endless/NAME/...     an endless body (no Content-Length) for every file: size caps
// `server.counts` counts, per path, the responses that sent a whole file (200).
// Paths are checked against their folder with a separator (`/fx/..%2ffx-secret/` is refused);
// a file that cannot be opened or read is an HTTP error (or a closed response), never a crash.
// Usage: node server.mjs ROOT FIXTURES [PORT]   (prints "listening PORT")
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const [root, fixtures, portArg] = process.argv.slice(2);
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".wasm": "application/wasm", ".json": "application/json" };

/** `file` is `dir` or inside it (a path prefix ends at a separator). */
export const inside = (file, dir) => {
  const f = path.resolve(file), d = path.resolve(dir);
  return f === d || f.startsWith(d.endsWith(path.sep) ? d : d + path.sep);
};

export function startServer(root, fixtures, port = 0) {
  const counts = new Map();
  const server = http.createServer(async (req, res) => {
    let fd = null;
    try {
      const url = new URL(req.url, "http://localhost");
      let p = decodeURIComponent(url.pathname);
      let file;
      let ranges = true;
      let delay = 0;
      const m = p.match(/^\/(fx|norange|slow|rangeonce|endless)\/(.*)$/);
      if (m) {
        file = path.join(fixtures, m[2]);
        ranges = m[1] !== "norange";
        delay = m[1] === "slow" ? 300 : 0;
      } else {
        file = path.join(root, p);
      }
      const base = m ? fixtures : root;
      if (!inside(file, base)) { res.writeHead(403).end(); return; }
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
        res.writeHead(e.code === "ENOENT" || e.code === "ENOTDIR" ? 404 : 403, { "Content-Type": "text/plain" }).end(`cannot open (${e.code})`);
        return;
      }
      const st = fs.fstatSync(fd);
      if (!st.isFile()) { res.writeHead(404).end(); return; }
      const headers = {
        "Content-Type": TYPES[path.extname(file)] || "application/octet-stream",
        "Cache-Control": "no-store",
      };
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
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

if (root && fixtures) {
  const s = await startServer(root, fixtures, Number(portArg || 0));
  console.log(`listening ${s.address().port}`);
}
