//! A chat past the context (issue 17): `chat_prompt` leaves old turns out in blocks, so that
//! after the first overflow consecutive prompts share their prefix for several turns and the
//! KV cache stays reusable; `continue_prompt` gives a reply that filled the context a shorter
//! prompt to go on with.
//!
//! Everything here is checked against plain re-renderings of the kept messages (no budget) and
//! the rule written out by hand from its definition (`cum(k)` computed turn by turn), with the
//! real Qwen3 vocabulary and the real Qwen3 template (`tests/data/chat_template_golden.jsonl`'s
//! "qwen3", the text of Qwen3's tokenizer_config.json) and the ChatML fallback. The vocabulary
//! comes from `bash scripts/fetch-vocab.sh` (`${QWEN_VOCAB_DIR:-~/.cache/qwen-webgpu/vocab}`).

use qwen_webgpu::error::Error;
use qwen_webgpu::tokenizer::{
    chat_prompt, continue_prompt, drop_block, prompt_budget, ChatMessage, ChatPrompt, ChatRequest, ChatTemplate, Role,
    Tokenizer,
};
use std::path::{Path, PathBuf};

const IM_END: u32 = 151645;

fn vocab_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("QWEN_VOCAB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/qwen-webgpu/vocab"),
    };
    let p = dir.join(name);
    assert!(p.is_file(), "{} is missing: run `bash scripts/fetch-vocab.sh`", p.display());
    p
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&vocab_path("tokenizer.json")).expect("load tokenizer.json")
}

/// Qwen3's chat template, as its tokenizer_config.json has it.
fn qwen3_template() -> ChatTemplate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat_template_golden.jsonl");
    let data = std::fs::read_to_string(&path).expect("read chat_template_golden.jsonl");
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v.get("case").is_none() && v["template"] == "qwen3" {
            return ChatTemplate::jinja(v["text"].as_str().unwrap(), v["bos_token"].as_str(), v["eos_token"].as_str())
                .unwrap();
        }
    }
    panic!("no qwen3 template in the golden file");
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// A message of `1..=max_words` random words, English or Chinese.
fn text(rng: &mut Rng, max_words: u64) -> String {
    const EN: &[&str] =
        &["the", "model", "cache", "prompt", "why", "context", "tokens", "is", "long", "42", "a", "run"];
    const ZH: &[&str] = &["你好", "上下文", "模型", "为什么", "缓存", "很长", "对话", "谢谢", "。", "，"];
    let n = 1 + rng.below(max_words);
    let zh = rng.below(3) == 0;
    let words: Vec<&str> = (0..n)
        .map(|_| if zh { ZH[rng.below(ZH.len() as u64) as usize] } else { EN[rng.below(EN.len() as u64) as usize] })
        .collect();
    words.join(if zh { "" } else { " " })
}

/// The prompt of `msgs` with no budget.
fn unbudgeted(tok: &Tokenizer, tpl: &ChatTemplate, msgs: &[ChatMessage]) -> ChatPrompt {
    chat_prompt(tok, tpl, &ChatRequest::new(msgs), usize::MAX).unwrap()
}

/// `msgs` without the first `dropped` messages after the system message.
fn without(msgs: &[ChatMessage], dropped: usize) -> Vec<ChatMessage> {
    let mut v = vec![msgs[0].clone()];
    v.extend_from_slice(&msgs[1 + dropped..]);
    v
}

/// Where each turn (a user message and what follows, up to the last user message) starts, as
/// a count of messages after the system message: dropping turn `k` leaves out `starts[k]`.
fn turn_starts(msgs: &[ChatMessage]) -> Vec<usize> {
    let last_user = msgs.iter().rposition(|m| m.role == Role::User).unwrap();
    (1..=last_user).filter(|&i| msgs[i].role == Role::User).map(|i| i - 1).collect()
}

/// The rule from its definition, the number of messages to leave out: with `cum(k)` the tokens
/// the first `k` turns take (the full length minus the length without them), the fewest `k`
/// with `cum(k) >= ceil(D / B) * B`, else all when that fits. `cum` grows with `k` (each turn
/// renders to tokens of its own), so the scan goes down from leaving out all turns and stops
/// at the first `k` below the target: a budget's worth of short renders.
fn reference_drop(tok: &Tokenizer, tpl: &ChatTemplate, msgs: &[ChatMessage], budget: usize) -> Option<usize> {
    let full = unbudgeted(tok, tpl, msgs).ids.len();
    if full <= budget {
        return Some(0);
    }
    let (d, b) = (full - budget, (budget / 4).max(1));
    let target = d.div_ceil(b) * b;
    let starts = turn_starts(msgs);
    let mut best = None;
    for (i, &s) in starts.iter().enumerate().rev() {
        let len = unbudgeted(tok, tpl, &without(msgs, s)).ids.len();
        if i == starts.len() - 1 && len > budget {
            return None;
        }
        if i == starts.len() - 1 && full - len < target {
            return Some(s); // no k reaches the target; all fit
        }
        if full - len < target {
            break;
        }
        best = Some(s);
    }
    best
}

/// The prompt with the fewest turns left out that fits (the rule before blocks, for comparison).
fn fewest_fit(tok: &Tokenizer, tpl: &ChatTemplate, msgs: &[ChatMessage], budget: usize) -> Vec<u32> {
    let mut best = Vec::new();
    for &s in turn_starts(msgs).iter().rev() {
        let p = unbudgeted(tok, tpl, &without(msgs, s)).ids;
        if p.len() > budget {
            break;
        }
        best = p;
    }
    best
}

/// 300 turns through one template: every prompt fits, keeps the system message, ends with
/// the last user message and the generation prompt; after the first overflow most prompts
/// extend the previous prompt and reply, the drop jumps about once per block, and the tokens
/// to prefill per turn average far below the budget.
fn long_conversation(name: &str, tok: &Tokenizer, tpl: &ChatTemplate, seed: u64) {
    let (context, max_new) = (1024, 128);
    let budget = prompt_budget(context, max_new);
    let block = drop_block(budget);
    assert_eq!(block, budget / 4);
    let mut rng = Rng(seed);
    let system = ChatMessage::system("You are a terse assistant. Answer in one line.");
    let mut msgs = vec![system.clone()];
    let sys_ids = unbudgeted(tok, tpl, &[system.clone(), ChatMessage::user("x")]).ids;
    let sys_len = sys_ids.iter().position(|&t| t == IM_END).unwrap() + 2; // `<|im_end|>\n`
    let sys_ids = &sys_ids[..sys_len];

    let mut prev: Option<Vec<u32>> = None; // the previous prompt and its reply
    let (mut prev_old, mut old_fresh) = (None::<Vec<u32>>, 0usize); // the same with the fewest turns left out
    let (mut overflowed_at, mut shared, mut fresh, mut jumps, mut last_dropped) = (None, 0, 0usize, 0, 0);
    let (mut appended, mut full_at_overflow, mut full_now) = (0, 0, 0);
    let turns = 300;
    let mut prompt_secs = 0.0;
    for turn in 0..turns {
        let user = if turn % 37 == 5 { text(&mut rng, 120) } else { text(&mut rng, 30) };
        msgs.push(ChatMessage::user(user.clone()));
        let t0 = std::time::Instant::now();
        let p = chat_prompt(tok, tpl, &ChatRequest::new(&msgs), budget).unwrap();
        prompt_secs += t0.elapsed().as_secs_f64();
        assert!(p.ids.len() <= budget, "{name} turn {turn}: {} > {budget}", p.ids.len());
        assert!(p.ids.starts_with(sys_ids), "{name} turn {turn}: the system message is kept");
        let tail = unbudgeted(tok, tpl, &[system.clone(), ChatMessage::user(user)]).ids;
        assert!(p.ids.ends_with(&tail[sys_len..]), "{name} turn {turn}: ends with the last user message");
        // The same as rendering the kept messages without a budget, and as the rule says.
        let kept = without(&msgs, p.dropped_messages);
        assert!(kept.len() == 2 || kept[1].role == Role::User, "{name} turn {turn}: a turn starts at a user message");
        let full = unbudgeted(tok, tpl, &msgs).ids.len();
        assert_eq!(unbudgeted(tok, tpl, &kept).ids, p.ids, "{name} turn {turn}");
        assert_eq!(p.dropped_tokens, full - p.ids.len());
        assert_eq!(Some(p.dropped_messages), reference_drop(tok, tpl, &msgs, budget), "{name} turn {turn}");
        let common = prev.as_ref().map_or(0, |s| s.iter().zip(&p.ids).take_while(|(a, b)| a == b).count());
        let old = if full <= budget { p.ids.clone() } else { fewest_fit(tok, tpl, &msgs, budget) };
        let old_common = prev_old.as_ref().map_or(0, |s| s.iter().zip(&old).take_while(|(a, b)| a == b).count());
        if overflowed_at.is_some() {
            fresh += p.ids.len() - common;
            old_fresh += old.len() - old_common;
            if prev.as_ref().is_some_and(|s| common == s.len()) {
                shared += 1;
            }
            if p.dropped_messages != last_dropped {
                assert!(p.dropped_messages > last_dropped);
                jumps += 1;
            }
            full_now = full;
        } else if p.dropped_messages > 0 {
            overflowed_at = Some(turn);
            (full_at_overflow, full_now) = (full, full);
        }
        last_dropped = p.dropped_messages;
        let reply = text(&mut rng, if turn % 11 == 3 { 90 } else { 40 });
        let reply_ids = [tok.encode(&reply).unwrap(), vec![IM_END]].concat();
        prev = Some([p.ids.clone(), reply_ids.clone()].concat());
        prev_old = Some([old, reply_ids].concat());
        msgs.push(ChatMessage::assistant(reply));
        appended = full_now - full_at_overflow;
    }
    let first = overflowed_at.expect("the conversation overflows");
    let after = turns - 1 - first;
    let avg = fresh as f64 / after as f64;
    eprintln!(
        "{name}: budget {budget}, block {block}; first overflow at turn {first}; {after} turns after it: \
         {shared} extend the previous prompt+reply, {jumps} block jumps for {appended} tokens of new turns \
         ({:.1} expected), {avg:.1} tokens per turn not a prefix of the previous sequence",
        appended as f64 / block as f64
    );
    let old_avg = old_fresh as f64 / after as f64;
    eprintln!("{name}: leaving out the fewest turns that fit (the rule before blocks) would prefill {old_avg:.1}");
    eprintln!("{name}: chat_prompt took {:.1} ms per turn on average", prompt_secs * 1000.0 / turns as f64);
    assert!(first > 5 && after > 200, "{name}: overflow at turn {first}");
    assert!(shared * 3 >= after * 2, "{name}: {shared} of {after} turns share the previous sequence");
    assert!(jumps >= 1 && jumps <= appended / block + 2, "{name}: {jumps} jumps for {appended} tokens");
    assert!(avg < budget as f64 / 3.0, "{name}: {avg} tokens per turn to prefill");
    assert!(avg * 2.0 < old_avg, "{name}: {avg} vs {old_avg} tokens per turn to prefill");
}

#[test]
fn long_conversation_keeps_its_prefix_qwen3() {
    long_conversation("qwen3", &tokenizer(), &qwen3_template(), 1);
}

#[test]
fn long_conversation_keeps_its_prefix_chatml() {
    long_conversation("chatml", &tokenizer(), &ChatTemplate::chatml(), 2);
}

/// `continue_prompt`: the fewest old turns left out that leave the reply its room; the same
/// rendering as the kept messages alone; None when even the least prompt does not.
#[test]
fn continue_prompt_leaves_room_for_the_reply() {
    let tok = tokenizer();
    for (name, tpl) in [("qwen3", qwen3_template()), ("chatml", ChatTemplate::chatml())] {
        let mut rng = Rng(7);
        let mut msgs = vec![ChatMessage::system("Be brief.")];
        for _ in 0..40 {
            msgs.push(ChatMessage::user(text(&mut rng, 30)));
            msgs.push(ChatMessage::assistant(text(&mut rng, 40)));
        }
        msgs.push(ChatMessage::user("and now a long story, please"));
        let req = ChatRequest::new(&msgs);
        let least = unbudgeted(&tok, &tpl, &[msgs[0].clone(), msgs.last().unwrap().clone()]).ids.len();
        let full = unbudgeted(&tok, &tpl, &msgs).ids.len();
        let context = 512;
        for (reply_len, remaining) in [(256, 1000), (300, 20), (100, 1), (400, 3), (context - least - 1, 1)] {
            let room = remaining.min(context / 4);
            let p = continue_prompt(&tok, &tpl, &req, reply_len, context, remaining).unwrap();
            let fits = least + reply_len + room <= context;
            let Some(p) = p else {
                assert!(!fits, "{name}: reply {reply_len}, remaining {remaining}: None though the least prompt fits");
                continue;
            };
            assert!(fits);
            assert!(p.ids.len() + reply_len + room <= context, "{name}: reply {reply_len}: {}", p.ids.len());
            let kept = without(&msgs, p.dropped_messages);
            assert_eq!(kept[1].role, Role::User);
            assert_eq!(unbudgeted(&tok, &tpl, &kept).ids, p.ids, "{name}");
            assert_eq!(p.dropped_tokens, full - p.ids.len());
            // The fewest: keeping one more turn leaves too little room.
            let starts = turn_starts(&msgs);
            let i = starts.iter().position(|&s| s == p.dropped_messages).unwrap();
            assert!(i > 0);
            let more = unbudgeted(&tok, &tpl, &without(&msgs, starts[i - 1])).ids.len();
            assert!(more + reply_len + room > context, "{name}: reply {reply_len}: one more turn fits");
        }
        // No room at all, or nothing left to generate: None.
        assert!(continue_prompt(&tok, &tpl, &req, context - least, context, 10).unwrap().is_none());
        assert!(continue_prompt(&tok, &tpl, &req, context, context, 10).unwrap().is_none());
        assert!(continue_prompt(&tok, &tpl, &req, 10, context, 0).unwrap().is_none());
        // A request chat_prompt refuses is refused here too.
        assert!(matches!(continue_prompt(&tok, &tpl, &ChatRequest::new(&[]), 1, context, 1), Err(Error::Request(_))));

        // A single message larger than the whole context is still an error for chat_prompt
        // (and no continuation can help it).
        let huge = vec![msgs[0].clone(), ChatMessage::user("word ".repeat(600))];
        match chat_prompt(&tok, &tpl, &ChatRequest::new(&huge), prompt_budget(context, 64)) {
            Err(Error::ContextFull(m)) => assert!(m.contains("over the budget"), "{m}"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(continue_prompt(&tok, &tpl, &ChatRequest::new(&huge), 1, context, 10).unwrap().is_none());
    }
}
