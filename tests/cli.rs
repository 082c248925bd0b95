//! The CLI contract outside checks rely on: `generate --print-ids` and `info`.

mod common;

use common::candle_ref::CandleQwen;
use common::{fixture, random_ids, Spec};
use std::process::Command;

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu")).args(args).output().expect("run CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn print_ids_matches_candle(name: &str, spec: &Spec, seed: u64) {
    let (dir, _) = fixture(name, spec, seed);
    let prompt = random_ids(11, spec.vocab, seed + 1);
    let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let (code, out, err) = cli(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "--max-new-tokens",
        "32",
        "--temperature",
        "0",
        "--print-ids",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    let got: Vec<u32> = out.trim().split(',').map(|s| s.parse().unwrap()).collect();
    assert_eq!(got, CandleQwen::greedy(&dir, spec, &prompt, 32), "{name}: CLI greedy ids differ from candle");
}

#[test]
fn generate_print_ids_v1() {
    print_ids_matches_candle("cli-v1", &Spec::qwen_v1(), 61);
}

#[test]
fn generate_print_ids_qwen2() {
    print_ids_matches_candle("cli-qwen2", &Spec::qwen2(false), 62);
}

#[test]
fn generate_print_ids_qwen3() {
    print_ids_matches_candle("cli-qwen3", &Spec::qwen3(), 63);
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let spec = Spec::qwen2(true);
    let (dir, _) = fixture("cli-seed", &spec, 64);
    let run = |seed: &str| {
        let (code, out, err) = cli(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--max-new-tokens",
            "24",
            "--temperature",
            "1.3",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--repetition-penalty",
            "1.1",
            "--seed",
            seed,
            "--print-ids",
        ]);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

#[test]
fn info_reports_family_parameters_and_memory() {
    let spec = Spec::qwen_v1();
    let (dir, tensors) = fixture("cli-info", &spec, 65);
    let (code, out, err) = cli(&["info", "--model", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let params: usize = tensors.values().map(|(_, v)| v.len()).sum();
    assert!(out.contains("family: qwen\n"), "{out}");
    assert!(out.contains(&format!("parameters: {params} ")), "want {params} in {out}");
    assert!(out.contains("gpu memory: total"), "{out}");
    // A context no GPU holds is refused up front (it used to wrap the memory figures around,
    // and panic in a debug build: found by scripts/probe.py).
    for (flag, v) in
        [("--context", "4611686018427387904"), ("--context", "0"), ("--context", "1048577"), ("--max-batch", "0")]
    {
        let (code, out, err) = cli(&["info", "--model", dir.to_str().unwrap(), flag, v]);
        assert_eq!(code, 1, "{flag} {v}: {out}{err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{flag} {v}: {err}");
    }
}

/// `quantize` writes a folder that `generate` loads as q4 without being told (auto), giving
/// the ids of `--weights q4` on the source; `info` names the format; a contradicting
/// `--weights` is an error.
#[test]
fn quantize_then_generate_and_info() {
    let spec = Spec::qwen_v1();
    let (dir, _) = fixture("cli-quant", &spec, 67);
    let out = common::temp_dir("cli-quant-q4");
    let (d, o) = (dir.to_str().unwrap(), out.to_str().unwrap());
    let (code, stdout, err) = cli(&["quantize", "--model", d, "--out", o, "--format", "q4"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("matrices quantized") && stdout.contains("smaller"), "{stdout}");
    let ids = |args: &[&str]| {
        let mut a = vec!["generate", "--prompt-ids", "3,1,4,1,5", "--max-new-tokens", "12", "--print-ids"];
        a.extend_from_slice(args);
        let (code, out, err) = cli(&a);
        assert_eq!(code, 0, "{args:?}: {err}");
        out.trim().to_string()
    };
    let want = ids(&["--model", d, "--weights", "q4"]);
    assert_eq!(ids(&["--model", o]), want, "pre-quantized folder (auto) vs --weights q4 on the source");
    assert_eq!(ids(&["--model", o, "--weights", "q4"]), want);
    let (code, _, err) = cli(&["generate", "--model", o, "--prompt-ids", "1", "--weights", "f16"]);
    assert_eq!(code, 1);
    assert!(err.contains("error:") && err.contains("pre-quantized to q4"), "{err}");
    let (code, info, err) = cli(&["info", "--model", o]);
    assert_eq!(code, 0, "{err}");
    assert!(info.contains("stored: pre-quantized q4") && info.contains("weights: q4 (as stored)"), "{info}");
    let (_, info, _) = cli(&["info", "--model", d, "--weights", "q8"]);
    assert!(
        info.contains("stored: plain checkpoint") && info.contains("weights: q8 (quantized while loading)"),
        "{info}"
    );
    let (code, _, err) = cli(&["quantize", "--model", d, "--out", o, "--format", "q8"]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds a checkpoint"), "{err}");
    let (code, _, err) = cli(&["quantize", "--model", d, "--out", o, "--format", "f16"]);
    assert_eq!(code, 1);
    assert!(err.contains("q4 or q8"), "{err}");
}

#[test]
fn errors_exit_cleanly() {
    let spec = Spec::qwen3();
    let (dir, _) = fixture("cli-err", &spec, 66);
    let d = dir.to_str().unwrap();
    for (args, want) in [
        (vec!["generate", "--model", d, "--prompt-ids", "1,99999"], "out of range"),
        (vec!["generate", "--model", d, "--prompt-ids", "1", "--top-p", "2"], "top_p"),
        (vec!["generate", "--model", "/nonexistent", "--prompt-ids", "1"], "config.json"),
        (vec!["generate", "--model", d, "--prompt-ids", "1,2", "--context", "1"], "context"),
        (vec!["generate", "--model", d, "--prompt-ids", "1,2", "--weights", "q3"], "unknown weight format"),
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("error:") && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The real vocabulary, fetched by scripts/fetch-vocab.sh (the README test command runs it).
fn vocab(file: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("QWEN_VOCAB_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/qwen-webgpu/vocab"));
    let p = dir.join(file);
    assert!(p.exists(), "{} is missing: run scripts/fetch-vocab.sh", p.display());
    p
}

/// The CLI with stdin, stdout and stderr piped.
fn spawn_piped(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_qwen-webgpu"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn cli_stdin(args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut child = spawn_piped(args);
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn tokenize_both_formats_and_decode() {
    for file in ["qwen.tiktoken", "tokenizer.json"] {
        let t = vocab(file);
        let t = t.to_str().unwrap();
        // Ids from the known ChatML answer in QWEN.md.
        let (code, out, err) = cli_stdin(&["tokenize", "--tokenizer", t], b"You are a helpful assistant.");
        assert_eq!(code, 0, "{err}");
        assert_eq!(String::from_utf8(out).unwrap().trim(), "2610,525,264,10950,17847,13", "{file}");
        // Control-token text is plain text, not a control token.
        let (_, out, _) = cli_stdin(&["tokenize", "--tokenizer", t], b"<|im_end|>");
        assert!(!String::from_utf8(out).unwrap().split(',').any(|s| s.trim() == "151645"), "{file}");
        let text = "Qwen 通义千问 🤖\r\n  x = 12345;".as_bytes();
        let (_, ids, _) = cli_stdin(&["tokenize", "--tokenizer", t], text);
        let (code, back, err) = cli_stdin(&["tokenize", "--tokenizer", t, "--decode"], &ids);
        assert_eq!(code, 0, "{err}");
        assert_eq!(back, text, "{file} round trip");
        let (code, _, err) = cli_stdin(&["tokenize", "--tokenizer", t, "--decode"], b"1,999999999");
        assert_eq!(code, 1);
        assert!(err.contains("error:"), "{err}");
    }
}

/// A tiny one-layer qwen2 shape over the real 151936-row vocabulary.
fn real_vocab_spec() -> Spec {
    Spec { hidden: 32, heads: 2, kv_heads: 1, head_dim: 16, ff: 40, layers: 1, vocab: 151936, ..Spec::qwen2(false) }
}

/// A tiny qwen2 model over the real 151936-row vocabulary, with the real tokenizer.json.
fn real_vocab_model(name: &str, seed: u64) -> std::path::PathBuf {
    let spec = real_vocab_spec();
    let (dir, _) = fixture(name, &spec, seed);
    std::fs::copy(vocab("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

/// `generate --stop`: the text ends just before the first occurrence of a stop string (one
/// taken from the middle of the unstopped text, so it may span tokens), and generation ends at
/// the token that completed it.
#[test]
fn generate_stop_strings_end_the_text() {
    let dir = real_vocab_model("cli-vocab-stop", 71);
    let d = dir.to_str().unwrap();
    let base = ["generate", "--model", d, "--prompt", "你好, Qwen!", "--max-new-tokens", "24", "--temperature", "0"];
    let (code, text, err) = cli(&base);
    assert_eq!(code, 0, "{err}");
    let text = text.strip_suffix('\n').unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 8, "a reply long enough to cut: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &text[..text.find(&stop).unwrap()];
    let (code, out, err) = cli(&[&base[..], &["--stop", &stop, "--stop", "never appears §"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.strip_suffix('\n').unwrap(), want, "stop {stop:?}");
    assert!(err.contains("finish Stop (a --stop string)"), "{err}");
    let (_, all_ids, _) = cli(&[&base[..], &["--print-ids"]].concat());
    let (_, stop_ids, _) = cli(&[&base[..], &["--print-ids", "--stop", &stop]].concat());
    let (all_ids, stop_ids) = (all_ids.trim(), stop_ids.trim());
    assert!(all_ids.starts_with(stop_ids) && stop_ids.len() < all_ids.len(), "{stop_ids} vs {all_ids}");
}

/// `generate --prompt --chat` with a tiny model over the real vocabulary: the streamed text
/// is exactly the decoded ids.
#[test]
fn generate_text_prompt_with_chat_template() {
    let dir = real_vocab_model("cli-vocab", 67);
    let d = dir.to_str().unwrap();
    let base = ["generate", "--model", d, "--prompt", "你好, Qwen!", "--chat", "--max-new-tokens", "12"];
    let (code, ids, err) = cli(&[&base[..], &["--print-ids"]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, text, err) = cli(&base);
    assert_eq!(code, 0, "{err}");
    let special = |id: &str| id.parse::<u32>().unwrap() >= 151643;
    let plain: Vec<&str> = ids.trim().split(',').filter(|s| !special(s)).collect();
    let (_, want, _) = cli_stdin(
        &["tokenize", "--tokenizer", vocab("tokenizer.json").to_str().unwrap(), "--decode"],
        plain.join(",").as_bytes(),
    );
    assert_eq!(text.strip_suffix('\n').unwrap(), String::from_utf8_lossy(&want));
    // `chat`: the first reply is generate's; after /reset the same again; a second turn (which
    // prefills only itself, reusing the cache) answers too.
    let chat_args = ["chat", "--model", d, "--max-new-tokens", "12"];
    let (code, out, err) = cli_stdin(&chat_args, "你好, Qwen!\n/reset\n你好, Qwen!\n再见\n".as_bytes());
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8_lossy(&out);
    // Each reply ends with a newline (random replies may hold newlines of their own).
    let twice = format!("{text}{text}");
    assert!(out.starts_with(&twice), "first turn vs generate --chat, then the same after /reset: {out:?}");
    assert!(out.len() > twice.len() && out.ends_with('\n'), "no third reply: {out:?}");
    // A tokenizer that does not fit the model is refused.
    let small = Spec::qwen2(false);
    let (sdir, _) = fixture("cli-vocab-small", &small, 68);
    std::fs::copy(vocab("qwen.tiktoken"), sdir.join("qwen.tiktoken")).unwrap();
    let (code, _, err) = cli(&["generate", "--model", sdir.to_str().unwrap(), "--prompt", "hi"]);
    assert_eq!(code, 1);
    assert!(err.contains("vocab_size is 301"), "{err}");
}

/// Runs the CLI with its stdout already closed (the reader gone before it writes), feeding
/// `input` on stdin.
///
/// The pipe's read end is closed by this process, but a process another test thread forks at
/// that moment holds a copy of it until it execs; the CLI's writes then succeed and it exits 0.
/// So a run that exits 0 is tried again, up to three times (seen once in CI, on `info`).
fn cli_closed_stdout(args: &[&str], input: &[u8]) -> (i32, String) {
    use std::io::Write;
    let mut last = (0, String::new());
    for _ in 0..3 {
        let mut child = spawn_piped(args);
        drop(child.stdout.take());
        let _ = child.stdin.take().unwrap().write_all(input);
        let out = child.wait_with_output().unwrap();
        last = (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned());
        if last.0 != 0 {
            break;
        }
    }
    last
}

/// Waits for the CLI at most `secs` seconds (a hang is a failure, not a stuck test run).
fn cli_within(args: &[&str], secs: u64) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if t0.elapsed().as_secs() >= secs {
            let _ = child.kill();
            panic!("{args:?} still running after {secs} s (a hang)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Inputs a hostile user tried (issue 12): each ends in a clean `error:` and exit status 1, no
/// panic and no hang.
#[test]
fn hostile_inputs_fail_cleanly() {
    let spec = Spec::qwen2(false);
    let (dir, _) = fixture("cli-hostile", &spec, 69);
    let d = dir.to_str().unwrap();
    let two = |(code, _, err): (i32, String, String)| (code, err);
    let clean = |what: &str, (code, err): (i32, String), want: &str| {
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains("error:") && err.contains(want), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    };
    // A FIFO named config.json used to hang forever; a link to /dev/zero read without end; a
    // huge config.json was read whole.
    let bad = common::temp_dir("cli-hostile-files");
    std::fs::copy(dir.join("model.safetensors"), bad.join("model.safetensors")).unwrap();
    let cfg = bad.join("config.json");
    let b = bad.to_str().unwrap();
    assert!(Command::new("mkfifo").arg(&cfg).status().unwrap().success());
    clean("fifo config.json", cli_within(&["info", "--model", b], 30), "not a regular file");
    std::fs::remove_file(&cfg).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
    clean("config.json -> /dev/zero", cli_within(&["info", "--model", b], 30), "not a regular file");
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(&cfg, vec![b' '; 2 << 20]).unwrap();
    clean("2 MiB config.json", cli_within(&["info", "--model", b], 30), "limit");
    std::fs::copy(dir.join("config.json"), &cfg).unwrap();
    std::fs::remove_file(bad.join("model.safetensors")).unwrap();
    assert!(Command::new("mkfifo").arg(bad.join("model.safetensors")).status().unwrap().success());
    clean("fifo model.safetensors", cli_within(&["info", "--model", b], 30), "not a regular file");
    // A closed stdout: an error, not a panic, and generation stops instead of running on.
    let t = vocab("qwen.tiktoken");
    clean(
        "tokenize into a closed pipe",
        cli_closed_stdout(&["tokenize", "--tokenizer", t.to_str().unwrap()], b"Hello"),
        "error: stdout: ",
    );
    clean(
        "generate into a closed pipe",
        cli_closed_stdout(
            &["generate", "--model", d, "--prompt-ids", "1,2", "--max-new-tokens", "5000", "--context", "6000"],
            b"",
        ),
        "error: stdout: ",
    );
    clean("info into a closed pipe", cli_closed_stdout(&["info", "--model", d], b""), "error: stdout: ");
    // Options that were silently ignored or unbounded.
    clean(
        "--chat with --prompt-ids",
        two(cli(&["generate", "--model", d, "--prompt-ids", "1", "--chat"])),
        "--prompt-ids",
    );
    clean("bench --layers 2^20", two(cli(&["bench", "--layers", "1048576"])), "layers");
}

/// `chat` survives a line that is not UTF-8 and a message too long for the context: each is
/// refused with an error line, and the next message is answered.
#[test]
fn chat_refuses_bad_lines_and_goes_on() {
    let dir = real_vocab_model("cli-chat-bad", 70);
    let d = dir.to_str().unwrap();
    let long = "word ".repeat(200);
    let input = [b"\xff\xfe not text\n".as_slice(), long.as_bytes(), b"\n", "你好\n".as_bytes()].concat();
    let (code, out, err) = cli_stdin(&["chat", "--model", d, "--max-new-tokens", "4", "--context", "64"], &input);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(err.contains("nothing was sent") && err.contains("budget"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.ends_with(b"\n") && out.len() > 1, "no reply to the last message: {out:?}");
}

/// The fields of each `chat --usage` line on stderr, in order.
fn usage_lines(err: &str) -> Vec<std::collections::HashMap<String, String>> {
    err.lines()
        .filter_map(|l| l.split_once("[usage] ").map(|(_, rest)| rest))
        .map(|l| {
            l.split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("not key=value: {kv:?} in {l:?}"));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .collect()
}

fn field(u: &std::collections::HashMap<String, String>, k: &str) -> usize {
    u.get(k).unwrap_or_else(|| panic!("no {k} in {u:?}")).parse().unwrap()
}

/// `chat --usage` over `turns` short messages in a `context`-token context, with a system
/// prompt: it never fails, keeps the system prompt (every turn after the first reuses at least
/// its tokens from the cache), and after the first overflow prefills on average fewer than
/// `context / max_share` tokens a turn, because old turns are left out in blocks (the prompt's
/// prefix stays the same for several turns). Returns that average.
fn long_chat(name: &str, dir: &std::path::Path, turns: usize, context: usize, max_new: usize, max_share: f64) -> f64 {
    let d = dir.to_str().unwrap();
    let system = "You are a terse test assistant.";
    let input: String = (0..turns)
        .map(|i| match i % 4 {
            0 => format!("question {i}: why?\n"),
            1 => format!("第{i}个问题：为什么？\n"),
            2 => format!("tell me about the number {i} and the cache\n"),
            _ => format!("{i}\n"),
        })
        .collect();
    let (ctx, max) = (context.to_string(), max_new.to_string());
    let args = ["chat", "--model", d, "--max-new-tokens", &max, "--context", &ctx, "--system", system, "--usage"];
    let t = std::time::Instant::now();
    let (code, out, err) = cli_stdin(&args, input.as_bytes());
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("error:") && !err.contains("panicked"), "{err}");
    assert!(!out.is_empty());
    let usage = usage_lines(&err);
    assert_eq!(usage.len(), turns, "one usage line per reply");
    // `<|im_start|>system\n{system}<|im_end|>\n` (ChatML and Qwen3's template alike).
    let tok = qwen_webgpu::tokenizer::Tokenizer::from_file(&vocab("tokenizer.json")).unwrap();
    let system_tokens = tok.encode(system).unwrap().len() + 5;
    let mut first_overflow = None;
    let (mut prefilled, mut turns_after) = (0, 0);
    for (i, u) in usage.iter().enumerate() {
        let (prompt, cached, pre) =
            (field(u, "prompt_tokens"), field(u, "cached_tokens"), field(u, "prefilled_tokens"));
        assert!(prompt + max_new <= context && cached < prompt && field(u, "completion_tokens") <= max_new, "{u:?}");
        assert_eq!(field(u, "continuations"), 0, "{u:?}");
        assert_eq!(pre, prompt - cached, "{u:?}");
        if i > 0 {
            assert!(cached >= system_tokens, "{name}: turn {i} reuses the system prompt: {u:?}");
        }
        if first_overflow.is_some() {
            prefilled += pre;
            turns_after += 1;
        } else if field(u, "dropped_tokens") > 0 {
            first_overflow = Some(i);
        }
    }
    let first = first_overflow.expect("the chat outgrows the context");
    let notes = err.matches("[older messages left out to fit the context:").count();
    let avg = prefilled as f64 / turns_after as f64;
    eprintln!(
        "{name}: {turns} turns in a {context}-token context in {secs:.1}s: first overflow at turn {first}, then \
         {avg:.1} tokens prefilled per turn on average over {turns_after} turns; {notes} notes on stderr"
    );
    assert!(turns_after * 3 > turns * 2, "{name}: first overflow at {first}");
    assert!(avg < context as f64 / max_share, "{name}: {avg} tokens prefilled per turn");
    assert!(
        notes >= 2 && notes < turns_after / 2,
        "{name}: a note per change of what is left out, not per turn: {notes}"
    );
    avg
}

/// A 300-turn chat in a 512-token context (issue 17; the fixture has no template: ChatML).
#[test]
fn chat_300_turns_past_the_context() {
    let dir = real_vocab_model("cli-chat-300", 72);
    long_chat("chatml", &dir, 300, 512, 4, 3.0);
}

/// The same through Qwen3's own chat template (its tokenizer_config.json next to the weights;
/// random replies may hold `<think>`, which the template leaves out of earlier turns): 60 turns
/// in a 256-token context.
#[test]
fn chat_past_the_context_with_qwen3_template() {
    let dir = real_vocab_model("cli-chat-qwen3", 73);
    let golden = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat_template_golden.jsonl"),
    )
    .unwrap();
    let qwen3 = golden
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v.get("case").is_none() && v["template"] == "qwen3")
        .expect("Qwen3's template in the golden file");
    let config = serde_json::json!({"chat_template": qwen3["text"], "eos_token": "<|im_end|>"});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    long_chat("qwen3", &dir, 60, 256, 4, 2.0);
}

/// `real_vocab_model` whose `<|im_end|>` row of the LM head is scaled by `stop_scale`: greedy
/// replies then end by themselves in some contexts and run on in others (random weights
/// otherwise never stop).
fn stopping_model(name: &str, seed: u64, stop_scale: f32) -> std::path::PathBuf {
    let spec = real_vocab_spec();
    let mut t = common::random_tensors(&spec, seed);
    let (shape, w) = t.get_mut("lm_head.weight").unwrap();
    let cols = shape[1];
    for x in &mut w[151645 * cols..151646 * cols] {
        *x = common::representable(*x * stop_scale);
    }
    let dir = common::temp_dir(name);
    common::write_checkpoint(&dir, &spec, &t);
    std::fs::copy(vocab("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

/// A reply that reaches the end of the context goes on (issue 17): older turns are left out
/// and decoding continues, so it gets more tokens than were free when it started, without an
/// error, and the chat goes on after it. `--max-new-tokens 1000` in a 192-token context keeps
/// 96 tokens for the prompt; a few short replies (the fixture stops by itself in some contexts)
/// fill that with history, then a reply runs on. Which message runs on depends on the random
/// weights' greedy choices, so a few candidates are tried in turn until one does.
#[test]
fn chat_reply_goes_on_past_the_context() {
    let dir = stopping_model("cli-chat-goes-on", 83, 2.25);
    let d = dir.to_str().unwrap();
    let history: String = (0..4).map(|i| format!("第{i}个问题：为什么？\n")).collect();
    let args = ["chat", "--model", d, "--max-new-tokens", "1000", "--context", "192", "--usage"];
    let mut tried = Vec::new();
    for last in ["13", "why?", "a b", "long 1"] {
        let input = format!("{history}{last}\n再见\n");
        let (code, out, err) = cli_stdin(&args, input.as_bytes());
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("error:") && !err.contains("panicked"), "{err}");
        let usage = usage_lines(&err);
        assert_eq!(usage.len(), 6, "{err}");
        assert!(out.ends_with(b"\n"));
        let u = &usage[4];
        let (prompt, completion) = (field(u, "prompt_tokens"), field(u, "completion_tokens"));
        if field(u, "continuations") == 0 {
            tried.push(format!("{last:?}: {u:?}"));
            continue;
        }
        eprintln!("{last:?}: {u:?}");
        assert!(completion > 192 - prompt, "more tokens than were free: {u:?}");
        assert!(field(u, "prefilled_tokens") > prompt - field(u, "cached_tokens"), "re-prefilled: {u:?}");
        assert!(field(u, "dropped_tokens") > 0, "{u:?}");
        assert!(err.contains("[older messages left out to fit the context:"), "{err}");
        return;
    }
    panic!("no reply ran past the context: {tried:#?}");
}
