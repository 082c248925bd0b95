//! The reply parser (src/tokenizer/reply.rs) on the real Qwen3 vocabulary: stop strings,
//! `<think>` reasoning, Hermes tool calls, Qwen v1 ReAct, and a property test against a
//! whole-text reference.
//!
//! Token ids are real: `Tokenizer::encode` / `encode_with_specials` of texts, or the byte-level
//! tokens of single bytes to split a character. The vocabulary is not in the repo
//! (`bash scripts/fetch-vocab.sh`); without it these tests print a message and pass.

use proptest::prelude::*;
use qwen_webgpu::error::Error;
use qwen_webgpu::tokenizer::reply::{ReplyFormat, MAX_STOP_STRINGS};
use qwen_webgpu::tokenizer::{ReplyDelta, ReplyMessage, ReplyOptions, ReplyParser, Tokenizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn vocab_path() -> PathBuf {
    let dir = match std::env::var_os("QWEN_VOCAB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/qwen-webgpu/vocab"),
    };
    dir.join("tokenizer.json")
}

/// The real Qwen3 tokenizer.json, or None (with a message) when it is not there.
fn tok() -> Option<&'static Tokenizer> {
    static T: OnceLock<Option<Tokenizer>> = OnceLock::new();
    let t = T.get_or_init(|| {
        let path = vocab_path();
        if !path.is_file() {
            eprintln!("skipping: {} is missing (run `bash scripts/fetch-vocab.sh`)", path.display());
            return None;
        }
        Some(Tokenizer::from_file(&path).expect("load tokenizer.json"))
    });
    t.as_ref()
}

/// Byte -> the id of the byte-level token of that single byte.
fn byte_ids(tok: &Tokenizer) -> &'static [u32; 256] {
    static B: OnceLock<[u32; 256]> = OnceLock::new();
    B.get_or_init(|| {
        let mut ids = [u32::MAX; 256];
        for id in 0..2000u32 {
            if let Ok(b) = tok.decode_bytes(&[id]) {
                if b.len() == 1 && ids[b[0] as usize] == u32::MAX {
                    ids[b[0] as usize] = id;
                }
            }
        }
        assert!(ids.iter().all(|&i| i != u32::MAX), "every byte has a token");
        ids
    })
}

/// The id of a text that is exactly one token.
fn one(tok: &Tokenizer, text: &str) -> u32 {
    let ids = tok.encode_with_specials(text).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is not one token: {ids:?}");
    ids[0]
}

fn opts(stop: &[&str], format: ReplyFormat, reasoning: bool, prefill: &str) -> ReplyOptions {
    ReplyOptions {
        stop: stop.iter().map(|s| s.to_string()).collect(),
        format,
        prefill: prefill.into(),
        reasoning,
        id_prefix: "call_t_".into(),
    }
}

/// A finished run: the delta of each push, the final flush, the message.
struct Run {
    steps: Vec<ReplyDelta>,
    last: ReplyDelta,
    msg: ReplyMessage,
    parser: ReplyParser,
}

impl Run {
    fn content_steps(&self) -> Vec<String> {
        self.steps.iter().map(|d| d.content.clone().unwrap_or_default()).collect()
    }
    fn all(&self) -> impl Iterator<Item = &ReplyDelta> {
        self.steps.iter().chain(std::iter::once(&self.last))
    }
    fn reason(&self, generator: &str) -> String {
        self.parser.finish_reason(generator)
    }
}

fn run_ids(tok: &Tokenizer, o: ReplyOptions, ids: &[u32]) -> Run {
    let mut p = ReplyParser::new(tok, o).expect("options are valid");
    let mut steps = Vec::new();
    for &id in ids {
        steps.push(p.push(id).expect("push"));
    }
    let last = p.finish();
    assert!(p.finish().is_empty(), "a second finish returns nothing");
    let msg = p.message();
    let run = Run { steps, last, msg, parser: p };
    check_joined(&run);
    run
}

/// Deltas joined == the message; tool-call deltas are whole calls with index == position.
fn check_joined(run: &Run) {
    let (mut content, mut reasoning, mut calls) = (None::<String>, None::<String>, Vec::new());
    for d in run.all() {
        if let Some(c) = &d.content {
            assert!(!c.is_empty(), "no empty content deltas");
            content.get_or_insert_with(String::new).push_str(c);
        }
        if let Some(r) = &d.reasoning_content {
            assert!(!r.is_empty(), "no empty reasoning deltas");
            reasoning.get_or_insert_with(String::new).push_str(r);
        }
        for c in &d.tool_calls {
            assert_eq!(c.index, calls.len());
            calls.push(c.clone());
        }
    }
    assert_eq!(content, run.msg.content);
    assert_eq!(reasoning, run.msg.reasoning_content);
    assert_eq!(calls.len(), run.msg.tool_calls.len());
    for (d, c) in calls.iter().zip(&run.msg.tool_calls) {
        assert_eq!(d.id.as_deref(), Some(c.id.as_str()));
        assert_eq!(d.kind.as_deref(), Some("function"));
        assert_eq!(d.function.name.as_deref(), Some(c.function.name.as_str()));
        assert_eq!(d.function.arguments.as_deref(), Some(c.function.arguments.as_str()));
        let args: Value = serde_json::from_str(&c.function.arguments).expect("arguments are JSON");
        assert!(args.is_object());
    }
}

fn run_text(tok: &Tokenizer, o: ReplyOptions, text: &str) -> Run {
    let ids = tok.encode_with_specials(text).unwrap();
    run_ids(tok, o, &ids)
}

fn plain(stop: &[&str]) -> ReplyOptions {
    opts(stop, ReplyFormat::Plain, false, "")
}

// ---------------------------------------------------------------------------------------------
// Stop strings

#[test]
fn stop_holds_back_only_a_possible_stop() {
    let Some(t) = tok() else { return };
    // "world peace" could start at "world", not at " world": only "world" waits.
    let ids = [one(t, "Hello"), one(t, " world"), one(t, " war")];
    let r = run_ids(t, plain(&["world peace"]), &ids);
    assert_eq!(r.content_steps(), ["Hello", " ", "world war"]);
    assert!(r.last.is_empty());
    assert!(!r.parser.stopped());
    assert_eq!(r.reason("length"), "length");

    // No stop strings: nothing is held at all.
    let r = run_ids(t, plain(&[]), &ids);
    assert_eq!(r.content_steps(), ["Hello", " world", " war"]);

    // Split across tokens: " world" + " peace" ends the reply before " world".
    let ids = [one(t, "Hello"), one(t, " world"), one(t, " peace"), one(t, "!")];
    let r = run_ids(t, plain(&["world peace"]), &ids);
    assert_eq!(r.content_steps(), ["Hello", " ", "", ""]);
    assert!(r.parser.stopped());
    assert_eq!(r.msg.content.as_deref(), Some("Hello "));
    assert_eq!(r.reason("stop"), "stop");
}

#[test]
fn stop_overlapping_prefixes_take_the_earliest() {
    let Some(t) = tok() else { return };
    let ids = [one(t, "x"), one(t, "a"), one(t, "b"), one(t, "c")];
    // "ab" completes before "abc" could.
    let r = run_ids(t, plain(&["abc", "ab"]), &ids);
    assert_eq!(r.content_steps(), ["x", "", "", ""]);
    assert_eq!(r.msg.content.as_deref(), Some("x"));
    assert!(r.parser.stopped());

    // "a" waits for "abc", then "bd" turns up one character later: the cut is before "b".
    let ids = [one(t, "xa"), one(t, "b"), one(t, "d"), one(t, "c")];
    let r = run_ids(t, plain(&["abc", "bd"]), &ids);
    assert_eq!(r.content_steps(), ["x", "", "a", ""]);
    assert_eq!(r.msg.content.as_deref(), Some("xa"));

    // A held "ab" that does not become "abc" comes out with what follows.
    let ids = [one(t, "xa"), one(t, "b"), one(t, "d")];
    let r = run_ids(t, plain(&["abc"]), &ids);
    assert_eq!(r.content_steps(), ["x", "", "abd"]);
    // ...or at the end, when nothing follows.
    let ids = [one(t, "xa"), one(t, "b")];
    let r = run_ids(t, plain(&["abc"]), &ids);
    assert_eq!(r.content_steps(), ["x", ""]);
    assert_eq!(r.last.content.as_deref(), Some("ab"));
    assert!(!r.parser.stopped());
}

#[test]
fn stop_at_the_first_token() {
    let Some(t) = tok() else { return };
    let r = run_ids(t, plain(&["Hi"]), &[one(t, "Hi"), one(t, " world")]);
    assert!(r.all().all(ReplyDelta::is_empty));
    assert_eq!(r.msg, ReplyMessage::default());
    assert!(r.parser.stopped());
    // Later pushes are ignored, even of ids that would be errors.
    let mut p = ReplyParser::new(t, plain(&["Hi"])).unwrap();
    assert!(p.push(one(t, "Hi")).unwrap().is_empty());
    assert!(p.push(u32::MAX).unwrap().is_empty());
}

#[test]
fn stop_inside_split_characters() {
    let Some(t) = tok() else { return };
    let b = byte_ids(t);
    // 龘 is two byte-level tokens on this vocabulary.
    let dragon = t.encode("龘").unwrap();
    assert_eq!(dragon.len(), 2);
    let ids = [vec![one(t, "a")], dragon.clone(), vec![one(t, "b")]].concat();
    let r = run_ids(t, plain(&["龘"]), &ids);
    assert_eq!(r.content_steps(), ["a", "", "", ""]);
    assert_eq!(r.msg.content.as_deref(), Some("a"));

    // A stop string that starts with the character: the character waits, then comes out.
    let ids = [dragon.clone(), vec![one(t, "y")]].concat();
    let r = run_ids(t, plain(&["龘x"]), &ids);
    assert_eq!(r.content_steps(), ["", "", "龘y"]);

    // An emoji fed byte by byte; the stop is the emoji + "!".
    let mut ids = vec![one(t, "A")];
    ids.extend("😀".bytes().map(|x| b[x as usize]));
    ids.push(one(t, "?"));
    let r = run_ids(t, plain(&["😀!"]), &ids);
    assert_eq!(r.content_steps(), ["A", "", "", "", "", "😀?"]);
    ids.pop();
    ids.push(one(t, "!"));
    let r = run_ids(t, plain(&["😀!"]), &ids);
    assert_eq!(r.msg.content.as_deref(), Some("A"));
    assert!(r.parser.stopped());

    // A stop inside one token that holds two characters: the text before it still comes out.
    let ids = t.encode("好的呀").unwrap();
    let r = run_ids(t, plain(&["的"]), &ids);
    assert_eq!(r.content_steps()[0], "好");
    assert_eq!(r.msg.content.as_deref(), Some("好"));
}

#[test]
fn stop_matches_markers_and_reasoning_text_but_not_the_prefill() {
    let Some(t) = tok() else { return };
    // The stop string is matched on the generated text, added-token text included.
    let text = "<think>\nabc</think>\n\nxyz";
    let r = run_text(t, opts(&["</think>"], ReplyFormat::Plain, true, ""), text);
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("abc"));
    assert_eq!(r.msg.content, None);
    assert!(r.parser.stopped());
    // The prefill is prompt: a stop string in it does not count.
    let r = run_text(t, opts(&["<think>"], ReplyFormat::Plain, true, "<think>\n"), "abc</think>\n\nxyz");
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("abc"));
    assert_eq!(r.msg.content.as_deref(), Some("xyz"));
    assert!(!r.parser.stopped());
}

#[test]
fn stop_options_are_checked() {
    let Some(t) = tok() else { return };
    let many: Vec<String> = (0..=MAX_STOP_STRINGS).map(|i| format!("s{i}")).collect();
    let too_many = ReplyOptions { stop: many, ..Default::default() };
    match ReplyParser::new(t, too_many) {
        Err(Error::Request(m)) => assert!(m.starts_with("stop"), "{m}"),
        other => panic!("expected a request error, got {other:?}"),
    }
    match ReplyParser::new(t, plain(&["a", ""])) {
        Err(Error::Request(m)) => assert!(m.starts_with("stop[1]"), "{m}"),
        other => panic!("expected a request error, got {other:?}"),
    }
    let long = "x".repeat(5000);
    assert!(matches!(ReplyParser::new(t, plain(&[&long])), Err(Error::Request(_))));
    // A bad id is an error and changes nothing.
    let mut p = ReplyParser::new(t, plain(&[])).unwrap();
    assert!(matches!(p.push(u32::MAX), Err(Error::Tokenizer(_))));
    assert_eq!(p.push(one(t, "Hi")).unwrap().content.as_deref(), Some("Hi"));
}

#[test]
fn control_tokens_never_reach_the_content() {
    let Some(t) = tok() else { return };
    let text = "Hi<|im_end|><|endoftext|><|im_start|><|object_ref_start|><tool_response>x</tool_response>";
    let ids = t.encode_with_specials(text).unwrap();
    assert!(ids.contains(&151645) && ids.contains(&151643) && ids.contains(&151644) && ids.contains(&151665));
    let r = run_ids(t, plain(&[]), &ids);
    assert_eq!(r.msg.content.as_deref(), Some("Hi<tool_response>x</tool_response>"));
    // The same text as ordinary tokens is ordinary text.
    let r = run_ids(t, plain(&[]), &t.encode("a<|im_end|>").unwrap());
    assert_eq!(r.msg.content.as_deref(), Some("a<|im_end|>"));
}

// ---------------------------------------------------------------------------------------------
// Reasoning

fn thinking(prefill: &str) -> ReplyOptions {
    opts(&[], ReplyFormat::Plain, true, prefill)
}

#[test]
fn reasoning_is_streamed_and_stripped_as_qwen3s_template_does() {
    let Some(t) = tok() else { return };
    let text = "<think>\nLet me think.\n\nOK.\n</think>\n\nThe answer.";
    let ids = t.encode_with_specials(text).unwrap();
    assert_eq!(ids[0], 151667);
    let r = run_ids(t, thinking(""), &ids);
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("Let me think.\n\nOK."));
    assert_eq!(r.msg.content.as_deref(), Some("The answer."));
    // Streamed: "Let" comes out as soon as it is generated (id 2, after "<think>" and "\n").
    assert_eq!(r.steps[2].reasoning_content.as_deref(), Some("Let"));
    let pieces = r.steps.iter().filter(|d| d.reasoning_content.is_some()).count();
    assert!(pieces >= 4, "reasoning in pieces, got {pieces}");
    // Reasoning deltas all come before content deltas.
    let first_content = r.steps.iter().position(|d| d.content.is_some()).unwrap();
    assert!(r.steps[first_content..].iter().all(|d| d.reasoning_content.is_none()));
    // Re-rendered as Qwen3's template renders an assistant message, the reply is the text.
    let m = &r.msg;
    let rendered = format!(
        "<think>\n{}\n</think>\n\n{}",
        m.reasoning_content.as_deref().unwrap().trim_matches('\n'),
        m.content.as_deref().unwrap().trim_start_matches('\n')
    );
    assert_eq!(rendered, text);

    // Off: the markers are text.
    let r = run_ids(t, opts(&[], ReplyFormat::Plain, false, ""), &ids);
    assert_eq!(r.msg.content.as_deref(), Some(text));
    assert_eq!(r.msg.reasoning_content, None);
    // Never opened: content.
    let r = run_text(t, thinking(""), "The answer.\n</think>x");
    assert_eq!(r.msg.content.as_deref(), Some("The answer.\n</think>x"));
    assert_eq!(r.msg.reasoning_content, None);
    // The same with the markers spelled in ordinary tokens.
    let r = run_ids(t, thinking(""), &t.encode(text).unwrap());
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("Let me think.\n\nOK."));
    assert_eq!(r.msg.content.as_deref(), Some("The answer."));
}

#[test]
fn reasoning_prefill_and_unclosed_think() {
    let Some(t) = tok() else { return };
    for prefill in ["<think>\n", "<think>", "<think>\nI"] {
        let gen = "ponder\n</think>\n\nDone.";
        let r = run_text(t, thinking(prefill), gen);
        // The prefill's own text ("I") is never emitted.
        assert_eq!(r.msg.reasoning_content.as_deref(), Some("ponder"), "prefill {prefill:?}");
        assert_eq!(r.msg.content.as_deref(), Some("Done."));
    }
    // Thinking switched off by the prompt (Qwen3 enable_thinking=false renders an empty block).
    let r = run_text(t, thinking("<think>\n\n</think>\n\n"), "Hello.");
    assert_eq!(r.msg.reasoning_content, None);
    assert_eq!(r.msg.content.as_deref(), Some("Hello."));
    // Unclosed at the end (cut by length): its text is reasoning; trailing newlines go.
    let r = run_text(t, thinking(""), "<think>\nstill thinking\n");
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("still thinking"));
    assert_eq!(r.msg.content, None);
    assert_eq!(r.reason("length"), "length");
    // An unfinished "</thi" at the end is reasoning text too.
    let r = run_text(t, thinking(""), "<think>\nabc</thi");
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("abc</thi"));
    // Trailing newlines inside reasoning wait until something follows them.
    let ids = t.encode_with_specials("<think>\nab\n\ncd</think>").unwrap();
    let r = run_ids(t, thinking(""), &ids);
    let pieces: Vec<&str> = r.steps.iter().filter_map(|d| d.reasoning_content.as_deref()).collect();
    assert_eq!(pieces.concat(), "ab\n\ncd");
    assert!(pieces.iter().all(|p| !p.ends_with('\n')), "{pieces:?}");
}

// ---------------------------------------------------------------------------------------------
// Hermes tool calls (Qwen2.5 / Qwen3)

fn hermes(prefill: &str) -> ReplyOptions {
    opts(&[], ReplyFormat::Hermes, true, prefill)
}

const CALL_A: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>";
const CALL_B: &str = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"Europe/Paris\"}}\n</tool_call>";

#[test]
fn one_tool_call_streams_as_openai_does() {
    let Some(t) = tok() else { return };
    let ids = t.encode_with_specials(CALL_A).unwrap();
    assert_eq!((ids[0], *ids.last().unwrap()), (151657, 151658));
    let r = run_ids(t, hermes(""), &ids);
    // Held until "</tool_call>", then one delta carrying the whole call.
    assert!(r.steps[..ids.len() - 1].iter().all(ReplyDelta::is_empty));
    let d = serde_json::to_value(&r.steps[ids.len() - 1]).unwrap();
    assert_eq!(
        d,
        json!({"tool_calls": [{"index": 0, "id": "call_t_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}]})
    );
    assert_eq!(r.msg.content, None);
    assert_eq!(r.reason("stop"), "tool_calls");
    let m = serde_json::to_value(&r.msg).unwrap();
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
}

#[test]
fn two_tool_calls_after_thinking_and_text() {
    let Some(t) = tok() else { return };
    let text = format!("<think>\nTwo lookups.\n</think>\n\nLet me check.\n\n{CALL_A}\n{CALL_B}\n");
    let r = run_text(t, hermes(""), &text);
    assert_eq!(r.msg.reasoning_content.as_deref(), Some("Two lookups."));
    assert_eq!(r.msg.content.as_deref(), Some("Let me check."));
    let calls = &r.msg.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[1].id.as_str()), ("call_t_0", "call_t_1"));
    assert_eq!(calls[1].function.name, "get_time");
    let args: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
    assert_eq!(args, json!({"tz": "Europe/Paris"}));
    assert_eq!(r.reason("stop"), "tool_calls");
    // Text between and after calls is content; whitespace-only text is dropped.
    let text = format!("{CALL_A}\nand then\n{CALL_B}\n\nDone.");
    let r = run_text(t, hermes(""), &text);
    assert_eq!(r.msg.content.as_deref(), Some("and thenDone."));
    assert_eq!(r.msg.tool_calls.len(), 2);
    // Arguments written as a JSON string holding an object.
    let r = run_text(t, hermes(""), "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>");
    assert_eq!(r.msg.tool_calls[0].function.arguments, "{\"x\": 1}");
}

#[test]
fn malformed_or_cut_tool_calls_are_content() {
    let Some(t) = tok() else { return };
    for body in [
        "{\"name\": \"f\", \"arguments\": {\"x\": 1}", // unbalanced
        "{\"name\": \"f\", \"arguments\": [1]}",       // arguments not an object
        "{\"arguments\": {}}",                         // no name
        "not json at all",
    ] {
        let text = format!("Sure.\n<tool_call>\n{body}\n</tool_call>");
        let r = run_text(t, hermes(""), &text);
        assert_eq!(r.msg.content.as_deref(), Some(text.as_str()), "{body}");
        assert!(r.msg.tool_calls.is_empty());
        assert_eq!(r.reason("stop"), "invalid_tool_call");
    }
    // Cut by length in the middle of the JSON: the raw text is content.
    let cut = &CALL_A[..40];
    let r = run_text(t, hermes(""), cut);
    assert_eq!(r.msg.content.as_deref(), Some(cut));
    assert_eq!(r.reason("length"), "invalid_tool_call");
    // A stop string inside a call leaves it unterminated.
    let r = run_text(t, opts(&["Paris"], ReplyFormat::Hermes, false, ""), CALL_A);
    assert_eq!(r.msg.content.as_deref(), Some("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \""));
    assert_eq!(r.reason("stop"), "invalid_tool_call");
    // A good call then a cut one: the good one stands.
    let text = format!("{CALL_A}\n{}", &CALL_B[..30]);
    let r = run_text(t, hermes(""), &text);
    assert_eq!(r.msg.tool_calls.len(), 1);
    assert_eq!(r.msg.content.as_deref(), Some(&CALL_B[..30]));
    assert_eq!(r.reason("length"), "tool_calls");
    // Format Plain: a tool call is text.
    let r = run_text(t, opts(&[], ReplyFormat::Plain, false, ""), CALL_A);
    assert_eq!(r.msg.content.as_deref(), Some(CALL_A));
    assert_eq!(r.reason("stop"), "stop");
}

#[test]
fn tool_call_prefills() {
    let Some(t) = tok() else { return };
    // tool_choice "required": the prompt ends with "<tool_call>\n".
    let r = run_text(t, hermes("<tool_call>\n"), "{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>");
    assert_eq!(r.msg.tool_calls[0].function.name, "f");
    assert_eq!(r.msg.tool_calls[0].function.arguments, "{\"x\": 1}");
    assert_eq!(r.msg.content, None);
    // A named function: the prompt ends inside the JSON.
    let prefill = "<tool_call>\n{\"name\": \"f\", \"arguments\": ";
    let r = run_text(t, hermes(prefill), "{\"y\": [true]}}\n</tool_call>");
    assert_eq!(r.msg.tool_calls[0].function.arguments, "{\"y\": [true]}");
    // Malformed: the content is what was generated, never the prefill.
    let r = run_text(t, hermes(prefill), "oops\n</tool_call>");
    assert_eq!(r.msg.content.as_deref(), Some("oops\n</tool_call>"));
    assert_eq!(r.reason("stop"), "invalid_tool_call");
    // A whole call in the prefill comes out with the first push.
    let mut p = ReplyParser::new(t, hermes(CALL_A)).unwrap();
    let d = p.push(one(t, "Hi")).unwrap();
    assert_eq!(d.tool_calls.len(), 1);
    assert_eq!(d.content.as_deref(), Some("Hi"));
}

// ---------------------------------------------------------------------------------------------
// ReAct (Qwen v1, openai_api.py of QwenLM/Qwen)

/// `parse_response` of QwenLM/Qwen's openai_api.py, line for line: (content, call).
fn parse_response(response: &str) -> (String, Option<(String, String)>) {
    let find = |s: &str, p: &str| s.find(p).map(|i| i as isize).unwrap_or(-1);
    let mut response = response.to_string();
    let (mut func_name, mut func_args) = (String::new(), String::new());
    let i = find(&response, "\nAction:");
    let j = find(&response, "\nAction Input:");
    let mut k = find(&response, "\nObservation:");
    if 0 <= i && i < j {
        if k < j {
            response = response.trim_end().to_string() + "\nObservation:";
        }
        k = find(&response, "\nObservation:");
        func_name = response[i as usize + "\nAction:".len()..j as usize].trim().to_string();
        func_args = response[j as usize + "\nAction Input:".len()..k as usize].trim().to_string();
    }
    if !func_name.is_empty() {
        let mut r = response[..i as usize].to_string();
        if let Some(t) = r.find("Thought: ") {
            r = r[t + "Thought: ".len()..].to_string();
        }
        return (r.trim().to_string(), Some((func_name, func_args)));
    }
    if let Some(z) = response.rfind("\nFinal Answer: ") {
        response = response[z + "\nFinal Answer: ".len()..].to_string();
    }
    (response, None)
}

fn react(stop: &[&str], prefill: &str) -> ReplyOptions {
    opts(stop, ReplyFormat::ReAct, false, prefill)
}

#[test]
fn react_replies_parse_as_openai_api_py_does() {
    let Some(t) = tok() else { return };
    let cases = [
        "Thought: I need the weather in Paris.\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}\nObservation:",
        "Thought: I need the weather.\nAction: get_weather\nAction Input: {\"city\": \"巴黎\"}\n",
        "Thought: I now know the final answer.\nFinal Answer: It is sunny, 22°C.",
        "Just an answer without the format.",
        "Thought: hmm\nAction: image_gen\nAction Input: {\"prompt\": \"a cat\", \"n\": 2}",
    ];
    for text in cases {
        for stop in [&[][..], &["Observation:"][..]] {
            let r = run_text(t, react(stop, ""), text);
            let cut = match stop.first().and_then(|s| text.find(s)) {
                Some(at) => &text[..at],
                None => text,
            };
            let (content, call) = parse_response(cut);
            assert_eq!(r.msg.content.clone().unwrap_or_default(), content, "{text:?}");
            match call {
                Some((name, args)) => {
                    assert_eq!(r.msg.tool_calls.len(), 1, "{text:?}");
                    assert_eq!(r.msg.tool_calls[0].function.name, name);
                    assert_eq!(r.msg.tool_calls[0].function.arguments, args);
                    assert_eq!(r.reason("stop"), "tool_calls");
                }
                None => {
                    assert!(r.msg.tool_calls.is_empty());
                    assert_eq!(r.reason("stop"), "stop");
                }
            }
        }
    }
}

#[test]
fn react_streaming_stops_and_failures() {
    let Some(t) = tok() else { return };
    // Observation ends the call even without the stop string; the rest is ignored.
    let text = "Thought: look it up\nAction: search\nAction Input: {\"q\": \"qwen\"}\nObservation: made up\nThought:";
    let ids = t.encode(text).unwrap();
    let mut p = ReplyParser::new(t, react(&[], "")).unwrap();
    let mut n = 0;
    while !p.stopped() {
        p.push(ids[n]).unwrap();
        n += 1;
    }
    assert_eq!(t.decode(&ids[..n]).unwrap(), text[..text.find("Observation:").unwrap() + "Observation:".len()]);
    p.finish();
    let m = p.message();
    assert_eq!(m.content.as_deref(), Some("look it up"));
    assert_eq!(m.tool_calls[0].function.arguments, "{\"q\": \"qwen\"}");
    assert_eq!(m.tool_calls[0].id, "call_t_0");

    // The final answer streams as it comes (the thought before it is dropped).
    let ids = t.encode("Thought: done\nFinal Answer: It is a long answer.").unwrap();
    let r = run_ids(t, react(&[], ""), &ids);
    let streamed = r.steps.iter().filter(|d| d.content.is_some()).count();
    assert!(streamed >= 4, "streamed in {streamed} pieces");
    assert_eq!(r.msg.content.as_deref(), Some("It is a long answer."));

    // Action Input that is not a JSON object, or no Action Input: everything is content.
    for text in ["Thought: x\nAction: f\nAction Input: not json\nObservation:", "Thought: x\nAction: f\n"] {
        let r = run_text(t, react(&["Observation:"], ""), text);
        let cut = &text[..text.find("Observation:").unwrap_or(text.len())];
        assert_eq!(r.msg.content.as_deref(), Some(cut));
        assert_eq!(r.reason("stop"), "invalid_tool_call");
    }

    // openai_api.py's text completion ends the prompt with "\nThought:": a prefill.
    let r = run_text(t, react(&["Observation:"], "Thought:"), " I call f.\nAction: f\nAction Input: {}\nObservation:");
    assert_eq!(r.msg.content.as_deref(), Some("I call f."));
    assert_eq!(r.msg.tool_calls[0].function.name, "f");
}

// ---------------------------------------------------------------------------------------------
// Property test: any text, any tokenization, against a whole-text reference.

/// What the parser must produce for `text` (whole, no prefill), written independently of the
/// streaming code from the rules in the module docs: (content, reasoning, calls, invalid).
fn reference(text: &str, stop: &[&str], reasoning: bool, hermes: bool) -> (String, String, Vec<(String, Value)>, bool) {
    let cut = stop.iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
    let text = &text[..cut];
    let (mut body, mut thought) = (text, "");
    if reasoning {
        if let Some(r) = text.trim_start().strip_prefix("<think>") {
            match r.find("</think>") {
                Some(i) => {
                    thought = r[..i].trim_matches('\n');
                    body = r[i + "</think>".len()..].trim_start_matches('\n');
                }
                None => {
                    thought = r.trim_matches('\n');
                    body = "";
                }
            }
        }
    }
    if !hermes {
        return (body.into(), thought.into(), vec![], false);
    }
    let (mut content, mut calls, mut invalid, mut after_call) = (String::new(), Vec::new(), false, false);
    let mut rest = body;
    loop {
        if after_call {
            rest = rest.trim_start();
        }
        let Some(i) = rest.find("<tool_call>") else {
            content.push_str(rest);
            break;
        };
        let (pre, call) = rest.split_at(i);
        let inner = &call["<tool_call>".len()..];
        let Some(j) = inner.find("</tool_call>") else {
            content.push_str(rest);
            invalid = true;
            break;
        };
        let whole = &call[..j + "<tool_call>".len() + "</tool_call>".len()];
        let parsed = serde_json::from_str::<Value>(inner[..j].trim()).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            let args = match v.get("arguments")? {
                Value::Object(_) => v["arguments"].clone(),
                Value::String(s) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object)?,
                _ => return None,
            };
            (!name.trim().is_empty()).then_some((name, args))
        });
        match parsed {
            Some(c) => {
                content.push_str(pre.trim_end());
                calls.push(c);
                after_call = true;
            }
            None => {
                content.push_str(pre);
                content.push_str(whole);
                invalid = true;
                after_call = false;
            }
        }
        rest = &call[whole.len()..];
    }
    (content, thought.into(), calls, invalid)
}

const FRAGMENTS: &[&str] = &[
    "a",
    "b",
    "ab",
    "c",
    " ",
    "\n",
    "\n\n",
    "中",
    "龘",
    "😀",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_",
    "think>",
    "{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
    "{\"name\": \"g\", \"arguments\": {}}",
    "{\"name\": \"h\", \"arguments\": \"{}\"}",
    "{bad",
    // Whole calls and blocks, so that random texts often hold valid ones.
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"中\"}}\n</tool_call>",
    "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>",
    "<think>\nhm\n</think>\n\n",
    "}",
    "Action:",
    "Thought: ",
    "\nFinal Answer: ",
    "\nAction Input: {}",
    "\nObservation:",
];
const STOPS: &[&str] = &["ab", "abc", "b中", "龘", "</tool_call>", "\n\n", "😀a", "think"];

/// `text` split at random byte positions; each piece becomes byte-level tokens, or (when it
/// is whole characters) `encode` / `encode_with_specials` ids.
fn tokenize_randomly(t: &Tokenizer, text: &str, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    let mut rnd = move |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n as u64) as usize
    };
    let bytes = text.as_bytes();
    let mut ids = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + 1 + rnd(12)).min(bytes.len());
        let piece = &bytes[at..end];
        match (std::str::from_utf8(piece), rnd(3)) {
            (Ok(s), 0) => ids.extend(t.encode_with_specials(s).unwrap()),
            (Ok(s), 1) => ids.extend(t.encode(s).unwrap()),
            _ => ids.extend(piece.iter().map(|&b| byte_ids(t)[b as usize])),
        }
        at = end;
    }
    assert_eq!(t.decode_bytes(&ids).unwrap(), bytes);
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn any_text_any_tokenization_matches_the_reference(
        frags in prop::collection::vec(0..FRAGMENTS.len(), 0..24),
        stops in prop::collection::vec(0..STOPS.len(), 0..3),
        format in 0..3usize,
        reasoning: bool,
        seed: u64,
    ) {
        let Some(t) = tok() else { return Ok(()) };
        let text: String = frags.iter().map(|&i| FRAGMENTS[i]).collect();
        let stop: Vec<&str> = stops.iter().map(|&i| STOPS[i]).collect();
        let ids = tokenize_randomly(t, &text, seed);
        let format = [ReplyFormat::Plain, ReplyFormat::Hermes, ReplyFormat::ReAct][format];
        let r = run_ids(t, opts(&stop, format, reasoning, ""), &ids);
        let cut = stop.iter().filter_map(|s| text.find(s)).min();
        if format == ReplyFormat::ReAct {
            // `\nObservation:` may stop it too. No reference beyond the examples above: it must
            // not fail, and its content is a piece of the text.
            prop_assert!(cut.is_none() || r.parser.stopped());
            let content = r.msg.content.clone().unwrap_or_default();
            prop_assert!(text.contains(&content));
            return Ok(());
        }
        prop_assert_eq!(r.parser.stopped(), cut.is_some());
        let (content, thought, calls, invalid) = reference(&text, &stop, reasoning, format == ReplyFormat::Hermes);
        prop_assert_eq!(r.msg.content.clone().unwrap_or_default(), content);
        prop_assert_eq!(r.msg.reasoning_content.clone().unwrap_or_default(), thought);
        let got: Vec<(String, Value)> = r.msg.tool_calls.iter()
            .map(|c| (c.function.name.clone(), serde_json::from_str(&c.function.arguments).unwrap()))
            .collect();
        prop_assert_eq!(got, calls);
        let reason = if !r.msg.tool_calls.is_empty() { "tool_calls" } else if invalid { "invalid_tool_call" } else { "length" };
        prop_assert_eq!(r.reason("length"), reason);
    }
}
