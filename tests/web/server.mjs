// A tiny static file server for the browser tests, with HTTP Range support.
//   /pkg/...              the built package (repo root pkg/)
//   /tests/web/...        test pages
//   /fx/NAME/...          fixture folders (FIXTURES dir), Range supported
//   /norange/NAME/...     the same files, Range ignored (200 + whole body): the streamed fallback
//   /slow/NAME/...        the same files, each response delayed (abort-while-loading tests)
// Usage: node server.mjs ROOT FIXTURES [PORT]   (prints "listening PORT")
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const [root, fixtures, portArg] = process.argv.slice(2);
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".wasm": "application/wasm", ".json": "application/json" };

export function startServer(root, fixtures, port = 0) {
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://localhost");
      let p = decodeURIComponent(url.pathname);
      let file;
      let ranges = true;
      let delay = 0;
      const m = p.match(/^\/(fx|norange|slow)\/(.*)$/);
      if (m) {
        file = path.join(fixtures, m[2]);
        ranges = m[1] !== "norange";
        delay = m[1] === "slow" ? 300 : 0;
      } else {
        file = path.join(root, p);
      }
      const base = m ? fixtures : root;
      if (!path.resolve(file).startsWith(path.resolve(base))) { res.writeHead(403).end(); return; }
      let st;
      try { st = fs.statSync(file); } catch { res.writeHead(404, { "Content-Type": "text/plain" }).end("not found"); return; }
      if (st.isDirectory()) { res.writeHead(404).end(); return; }
      if (delay) await new Promise((r) => setTimeout(r, delay));
      const headers = {
        "Content-Type": TYPES[path.extname(file)] || "application/octet-stream",
        "Cache-Control": "no-store",
      };
      if (ranges) headers["Accept-Ranges"] = "bytes";
      const r = ranges && req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
      if (r) {
        const start = Number(r[1]);
        const end = r[2] === "" ? st.size - 1 : Math.min(Number(r[2]), st.size - 1);
        if (start >= st.size || end < start) {
          res.writeHead(416, { ...headers, "Content-Range": `bytes */${st.size}` }).end();
          return;
        }
        res.writeHead(206, { ...headers, "Content-Range": `bytes ${start}-${end}/${st.size}`, "Content-Length": end - start + 1 });
        if (req.method === "HEAD") { res.end(); return; }
        fs.createReadStream(file, { start, end }).pipe(res);
        return;
      }
      res.writeHead(200, { ...headers, "Content-Length": st.size });
      if (req.method === "HEAD") { res.end(); return; }
      fs.createReadStream(file).pipe(res);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

if (root && fixtures) {
  const s = await startServer(root, fixtures, Number(portArg || 0));
  console.log(`listening ${s.address().port}`);
}
