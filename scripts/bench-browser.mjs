// The benchmark page (www/bench.html) in headless Chromium, for paired runs of two builds in
// one session: each ROOTS entry is a checkout with its pkg/ built (e.g. this one and a git
// worktree of an earlier commit); the runs alternate between them, ROUNDS times, each in a
// fresh browser. A manual measurement, not a test. Prints a markdown table, JSON to --json.
//
//   node scripts/bench-browser.mjs                        # this checkout, the default query
//   ROOTS="before=/tmp/old,after=." ROUNDS=2 node scripts/bench-browser.mjs
//
// Options are environment variables:
//   ROOTS   label=folder pairs (default "this=<repo root>"); each folder serves www/ and pkg/
//   ROUNDS  runs per root, alternated (default 2)
//   QUERY   the bench page's query (default: 2 layers, vocabulary 1000, q4 weights, f32 KV
//           cache, prompts of 4, 16 and 64 tokens, decode 8 tokens at a 128-token cache)
//   JSON    write every report here too
//   CHROMIUM  the browser (default /usr/bin/chromium); WebGPU on SwiftShader as in tests/web
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { startServer } from "../tests/web/server.mjs";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const { chromium } = createRequire(path.join(root, "tests/web/package.json"))("playwright-core");
const env = process.env;
const roots = (env.ROOTS || `this=${root}`).split(",").map((kv) => {
  const i = kv.indexOf("=");
  if (i < 1) throw new Error(`ROOTS entry ${kv}: want label=folder`);
  return { label: kv.slice(0, i), dir: path.resolve(kv.slice(i + 1)) };
});
const rounds = Number(env.ROUNDS || 2);
const query = env.QUERY || "layers=2&vocab=1000&weights=q4&kv=f32&prefill=4,16,64&decode_at=128&decode_tokens=8";
for (const r of roots) {
  for (const f of ["www/bench.html", "pkg/qwen_webgpu_bg.wasm"]) {
    if (!fs.existsSync(path.join(r.dir, f))) throw new Error(`${r.label}: ${r.dir}/${f} is missing (build pkg/ there first)`);
  }
}
const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

async function runOnce({ label, dir }) {
  const server = await startServer(dir, dir);
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-bench-chromium-"));
  const browser = await chromium.launchPersistentContext(userDir, {
    executablePath: env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--enable-unsafe-webgpu", "--no-sandbox", "--headless=new", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--enable-features=Vulkan,WebGPU", "--use-webgpu-adapter=swiftshader",
    ],
  });
  try {
    const page = await browser.newPage();
    const url = `http://127.0.0.1:${server.address().port}/www/bench.html?${query}&autorun=1`;
    await page.goto(url);
    await page.waitForFunction(() => window.qwenBench?.state.done === true, null, { timeout: 3600_000, polling: 1000 });
    const error = await page.evaluate(() => document.getElementById("error")?.textContent || "");
    const report = await page.evaluate(() => window.qwenBench.state.report);
    if (!report) throw new Error(`${label}: no report (${error})`);
    return report;
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

const results = [];
for (let i = 0; i < rounds; i++) {
  for (const r of roots) {
    log(`${r.label}, round ${i + 1}`);
    const report = await runOnce(r);
    results.push({ label: r.label, round: i + 1, report });
    const d = report.decode.map((x) => `decode @${x.context} ${x.ms_per_token.toFixed(1)} ms`).join(", ");
    log(`  ${report.dispatches_per_decoded_token} dispatches, ` +
      report.prefill.map((p) => `prefill ${p.tokens}: ${p.seconds.toFixed(2)} s`).join(", ") + `, ${d}`);
  }
}
if (env.JSON) fs.writeFileSync(env.JSON, JSON.stringify({ query, results }, null, 1));

const first = results[0].report;
const head = ["build", "round", "dispatches / token", ...first.prefill.map((p) => `prefill ${p.tokens} (TTFT)`),
  ...first.decode.map((d) => `decode @${d.context}`)];
console.log(`\n${first.adapter}; ${first.model}; ${query}\n`);
console.log(`| ${head.join(" | ")} |\n|${head.map(() => "---").join("|")}|`);
for (const { label, round, report: r } of results) {
  const cells = [label, round, r.dispatches_per_decoded_token,
    ...r.prefill.map((p) => `${p.seconds.toFixed(2)} s (${(p.seconds / p.tokens * 1000).toFixed(0)} ms/token)`),
    ...r.decode.map((d) => `${d.ms_per_token.toFixed(1)} ms/token`)];
  console.log(`| ${cells.join(" | ")} |`);
}
