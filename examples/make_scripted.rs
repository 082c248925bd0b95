//! Write a tiny Qwen2-architecture checkpoint over the real Qwen3 vocabulary whose greedy
//! decoding follows fixed scripts: a model that calls a tool, for the agent tests (random
//! weights never call a tool by themselves).
//!
//! ```text
//! cargo run --example make_scripted -- OUT_DIR [--vocab-dir DIR] [--tokenizer-config FILE]
//! ```
//! `DIR` holds the real `tokenizer.json` (default `~/.cache/qwen-webgpu/vocab`, see
//! scripts/fetch-vocab.sh); `FILE` is Qwen3's real `tokenizer_config.json` with its chat
//! template (default `~/.cache/qwen-webgpu/gguf-tools/tokenizer_config.json`, see
//! `scripts/gguf-tools.sh path tokenizer_config`). Both are copied next to the weights, so the
//! folder is a complete model. `OUT_DIR/script.json` (also printed) lists each reply's text
//! and ids.
//!
//! How it works. Each script is a chain of distinct token ids (the text is segmented into
//! vocabulary tokens so that no id repeats; the ids need not be the tokenizer's own encoding of
//! the text, only decode to it). The hidden state is one-hot: every chain token has its own
//! dimension, and the LM head maps token t's dimension to the token after t. So greedy
//! decoding continues a chain from whatever chain token ends the prompt.
//!
//! - After `\n` (the end of `<|im_start|>assistant\n`: Qwen3's template with thinking on)
//!   the model replies with `tool_call`: a `<think>` block ("I should run Python"), then a `<tool_call>` calling
//!   `python` with `print(6*7)`.
//! - Unless the context holds a `<tool_response>`: one attention head finds that token at any
//!   distance (its query and key sit on RoPE's slowest-turning pair, so position barely
//!   matters) and writes a flag into the residual; with the flag set, the LM head prefers
//!   `answer` ("The answer is 42.") after `\n`. So a tool loop ends: call, result, answer.
//!   Forbidding `<think>` with `logit_bias` also yields `answer` (the runner-up after `\n`).
//! - After `\n\n` (Qwen3's prompt with `enable_thinking: false` ends `</think>\n\n`) the reply
//!   is `hello`: mixed scripts and an emoji, for stop strings inside multi-byte characters.
//!
//! Every reply ends with `<|im_end|>`. The logits are far apart (gaps above 10), so sampling
//! at ordinary temperatures follows the scripts too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use qwen_webgpu::tokenizer::Tokenizer;

mod common;

const HIDDEN: usize = 128;
const HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FF: usize = 64;
const VOCAB: usize = 151936;
/// The residual dimension the tool-response head writes its flag to.
const FLAG: usize = HIDDEN - 1;
/// RoPE pairs dimension i with i + HEAD_DIM/2 (rotate_half); i = HEAD_DIM/2 - 1 turns slowest
/// (theta^(-62/64) ≈ 1.5e-6 rad a position with rope_theta 1e6).
const SLOW: usize = HEAD_DIM / 2 - 1;

/// The scripted replies: (name, the token the prompt ends with, the text). A chain cannot use
/// `\n` or `\n\n` (they start chains), hence few newlines and compact JSON (its `\": \"` pieces would repeat): Qwen3 itself writes
/// `<think>\n...\n</think>\n\n<tool_call>\n{...}\n</tool_call>`.
const SCRIPTS: &[(&str, &str, &str)] = &[
    (
        "tool_call",
        "\n",
        "<think>I should run Python</think><tool_call>{\"name\":\"python\",\"arguments\":{\"code\":\"print(6*7)\"}}\n</tool_call>",
    ),
    ("answer", "\n", "The answer is 42."),
    ("hello", "\n\n", "Hello!你好世界😀Goodbye"),
];

fn main() {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let cache = PathBuf::from(home).join(".cache/qwen-webgpu");
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut vocab_dir = std::env::var("QWEN_VOCAB_DIR").map(PathBuf::from).unwrap_or_else(|_| cache.join("vocab"));
    let mut tok_config = cache.join("gguf-tools/tokenizer_config.json");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--vocab-dir" => vocab_dir = PathBuf::from(args.next().unwrap_or_else(|| die("--vocab-dir needs a path"))),
            "--tokenizer-config" => {
                tok_config = PathBuf::from(args.next().unwrap_or_else(|| die("--tokenizer-config needs a path")))
            }
            _ if out.is_none() && !a.starts_with("--") => out = Some(PathBuf::from(a)),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let out = out.unwrap_or_else(|| die("usage: make_scripted OUT_DIR [--vocab-dir DIR] [--tokenizer-config FILE]"));
    let tok_json = vocab_dir.join("tokenizer.json");
    let tok = Tokenizer::from_file(&tok_json)
        .unwrap_or_else(|e| die(&format!("{}: {e} (scripts/fetch-vocab.sh fetches it)", tok_json.display())));
    let config_text = std::fs::read_to_string(&tok_config)
        .unwrap_or_else(|e| die(&format!("{}: {e} (scripts/gguf-tools.sh setup fetches it)", tok_config.display())));

    // Every token's bytes, to segment the scripts with.
    // Added tokens (`<think>`, `<tool_call>`...) stay whole, as a model emits them.
    let mut by_bytes: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut added: Vec<(Vec<u8>, u32)> = Vec::new();
    for id in 0..tok.vocab_size() as u32 {
        if let Ok(b) = tok.decode_bytes(&[id]) {
            if b.is_empty() {
                continue;
            }
            if tok.is_special(id) {
                added.push((b, id));
            } else {
                by_bytes.entry(b).or_insert(id);
            }
        }
    }
    let special = |s: &str| tok.token_to_id(s).unwrap_or_else(|| die(&format!("the vocabulary has no {s}")));
    let im_end = special("<|im_end|>");
    let tool_response = special("<tool_response>");
    let starts: Vec<u32> = SCRIPTS
        .iter()
        .map(|(_, start, _)| *by_bytes.get(start.as_bytes()).unwrap_or_else(|| die("no token for a start")))
        .collect();

    // Segment each script into ids that no other chain uses (the last token of each chain,
    // <|im_end|>, has no successor and may be shared).
    let mut used: HashSet<u32> = starts.iter().copied().collect();
    used.insert(tool_response);
    used.insert(im_end);
    let mut chains: Vec<Vec<u32>> = Vec::new();
    for (name, _, text) in SCRIPTS {
        let ids = segment(text.as_bytes(), &by_bytes, &added, &used)
            .unwrap_or_else(|| die(&format!("cannot segment script {name} into distinct tokens")));
        assert_eq!(tok.decode_bytes(&ids).expect("decode"), text.as_bytes());
        used.extend(&ids);
        chains.push(ids);
    }

    // One residual dimension per token that has a successor.
    let mut dim: BTreeMap<u32, usize> = BTreeMap::new();
    for &id in starts.iter().chain(chains.iter().flatten()).chain([&tool_response]) {
        let n = dim.len();
        dim.entry(id).or_insert(n);
    }
    if dim.len() >= FLAG {
        die(&format!("{} chain tokens do not fit {HIDDEN} dimensions", dim.len()));
    }

    let zeros = |r: usize, c: usize| (vec![r, c], vec![0f32; r * c]);
    let mut t: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut embed = zeros(VOCAB, HIDDEN);
    for (&id, &d) in &dim {
        embed.1[id as usize * HIDDEN + d] = 1.0;
    }
    t.insert("model.embed_tokens.weight".into(), embed);

    // The tool-response head: head 0 queries a constant (its bias) on the slow RoPE
    // dimension, and only <tool_response> has a key there: score = 4 * 7 * sqrt(128) / 8 ≈ 40,
    // so all of head 0's attention goes to it when present (uniform over zero values when not).
    let kvd = HEAD_DIM; // one KV head
    let mut q_bias = vec![0f32; HIDDEN];
    q_bias[SLOW] = 4.0;
    let mut k = zeros(kvd, HIDDEN);
    k.1[SLOW * HIDDEN + dim[&tool_response]] = 7.0;
    // Its value (0.125 * sqrt(128) ≈ 1.41) goes to the flag dimension.
    let mut v = zeros(kvd, HIDDEN);
    v.1[dim[&tool_response]] = 0.125;
    let mut o = zeros(HIDDEN, HIDDEN);
    o.1[FLAG * HIDDEN] = 1.0;
    let l = |x: &str| format!("model.layers.0.{x}");
    t.insert(l("self_attn.q_proj.weight"), zeros(HIDDEN, HIDDEN));
    t.insert(l("self_attn.k_proj.weight"), k);
    t.insert(l("self_attn.v_proj.weight"), v);
    t.insert(l("self_attn.o_proj.weight"), o);
    t.insert(l("mlp.gate_proj.weight"), zeros(FF, HIDDEN));
    t.insert(l("mlp.up_proj.weight"), zeros(FF, HIDDEN));
    t.insert(l("mlp.down_proj.weight"), zeros(HIDDEN, FF));
    t.insert(l("self_attn.q_proj.bias"), (vec![HIDDEN], q_bias));
    t.insert(l("self_attn.k_proj.bias"), (vec![kvd], vec![0.0; kvd]));
    t.insert(l("self_attn.v_proj.bias"), (vec![kvd], vec![0.0; kvd]));
    for n in [l("input_layernorm.weight"), l("post_attention_layernorm.weight"), "model.norm.weight".into()] {
        t.insert(n, (vec![HIDDEN], vec![1.0; HIDDEN]));
    }

    // The LM head: token t's dimension → the token after t (weight 4). After "\n" the
    // tool-call chain wins by 1 (times the norm's scale), unless the flag is set: it takes 1
    // from the tool call and gives 1 to the answer.
    let mut head = zeros(VOCAB, HIDDEN);
    let mut link = |from: u32, to: u32, w: f32| head.1[to as usize * HIDDEN + dim[&from]] += w;
    for (i, chain) in chains.iter().enumerate() {
        let first_weight = if SCRIPTS[i].0 == "answer" { 3.0 } else { 4.0 };
        link(starts[i], chain[0], first_weight);
        for w in chain.windows(2) {
            link(w[0], w[1], 4.0);
        }
        link(*chain.last().expect("non-empty"), im_end, 4.0);
    }
    let (tool_first, answer_first) = (chains[0][0] as usize, chains[1][0] as usize);
    head.1[tool_first * HIDDEN + FLAG] = -1.0;
    head.1[answer_first * HIDDEN + FLAG] = 1.0;
    t.insert("lm_head.weight".into(), head);

    std::fs::create_dir_all(&out).unwrap_or_else(|e| die(&format!("cannot create {}: {e}", out.display())));
    let cfg = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 1,
        "intermediate_size": FF,
        "vocab_size": VOCAB,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "eos_token_id": im_end
    });
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).unwrap_or_else(|e| die(&format!("cannot write {name}: {e}")))
    };
    write("config.json", &serde_json::to_string_pretty(&cfg).expect("json"));
    std::fs::copy(&tok_json, out.join("tokenizer.json")).unwrap_or_else(|e| die(&format!("copy tokenizer.json: {e}")));
    write("tokenizer_config.json", &config_text);

    common::write_bf16_safetensors(&t, &out.join("model.safetensors"));

    let mut replies = serde_json::Map::new();
    for (i, (name, start, text)) in SCRIPTS.iter().enumerate() {
        let mut ids = chains[i].clone();
        ids.push(im_end);
        replies.insert(
            name.to_string(),
            serde_json::json!({ "after": start, "after_id": starts[i], "text": text, "ids": ids }),
        );
    }
    let script = serde_json::json!({ "replies": replies, "im_end": im_end, "tool_response": tool_response });
    let text = serde_json::to_string_pretty(&script).expect("json");
    write("script.json", &text);
    println!("{text}");
}

/// `text` as ids none of which is in `avoid` nor repeats: each added token's text as that
/// token, the text between them in ordinary tokens, longest first (depth-first with
/// backtracking).
fn segment(
    text: &[u8],
    by_bytes: &HashMap<Vec<u8>, u32>,
    added: &[(Vec<u8>, u32)],
    avoid: &HashSet<u32>,
) -> Option<Vec<u32>> {
    let mut taken = avoid.clone();
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // The first added token in what is left (the longest where several start there).
        let next = (0..rest.len()).find_map(|at| {
            added
                .iter()
                .filter(|(b, _)| rest[at..].starts_with(b))
                .max_by_key(|(b, _)| b.len())
                .map(|(b, id)| (at, b.len(), *id))
        });
        let (plain, special) = match next {
            Some((at, len, id)) => (&rest[..at], Some((len, id))),
            None => (rest, None),
        };
        out.extend(segment_plain(plain, by_bytes, &mut taken)?);
        match special {
            Some((len, id)) if taken.insert(id) => {
                out.push(id);
                rest = &rest[plain.len() + len..];
            }
            Some(_) => return None,
            None => rest = &[],
        }
    }
    Some(out)
}

fn segment_plain(text: &[u8], by_bytes: &HashMap<Vec<u8>, u32>, taken: &mut HashSet<u32>) -> Option<Vec<u32>> {
    fn go(
        text: &[u8],
        by_bytes: &HashMap<Vec<u8>, u32>,
        taken: &mut HashSet<u32>,
        out: &mut Vec<u32>,
        budget: &mut usize,
    ) -> bool {
        if text.is_empty() {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        for len in (1..=text.len().min(32)).rev() {
            let Some(&id) = by_bytes.get(&text[..len]) else { continue };
            if taken.contains(&id) {
                continue;
            }
            taken.insert(id);
            out.push(id);
            if go(&text[len..], by_bytes, taken, out, budget) {
                return true;
            }
            out.pop();
            taken.remove(&id);
        }
        false
    }
    let mut out = Vec::new();
    let mut budget = 1_000_000;
    go(text, by_bytes, taken, &mut out, &mut budget).then_some(out)
}

fn die(msg: &str) -> ! {
    eprintln!("make_scripted: {msg}");
    std::process::exit(2)
}
