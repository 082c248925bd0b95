// Browser soak (issue 12): many chat turns through the public streaming API in Chromium, a
// quarter of them aborted mid-stream (half by AbortSignal, half by leaving the loop), the
// history trimmed when the context fills. After the last turn the model's GPU buffers (count
// and bytes, from engine.info()) equal those after the first, and the JS heaps (the page's and
// the engine worker's, measured with the DevTools protocol after a forced GC) grew by less
// than HEAP_BOUND, and so did the engine's wasm memory. CI runs SOAK_TURNS=12 (default) with
// the engine in its worker (the default); the full run is SOAK_TURNS=200, and
// SOAK_MODES=worker,thread adds a run with the engine on the page (useWorker: false).
// Registered by run.mjs: `(await import("./soak.mjs")).default(ctx)`.

import { workerSessions } from "./cdp.mjs";

/** The most the JS heap (used bytes after GC) may grow from the first turn to the last. */
const HEAP_BOUND = 2 << 20;

/**
 * Heap figures of the page and of its dedicated workers (the engine's), through a CDP session
 * on the page: workers are reached by auto-attaching to them (non-flattened sessions, so the
 * messages go through this session and Playwright's own sessions are left alone).
 */
async function heapProbe(page) {
  const cdp = await page.context().newCDPSession(page);
  const { workers, send: inWorker } = await workerSessions(cdp);
  const heap = async (send) => {
    for (let i = 0; i < 3; i++) await send("HeapProfiler.collectGarbage");
    const h = await send("Runtime.getHeapUsage");
    return { used: h.usedSize, total: h.totalSize, backing: h.backingStorageSize ?? null };
  };
  // The wasm module's linear memory (not in the JS heap figures): the glue's init returns the
  // instance's exports when it has already run, in the page and in the worker alike.
  const wasmBytes = async (send) => {
    const r = await send("Runtime.evaluate", { expression: 'import("/pkg/qwen_webgpu.js").then((m) => m.default()).then((w) => w.memory.buffer.byteLength)',
      awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) throw new Error(`wasm memory: ${r.exceptionDetails.exception?.description || r.exceptionDetails.text}`);
    return r.result.value;
  };
  return {
    workers,
    /** `{ page, worker, wasm }`: heap figures (worker: null when the engine runs on the page) and the engine's wasm memory. */
    async measure() {
      const onPage = (m, p) => cdp.send(m, p);
      const pageHeap = await heap(onPage);
      const ids = [...workers.keys()];
      if (ids.length > 1) throw new Error(`${ids.length} workers alive: ${[...workers.values()].join(", ")}`);
      const inEngine = ids.length ? (m, p) => inWorker(ids[0], m, p) : onPage;
      const worker = ids.length ? await heap(inEngine) : null;
      return { page: pageHeap, worker, wasm: await wasmBytes(inEngine) };
    },
    async close() {
      try { await cdp.send("Target.setAutoAttach", { autoAttach: false, waitForDebuggerOnStart: false, flatten: false }); } catch { /* gone */ }
      await cdp.detach();
    },
  };
}

export default function soakTests({ test, ok, eq, page, expected, figures }) {
  if (!expected.vocab.length) return; // the chat API needs the real tokenizer (fixture /fx/vocab/)
  const turns = Number(process.env.SOAK_TURNS || 12);
  const modes = (process.env.SOAK_MODES || "worker").split(",");
  for (const mode of modes) {
    test(`soak (${mode}): ${turns} streamed chat turns, a quarter aborted, history trimmed; GPU buffers and JS heap do not grow`, async () => {
      const probe = await heapProbe(page);
      try {
        await page.evaluate(async ({ useWorker }) => {
          const context = 1024;
          const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context, useWorker });
          const words = ["你好", "hello", "GPU", "内存", "soak", "🙂", "stream", "测试", "abort", "é"];
          const s = (window.__soak = { engine, messages: [], historyTokens: 0, stats: { tokens: 0, aborts: 0, signalAborts: 0, breaks: 0, trims: 0, turns: 0, cached: 0, maxPrompt: 0, finishes: {} } });
          // One turn: a user message, a streamed reply (maybe aborted), the reply kept as history.
          window.__soakTurn = async (i) => {
            const user = `${i}: ${Array.from({ length: 3 + (i % 7) }, (_, k) => words[(i * 7 + k) % words.length]).join(" ")}`;
            const max_tokens = 96 + ((i * 37) % 64);
            // Trim the history (oldest half of the turns) when this turn might not fit.
            if (s.historyTokens + 40 + max_tokens > context) {
              s.messages.splice(0, 2 * Math.max(1, Math.floor(s.messages.length / 4)));
              s.stats.trims++;
            }
            s.messages.push({ role: "user", content: user });
            const abort = i % 4 === 3 ? (i % 8 === 3 ? "signal" : "break") : null;
            const abortAt = 2 + ((i * 13) % 24);
            const ctl = new AbortController();
            let text = "", chunks = 0, finish = null, usage = null;
            const req = { messages: s.messages, stream: true, max_tokens, ignore_eos: true, signal: ctl.signal,
              ...(i % 2 ? { temperature: 0.8, top_p: 0.95, seed: i } : { temperature: 0 }) };
            for await (const c of engine.chat.completions.create(req)) {
              const delta = c.choices[0].delta.content ?? "";
              text += delta;
              if (delta) chunks++;
              finish = c.choices[0].finish_reason ?? finish;
              usage = c.usage ?? usage;
              if (abort && chunks === abortAt) {
                if (abort === "break") break;
                ctl.abort();
              }
            }
            if (abort) { s.stats.aborts++; s.stats[abort === "break" ? "breaks" : "signalAborts"]++; }
            if (abort === "signal" && finish !== "abort") throw new Error(`turn ${i}: aborted by signal, finish_reason ${finish}`);
            if (!abort && finish !== "length") throw new Error(`turn ${i}: finish_reason ${finish} (max_tokens ${max_tokens}, ignore_eos)`);
            // A broken-off stream has no usage: its tokens are the chunks seen (a lower bound).
            const generated = usage ? usage.completion_tokens : chunks;
            if (usage) {
              s.stats.cached += usage.prompt_tokens_details.cached_tokens;
              s.stats.maxPrompt = Math.max(s.stats.maxPrompt, usage.prompt_tokens);
              // The crate's rule: the prompt leaves min(max_tokens, context / 2) for the reply.
              const budget = context - Math.min(max_tokens, context / 2);
              if (usage.prompt_tokens > budget) throw new Error(`turn ${i}: prompt of ${usage.prompt_tokens} tokens over the budget ${budget}`);
              s.historyTokens = usage.prompt_tokens + generated;
            } else {
              s.historyTokens += 40 + generated;
            }
            s.stats.tokens += generated;
            s.stats.turns++;
            s.stats.finishes[finish ?? "break"] = (s.stats.finishes[finish ?? "break"] || 0) + 1;
            s.messages.push({ role: "assistant", content: text });
          };
        }, { useWorker: mode === "worker" });
        const t0 = Date.now();
        await page.evaluate(() => window.__soakTurn(0));
        const gpu = async () => page.evaluate(async () => { const i = await window.__soak.engine.info(); return { bytes: i.gpuBytes, buffers: i.gpuBuffers }; });
        const gpu1 = await gpu();
        const heap1 = await probe.measure();
        if (mode === "worker") ok(heap1.worker, "the engine's worker was not reached through the DevTools protocol");
        for (let i = 1; i < turns; i++) await page.evaluate((i) => window.__soakTurn(i), i);
        const seconds = (Date.now() - t0) / 1000;
        const gpuN = await gpu();
        const heapN = await probe.measure();
        const stats = await page.evaluate(() => window.__soak.stats);
        await page.evaluate(async () => { await window.__soak.engine.unload(); window.__soak = null; });
        const mib = (b) => `${(b / 1048576).toFixed(2)} MiB`;
        const heapLine = (h) => `page ${h.page.used} B` + (h.worker ? `, worker ${h.worker.used} B` : "") + `, wasm memory ${h.wasm} B`;
        figures.push(`soak (${mode}): ${stats.turns} turns in ${seconds.toFixed(0)} s, ${stats.tokens} tokens generated, ${stats.aborts} aborts ` +
          `(${stats.signalAborts} by signal, ${stats.breaks} by break), ${stats.trims} history trims, ${stats.cached} prompt tokens reused, longest prompt ${stats.maxPrompt}; ` +
          `GPU after turn 1 ${gpu1.bytes} B in ${gpu1.buffers} buffers, after turn ${turns} ${gpuN.bytes} B in ${gpuN.buffers}; ` +
          `JS heap used after GC, turn 1: ${heapLine(heap1)}; turn ${turns}: ${heapLine(heapN)}; finishes ${JSON.stringify(stats.finishes)}`);
        eq(stats.turns, turns, "turns");
        eq(stats.aborts, Math.floor((turns + 1) / 4), "aborted turns");
        eq(gpuN, gpu1, "GPU bytes and buffers after the last turn vs after the first");
        const growth = (a, b) => b.used - a.used;
        ok(growth(heap1.page, heapN.page) < HEAP_BOUND, `page heap grew ${mib(growth(heap1.page, heapN.page))} (bound ${mib(HEAP_BOUND)})`);
        if (heap1.worker) ok(growth(heap1.worker, heapN.worker) < HEAP_BOUND, `worker heap grew ${mib(growth(heap1.worker, heapN.worker))} (bound ${mib(HEAP_BOUND)})`);
        ok(heapN.wasm - heap1.wasm < HEAP_BOUND, `wasm memory grew ${mib(heapN.wasm - heap1.wasm)} (bound ${mib(HEAP_BOUND)})`);
      } finally {
        await probe.close();
      }
    });
  }
}
