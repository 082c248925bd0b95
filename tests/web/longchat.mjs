// Long conversations and long contexts through the package's public API (issue 17), in
// headless Chromium:
//   - a 300-turn streamed chat on a small context never fails, keeps its system prompt, and
//     after the first overflow prefills on average far fewer tokens a turn than the context
//     (older turns are left out in blocks, so the prompt's start stays cached);
//   - a reply whose max_tokens runs past the end of the context goes on (older turns left out
//     again, the reply so far re-fed) and ends with `length`, not `context_full`;
//   - a single message longer than the whole context is a `context_full` error, and the next
//     request works;
//   - the `window` load option (per-layer windows in info(), the CLI's ids for the same
//     windows, bad values refused naming the option before any weight is fetched), and the
//     default context of a Qwen v1 model, chosen by `maxGpuBytes`.
// Registered from run.mjs: `(await import("./longchat.mjs")).default(ctx)`. The chat tests use
// the /fx/vocab/ fixture (the real vocabulary, ChatML, hidden 32, one layer: a token costs
// little even with its 151936-row LM head) and are skipped without it.
import fs from "node:fs";
import path from "node:path";

/** Turns of the long chat (LONGCHAT_TURNS overrides, for a quick look). */
const TURNS = Number(process.env.LONGCHAT_TURNS || 300);

/**
 * A Qwen v1 checkpoint (model_type "qwen": fused c_attn, w1/w2 MLP, dynamic NTK and logN on,
 * trained length `seq`) with small random bf16 weights, written here: the default context of
 * such a model depends on the memory budget.
 */
function writeQwenV1(dir, seq) {
  const hidden = 64, layers = 2, heads = 4, ff = 88, vocab = 389;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    architectures: ["QWenLMHeadModel"], model_type: "qwen", hidden_size: hidden, num_hidden_layers: layers,
    num_attention_heads: heads, kv_channels: hidden / heads, intermediate_size: 2 * ff, vocab_size: vocab,
    seq_length: seq, rotary_emb_base: 10000, rotary_pct: 1.0, layer_norm_epsilon: 1e-6, use_dynamic_ntk: true,
    use_logn_attn: true, tie_word_embeddings: false,
  }));
  const t = [["transformer.wte.weight", [vocab, hidden]], ["lm_head.weight", [vocab, hidden]], ["transformer.ln_f.weight", [hidden]]];
  for (let i = 0; i < layers; i++) {
    const n = (x) => `transformer.h.${i}.${x}`;
    t.push([n("attn.c_attn.weight"), [3 * hidden, hidden]], [n("attn.c_attn.bias"), [3 * hidden]], [n("attn.c_proj.weight"), [hidden, hidden]],
      [n("mlp.w1.weight"), [ff, hidden]], [n("mlp.w2.weight"), [ff, hidden]], [n("mlp.c_proj.weight"), [hidden, ff]],
      [n("ln_1.weight"), [hidden]], [n("ln_2.weight"), [hidden]]);
  }
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 - 0.5; };
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const header = {};
  const parts = [];
  let off = 0;
  for (const [name, shape] of t) {
    const n = shape.reduce((a, b) => a * b, 1);
    const b = new Uint8Array(2 * n);
    for (let k = 0; k < n; k++) {
      f32[0] = /ln_[12f]\.weight$/.test(name) ? 1 + 0.1 * rnd() : 0.25 * rnd();
      const bits = u32[0] >>> 16;
      b[2 * k] = bits & 255;
      b[2 * k + 1] = bits >>> 8;
    }
    header[name] = { dtype: "BF16", shape, data_offsets: [off, off + b.length] };
    parts.push(b);
    off += b.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, "model.safetensors"), Buffer.concat([len, Buffer.from(json), ...parts]));
}

export default function longChatTests({ test, eq, ok, page, fixtures, expected, figures }) {
  test("window load option: info().windows per layer, the CLI's ids with --window 4, bad values refused naming window before any weight", async () => {
    const r = await page.evaluate(async () => {
      const out = { windows: {}, bad: [] };
      for (const [label, window] of [["4", "4"], ["[3, 0]", [3, 0]], ["5", 5], ["pow2:2:1", "pow2:2:1"], ["off", "off"], ["none given", undefined]]) {
        const e = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, window });
        out.windows[label] = (await e.info()).windows;
        if (label === "4") out.ids = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
        await e.unload();
      }
      for (const window of ["x", "1,2,3", [1, 2, 3], [], -1, 1.5, [2, -3], "pow2:0:1", "pow2:8", { w: 4 }, true, [4, "8"]]) {
        for (const useWorker of [true, false]) {
          const phases = [];
          try {
            const e = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker, window, onProgress: (p) => phases.push(p.phase) });
            await e.unload();
            out.bad.push(`${JSON.stringify(window)}: loaded?!`);
          } catch (e) {
            out.bad.push(`${JSON.stringify(window)} (${useWorker ? "worker" : "thread"}): ${e.name} ${e.code} ${e.message}${phases.includes("weights") ? " [after weights]" : ""}`);
          }
        }
      }
      return out;
    });
    eq(r.windows, { "4": [4, 4], "[3, 0]": [3, 0], "5": [5, 5], "pow2:2:1": [2, 4], "off": [0, 0], "none given": [0, 0] }, "info().windows");
    eq(r.ids, expected.window, "ids with window 4 vs the CLI's --window 4");
    for (const line of r.bad) ok(/: RequestError request_invalid .*window/.test(line) && !line.includes("[after weights]"), line);
    figures.push(`window 4 on tiny (2 layers): ids ${JSON.stringify(expected.window) === JSON.stringify(expected.tiny) ? "equal" : "differ from"} the unwindowed ones (prompt 3 + 16 tokens)`);
  });

  test("benchmark() with window: the report lists each layer's window and counts only the keys a windowed layer reads", async () => {
    const r = await page.evaluate(async () => {
      const opts = { layers: 2, vocab: 1024, weights: "q4", kvCache: "f32", prefill: [4], decodeAt: [40], decodeTokens: 2 };
      const plain = await qwen.benchmark(opts);
      const win = await qwen.benchmark({ ...opts, window: [8, 0] });
      const bad = await qwen.benchmark({ ...opts, window: "x" }).then(() => "resolved?!", (e) => `${e.name} ${e.code} ${e.message}`);
      const pick = (x) => ({ windows: x.windows, weights: x.weight_bytes_per_token, decode: x.decode.map((d) => ({ context: d.context, bytes: d.bytes_per_token, ms: d.ms_per_token })) });
      return { plain: pick(plain), win: pick(win), bad };
    });
    eq(r.plain.windows, [0, 0], "windows off");
    eq(r.win.windows, [8, 0], "windows [8, 0]");
    // Qwen-1.8B's shape: 16 KV heads of 128, f32: K and V of one position in one layer.
    const row = 2 * 16 * 128 * 4;
    // The token decoded at step j after a 40-token cache reads 41 + j keys (or the window's 8).
    const seen = (40 + 1 + 40 + 2) / 2;
    eq(r.plain.decode[0].bytes, r.plain.weights + row * 2 * seen, "bytes per token without windows");
    eq(r.win.decode[0].bytes, r.win.weights + row * (8 + seen), "bytes per token with windows [8, 0]");
    ok(/^RequestError request_invalid .*window/.test(r.bad), r.bad);
    figures.push(`benchmark (2 layers, vocab 1024, q4/f32) decode @40: ${r.plain.decode[0].ms.toFixed(1)} ms/token without windows, ${r.win.decode[0].ms.toFixed(1)} ms/token with windows [8, 0]`);
  }, { timeoutS: 400 });

  // A Qwen v1 model's default context: the longest of 32K/16K/8K that fits maxGpuBytes.
  const v1 = path.join(fixtures, "qwen-v1");
  writeQwenV1(v1, 256);
  test("Qwen v1 default context: 32768 in the default budget, the longest that fits maxGpuBytes, the trained length below 8K's need", async () => {
    const r = await page.evaluate(async () => {
      const load = async (opts) => {
        const e = await qwen.createEngine({ model: "/fx/qwen-v1/", useCache: false, ...opts });
        const info = await e.info();
        const ids = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 4, temperature: 0 })).ids;
        await e.unload();
        return { context: info.context, bytes: info.gpuBytes, ids };
      };
      const dflt = await load({});
      const at8 = await load({ context: 8192 });
      const at16 = await load({ context: 16384 });
      const between = await load({ maxGpuBytes: Math.floor((at8.bytes + at16.bytes) / 2) });
      const exact16 = await load({ maxGpuBytes: at16.bytes });
      const below = await load({ maxGpuBytes: at8.bytes - 1 });
      return { dflt, at8, at16, between, exact16, below };
    });
    eq(r.dflt.context, 32768, "no budget: 32K");
    eq(r.between.context, 8192, `a budget between 8K's ${r.at8.bytes} B and 16K's ${r.at16.bytes} B`);
    eq(r.exact16.context, 16384, "a budget of exactly 16K's bytes");
    eq(r.below.context, 256, "a budget below 8K's: the trained length (seq_length 256)");
    for (const k of ["dflt", "between", "exact16", "below"]) ok(r[k].ids.length === 4, `${k}: generated ${JSON.stringify(r[k].ids)}`);
    figures.push(`Qwen v1 (hidden 64, 2 layers, f32 KV) GPU bytes: context 8192 ${r.at8.bytes} B, 16384 ${r.at16.bytes} B, 32768 ${r.dflt.bytes} B`);
  });

  if (!expected.vocab.length) return; // the chat tests need the real tokenizer (/fx/vocab/)

  test(`a ${TURNS}-turn streamed chat in a 256-token context: never fails, keeps the system prompt, prefills far less than the context a turn`, async () => {
    const context = 256;
    const max_tokens = 4;
    const r = await page.evaluate(async ({ context, max_tokens, turns }) => {
      const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context });
      const system = "You are a terse assistant. Answer in a few words.";
      // ChatML's system block as the engine writes it: <|im_start|>system\n{content}<|im_end|>\n.
      const n = async (t) => (await engine.tokenize(t)).length;
      const nl = await n("\n");
      const nSystem = 1 + (await n("system")) + nl + (await n(system)) + 1 + nl;
      const words = ["hello", "你好", "GPU", "context", "内存", "window", "🙂", "cache", "测试", "é", "token", "turn"];
      const messages = [{ role: "system", content: system }];
      const rows = [];
      const t0 = performance.now();
      for (let i = 0; i < turns; i++) {
        const user = `${i}: ${Array.from({ length: 1 + (i % 3) }, (_, k) => words[(i * 5 + k) % words.length]).join(" ")}`;
        messages.push({ role: "user", content: user });
        let text = "", finish = null, usage = null;
        for await (const c of engine.chat.completions.create({ messages, stream: true, max_tokens, temperature: 0, stream_options: { include_usage: true } })) {
          text += c.choices[0]?.delta?.content ?? "";
          finish = c.choices[0]?.finish_reason ?? finish;
          usage = c.usage ?? usage;
        }
        rows.push({ finish, usage, textLen: text.length });
        messages.push({ role: "assistant", content: text });
      }
      const seconds = (performance.now() - t0) / 1000;
      await engine.unload();
      return { rows, nSystem, seconds };
    }, { context, max_tokens, turns: TURNS });
    const budget = context - Math.min(max_tokens, context / 2);
    let firstOverflow = -1;
    r.rows.forEach(({ finish, usage: u }, i) => {
      ok(u, `turn ${i}: no usage`);
      const d = u.prompt_tokens_details;
      ok(["stop", "length"].includes(finish), `turn ${i}: finish_reason ${finish}`);
      ok(u.prompt_tokens <= budget, `turn ${i}: prompt of ${u.prompt_tokens} tokens over the budget ${budget}`);
      ok(u.completion_tokens >= 1 && u.completion_tokens <= max_tokens, `turn ${i}: ${u.completion_tokens} completion tokens`);
      eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, `turn ${i}: total_tokens`);
      ok(d.cached_tokens < u.prompt_tokens, `turn ${i}: ${d.cached_tokens} cached of ${u.prompt_tokens}`);
      eq(d.continuations, 0, `turn ${i}: continuations (a ${max_tokens}-token reply always has room)`);
      eq(d.prefilled_tokens, u.prompt_tokens - d.cached_tokens, `turn ${i}: prefilled_tokens`);
      if (i > 0) ok(d.cached_tokens >= r.nSystem, `turn ${i}: ${d.cached_tokens} cached tokens, fewer than the system prompt's ${r.nSystem}`);
      if (firstOverflow < 0 && d.dropped_tokens > 0) firstOverflow = i;
      if (firstOverflow >= 0) ok(d.dropped_tokens > 0, `turn ${i}: nothing dropped after the first overflow at turn ${firstOverflow}`);
    });
    ok(firstOverflow > 0 && (TURNS < 100 || firstOverflow < TURNS - 50), `the conversation overflowed at turn ${firstOverflow}`);
    const after = r.rows.slice(firstOverflow + 1).map((x) => x.usage.prompt_tokens_details.prefilled_tokens);
    const mean = after.reduce((a, b) => a + b, 0) / after.length;
    const jumps = r.rows.slice(firstOverflow + 1).filter((x, k) => x.usage.prompt_tokens_details.dropped_tokens !== r.rows[firstOverflow + k].usage.prompt_tokens_details.dropped_tokens).length;
    const longest = Math.max(...r.rows.map((x) => x.usage.prompt_tokens));
    figures.push(`long chat: ${TURNS} turns (context ${context}, max_tokens ${max_tokens}, system prompt ${r.nSystem} tokens) in ${r.seconds.toFixed(0)} s; ` +
      `first overflow at turn ${firstOverflow}; after it ${mean.toFixed(1)} tokens prefilled a turn on average (max ${Math.max(...after)}), ` +
      `${jumps} block drops in ${after.length} turns; longest prompt ${longest}; finishes ${JSON.stringify(r.rows.reduce((m, x) => ({ ...m, [x.finish]: (m[x.finish] || 0) + 1 }), {}))}`);
    ok(mean < context / 3, `after the first overflow ${mean.toFixed(1)} tokens prefilled a turn on average (want < ${context / 3})`);
  }, { timeoutS: 1200 });

  test("a reply whose max_tokens runs past the end of the context goes on (length, not context_full); generateIds still ends with context_full", async () => {
    const r = await page.evaluate(async () => {
      const context = 256;
      const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context });
      const messages = [{ role: "system", content: "Be brief." }];
      for (let i = 0; i < 8; i++) {
        messages.push({ role: "user", content: `question ${i}: what is in the cache now?` }, { role: "assistant", content: `answer ${i}: the keys and values of every token so far.` });
      }
      messages.push({ role: "user", content: "Now write a long story." });
      const run = async (max_tokens) => {
        let text = "", finish = null, usage = null, chunks = 0;
        for await (const c of engine.chat.completions.create({ messages, stream: true, max_tokens, temperature: 0, ignore_eos: true, stream_options: { include_usage: true } })) {
          const d = c.choices[0]?.delta?.content ?? "";
          if (d) chunks++;
          text += d;
          finish = c.choices[0]?.finish_reason ?? finish;
          usage = c.usage ?? usage;
        }
        return { text, finish, usage, chunks };
      };
      const long = await run(200);
      // A reply that cannot fit at all beside the last message: it ends, as at max_tokens.
      const huge = await run(100000);
      // From an empty cache, as the streamed reply was: the same computation, the same text.
      await engine.resetChat();
      const plain = await engine.chat.completions.create({ messages, max_tokens: 200, temperature: 0, ignore_eos: true, logprobs: true });
      const ids = await engine.generateIds({ promptIds: Array.from({ length: 250 }, (_, i) => 1000 + i), max_tokens: 20, temperature: 0 });
      await engine.unload();
      const lp = plain.choices[0].logprobs.content;
      return { context, long, huge, plain: { finish: plain.choices[0].finish_reason, usage: plain.usage, text: plain.choices[0].message.content, logprobs: lp.length,
        saneLogprobs: lp.every((e) => e.logprob <= 0 && Number.isFinite(e.logprob)) }, ids: { finish: ids.finish_reason, n: ids.ids.length } };
    });
    const { long, huge, plain, context } = r;
    const room = context - long.usage.prompt_tokens;
    const d = long.usage.prompt_tokens_details;
    eq(long.finish, "length", "finish_reason of the long reply");
    eq(long.usage.completion_tokens, 200, "completion_tokens");
    ok(long.usage.completion_tokens > room, `the reply had room for ${room} tokens and gave ${long.usage.completion_tokens}: it did not go on`);
    ok(d.continuations >= 1, `continuations ${d.continuations}`);
    ok(d.prefilled_tokens > long.usage.prompt_tokens - d.cached_tokens, `prefilled_tokens ${d.prefilled_tokens} counts no re-prefill (prompt ${long.usage.prompt_tokens}, cached ${d.cached_tokens})`);
    ok(d.dropped_tokens > 0, `dropped_tokens ${d.dropped_tokens}`);
    ok(long.chunks > room / 2, `${long.chunks} text chunks streamed`);
    eq(huge.finish, "length", "a reply that fills the context beside the last message ends with length");
    ok(huge.usage.completion_tokens > context - huge.usage.prompt_tokens && huge.usage.completion_tokens < context,
      `huge: ${huge.usage.completion_tokens} completion tokens (prompt ${huge.usage.prompt_tokens}, context ${context})`);
    eq(plain.finish, "length", "non-streaming: finish_reason");
    eq(plain.usage.completion_tokens, 200, "non-streaming: completion_tokens");
    eq(plain.text, long.text, "non-streaming text (with logprobs) vs streamed text (greedy, same conversation)");
    eq(plain.usage.prompt_tokens_details.continuations, d.continuations, "non-streaming continuations");
    // One logprobs entry per token, across the continuation too.
    ok(plain.logprobs === 200 && plain.saneLogprobs, `${plain.logprobs} logprobs entries for 200 tokens (sane: ${plain.saneLogprobs})`);
    ok(r.ids.finish === "context_full" && r.ids.n >= 1 && r.ids.n <= 7, `generateIds at the end of the context: ${JSON.stringify(r.ids)}`);
    figures.push(`reply past the context end (context ${context}): prompt ${long.usage.prompt_tokens} (${d.cached_tokens} cached), room ${room}, ` +
      `${long.usage.completion_tokens} tokens in ${d.continuations} continuation(s), ${d.prefilled_tokens} prefilled in all, ${d.dropped_tokens} dropped; ` +
      `max_tokens 100000: ${huge.usage.completion_tokens} tokens, ${huge.usage.prompt_tokens_details.continuations} continuation(s)`);
  }, { timeoutS: 600 });

  test("a single message longer than the context is a context_full error; the next request works", async () => {
    const r = await page.evaluate(async () => {
      const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 128 });
      const out = {};
      const messages = [{ role: "user", content: "hello there" }];
      out.first = (await engine.chat.completions.create({ messages, max_tokens: 4, temperature: 0 })).choices[0].finish_reason;
      const long = Array.from({ length: 200 }, (_, i) => `word${i}`).join(" ");
      for (const stream of [false, true]) {
        try {
          const req = { messages: [...messages, { role: "assistant", content: "hi" }, { role: "user", content: long }], max_tokens: 4, stream };
          if (stream) { for await (const _ of engine.chat.completions.create(req)); } else await engine.chat.completions.create(req);
          out[stream ? "streamErr" : "err"] = "resolved?!";
        } catch (e) { out[stream ? "streamErr" : "err"] = `${e.name} ${e.code} ${e.message}`; }
      }
      const after = await engine.chat.completions.create({ messages, max_tokens: 4, temperature: 0 });
      out.after = { finish: after.choices[0].finish_reason, n: after.usage.completion_tokens, cached: after.usage.prompt_tokens_details.cached_tokens };
      await engine.unload();
      return out;
    });
    ok(["stop", "length"].includes(r.first), `first: ${r.first}`);
    ok(/^RequestError context_full /.test(r.err), r.err);
    ok(/^RequestError context_full /.test(r.streamErr), r.streamErr);
    ok(["stop", "length"].includes(r.after.finish) && r.after.n >= 1, `after: ${JSON.stringify(r.after)}`);
  });
}
