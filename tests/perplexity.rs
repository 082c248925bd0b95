//! `qwen_webgpu::eval` and `qwen-webgpu perplexity` (the report's table 3): the perplexity
//! computed from the GPU's logits, chunk by chunk, equals the one of the plain CPU reference
//! (tests/common/reference.rs, log-softmax in f64 here), plain and with NTK + logN, past the
//! trained length where they matter; the CLI runs end to end on a checkpoint and a text.

mod common;

use common::reference::RefModel;
use common::{fixture, random_ids, Spec, Tensors};
use qwen_webgpu::eval::{self, Mode};
use qwen_webgpu::gpu::GpuOptions;
use qwen_webgpu::{ModelOptions, Qwen};
use std::process::Command;

/// Mean NLL per predicted token of the reference's logits, log-softmax in f64.
fn reference_mean_nll(spec: &Spec, tensors: &Tensors, tokens: &[u32]) -> f64 {
    windowed_reference_mean_nll(spec, tensors, &vec![0; spec.layers], tokens)
}

/// [`reference_mean_nll`] with per-layer attention windows (0: the whole cache).
fn windowed_reference_mean_nll(spec: &Spec, tensors: &Tensors, windows: &[usize], tokens: &[u32]) -> f64 {
    let logits = RefModel::new(spec, tensors).with_windows(windows.to_vec()).logits_all(tokens);
    let mut sum = 0.0;
    for (row, &next) in logits.iter().zip(&tokens[1..]) {
        let m = row.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        sum += m + z.ln() - row[next as usize] as f64;
    }
    sum / (tokens.len() - 1) as f64
}

/// Mean NLLs (nats) agree within this: the logits agree within about 2e-3 (tests/model.rs).
const NLL_TOL: f64 = 2e-3;

#[test]
fn perplexity_matches_the_cpu_reference_plain_and_with_ntk_logn() {
    // Trained on 16 tokens: at 40, NTK's alpha is 2^ceil(log2(40/16) + 1) - 1 = 7 and logN
    // scales the queries past position 16; at 12 neither does anything.
    let spec = Spec { seq_length: 16, ..Spec::qwen_v1() };
    let (dir, tensors) = fixture("ppl-v1", &spec, 31);
    // Chunks of 16 rows: the 40-token sequence's logits arrive in three pieces.
    let opts = ModelOptions { context: Some(64), max_batch: 16, ..Default::default() };
    let mut m = pollster::block_on(Qwen::load_dir(&dir, &GpuOptions::default(), &opts)).unwrap();
    let tokens = random_ids(40, spec.vocab, 32);
    let modes = Mode::parse_list("plain,ntk+logn,ntk,ntk+logn+window").unwrap();
    // Windows longer than any sequence here: the window mode must equal ntk+logn.
    let windows = vec![1000; spec.layers];
    let lengths = [12, 40];
    let t =
        pollster::block_on(eval::perplexity_table(&mut m, &tokens, &lengths, &modes, &windows, &mut |_| {})).unwrap();
    assert_eq!(t.modes, ["plain", "ntk+logn", "ntk", "ntk+logn+window"]);
    assert_eq!(t.cells.len(), 8);
    // The model is left as the config says.
    assert!(m.config.use_dynamic_ntk && m.config.use_logn_attn);
    assert!(m.windows().iter().all(|&w| w == 0));

    let plain_spec = Spec { ntk_logn: false, ..spec.clone() };
    for (i, &l) in lengths.iter().enumerate() {
        let want_plain = reference_mean_nll(&plain_spec, &tensors, &tokens[..l]);
        let want_long = reference_mean_nll(&spec, &tensors, &tokens[..l]);
        let (plain, long, ntk, window) = (t.cell(i, 0), t.cell(i, 1), t.cell(i, 2), t.cell(i, 3));
        println!(
            "L={l}: plain {:.6} (reference {want_plain:.6}), ntk+logn {:.6} (reference {want_long:.6}), \
             ntk {:.6}, window {:.6}; perplexity {:.4} / {:.4}",
            plain.mean_nll, long.mean_nll, ntk.mean_nll, window.mean_nll, plain.perplexity, long.perplexity
        );
        assert_eq!((plain.length, plain.predicted), (l, l - 1));
        assert!((plain.mean_nll - want_plain).abs() < NLL_TOL, "plain at {l}");
        assert!((long.mean_nll - want_long).abs() < NLL_TOL, "ntk+logn at {l}");
        assert!((plain.perplexity - plain.mean_nll.exp()).abs() < 1e-9);
        assert!((window.mean_nll - long.mean_nll).abs() < 1e-6, "windows past the sequence changed it");
        if l <= spec.seq_length {
            // Within the trained length the techniques change nothing.
            assert!((want_plain - want_long).abs() < 1e-9);
            assert!((ntk.mean_nll - plain.mean_nll).abs() < 1e-6);
        } else {
            // They do past it, far beyond the tolerance (else the test would prove nothing);
            // NTK alone is mostly NTK's change (logN adds a little here: the same kernels on
            // the same GPU, so even a small difference is the flag's).
            assert!((want_plain - want_long).abs() > 20.0 * NLL_TOL, "{want_plain} vs {want_long}");
            assert!((ntk.mean_nll - plain.mean_nll).abs() > 20.0 * NLL_TOL);
            assert!((ntk.mean_nll - long.mean_nll).abs() > 1e-5);
        }
    }

    // Windows shorter than the sequence: the reference with the same windows masked.
    let short = [5, 12];
    let win = Mode::parse_list("ntk+logn+window").unwrap();
    let t = pollster::block_on(eval::perplexity_table(&mut m, &tokens, &lengths, &win, &short, &mut |_| {})).unwrap();
    for (i, &l) in lengths.iter().enumerate() {
        let want = windowed_reference_mean_nll(&spec, &tensors, &short, &tokens[..l]);
        let got = t.cell(i, 0).mean_nll;
        println!("L={l}: windows {short:?}: {got:.6} (reference {want:.6})");
        assert!((got - want).abs() < NLL_TOL, "windowed at {l}: {got} vs {want}");
        let unwindowed = reference_mean_nll(&spec, &tensors, &tokens[..l]);
        assert!((want - unwindowed).abs() > 5.0 * NLL_TOL, "windows changed nothing: the check proves nothing");
    }

    // Bad requests are errors, not panics.
    let run = |m: &mut Qwen, lengths: &[usize], windows: &[usize]| {
        pollster::block_on(eval::perplexity_table(m, &tokens, lengths, &modes, windows, &mut |_| {}))
    };
    assert!(run(&mut m, &[41], &windows).is_err(), "longer than the text");
    assert!(run(&mut m, &[1], &windows).is_err(), "nothing to predict");
    assert!(run(&mut m, &[12], &[5]).is_err(), "one window for two layers");
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu")).args(args).output().expect("run CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real vocabulary, fetched by scripts/fetch-vocab.sh (as tests/cli.rs finds it).
fn vocab(file: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("QWEN_VOCAB_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/qwen-webgpu/vocab"));
    let p = dir.join(file);
    assert!(p.exists(), "{} is missing: run scripts/fetch-vocab.sh", p.display());
    p
}

/// `qwen-webgpu perplexity` on a tiny Qwen v1 checkpoint over the real vocabulary (with
/// qwen.tiktoken in its folder) and a text file: the table's perplexities are the reference's
/// on the text's tokens, and the JSON says the same.
#[test]
fn cli_prints_the_table_for_a_checkpoint_and_a_text() {
    let spec = Spec {
        hidden: 32,
        heads: 2,
        kv_heads: 2,
        head_dim: 16,
        ff: 40,
        vocab: 151936,
        seq_length: 16,
        ..Spec::qwen_v1()
    };
    let (dir, tensors) = fixture("ppl-cli", &spec, 33);
    std::fs::copy(vocab("qwen.tiktoken"), dir.join("qwen.tiktoken")).unwrap();
    let text: String =
        (0..60).map(|i| format!("Line {i}: the quick brown fox jumps over {} lazy dogs.\n", i * 7 % 13)).collect();
    let text_path = dir.join("text.txt");
    std::fs::write(&text_path, &text).unwrap();
    let json = dir.join("ppl.json");
    let (code, out, err) = cli(&[
        "perplexity",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        text_path.to_str().unwrap(),
        "--lengths",
        "16,48",
        "--modes",
        "plain,ntk+logn,ntk+logn+window",
        "--max-batch",
        "20",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!("{out}");
    assert!(out.contains("| tokens | plain | ntk+logn | ntk+logn+window |"), "{out}");
    assert!(out.contains("| 16 |") && out.contains("| 48 |"), "{out}");
    assert!(!out.contains("meaningless"), "{out}");
    // The default windows for 2 layers trained on 16 tokens: pow2:4:2 → 4 and 16 keys.
    assert!(out.contains("pow2:4:2 → 4,16"), "{out}");

    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["meaningful"], true);
    assert_eq!(r["context"], 49);
    assert_eq!(r["windows"], serde_json::json!([4, 16]));
    let tok = qwen_webgpu::tokenizer::Tokenizer::from_file(&vocab("qwen.tiktoken")).unwrap();
    let tokens = tok.encode(&text).unwrap();
    let plain_spec = Spec { ntk_logn: false, ..spec.clone() };
    for (i, &l) in [16usize, 48].iter().enumerate() {
        let cell = |j: usize| &r["cells"][i * 3 + j];
        assert_eq!(cell(0)["length"], l);
        for (j, s) in [(0, &plain_spec), (1, &spec)] {
            let want = reference_mean_nll(s, &tensors, &tokens[..l]);
            let got = cell(j)["mean_nll"].as_f64().unwrap();
            assert!((got - want).abs() < NLL_TOL, "{} at {l}: {got} vs reference {want}", cell(j)["mode"]);
            let ppl = cell(j)["perplexity"].as_f64().unwrap();
            assert!(out.contains(&format!(" {ppl:.4} |")), "{ppl} not in the table");
            assert!(cell(j)["seconds"].as_f64().unwrap() > 0.0);
        }
        let want = windowed_reference_mean_nll(&spec, &tensors, &[4, 16], &tokens[..l]);
        let got = cell(2)["mean_nll"].as_f64().unwrap();
        assert!((got - want).abs() < NLL_TOL, "ntk+logn+window at {l}: {got} vs reference {want}");
    }
}

/// Without --model: the random Qwen-1.8B shape on random ids, for the timing columns only.
#[test]
fn cli_without_a_model_times_the_random_shape() {
    let (code, out, err) = cli(&[
        "perplexity",
        "--layers",
        "1",
        "--vocab",
        "500",
        "--lengths",
        "8,20",
        "--modes",
        "plain,ntk+logn+window",
        "--weights",
        "q4",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!("{out}");
    assert!(out.contains("meaningless"), "{out}");
    assert!(out.contains("random token ids"), "{out}");
    assert!(out.contains("| 20 |"), "{out}");
    assert!(out.contains("pow2:2048:4 → 2048"), "{out}");
}

#[test]
fn cli_refuses_bad_requests() {
    let spec = Spec::qwen_v1();
    let (dir, _) = fixture("ppl-bad", &spec, 34);
    let d = dir.to_str().unwrap();
    let text = dir.join("short.txt");
    std::fs::write(&text, "a few words").unwrap();
    let t = text.to_str().unwrap();
    for (args, want) in [
        (vec!["perplexity", "--model", d], "--text"),
        (vec!["perplexity", "--modes", "plain,rope"], "unknown technique"),
        (vec!["perplexity", "--lengths", "1"], "--lengths 1"),
        (vec!["perplexity", "--lengths", "64", "--context", "32"], "--context 32"),
        (vec!["perplexity", "--window", "1,2,3", "--layers", "2", "--vocab", "100", "--lengths", "4"], "window"),
        (vec!["perplexity", "--text", t], "need --model"),
        // The fixture has no tokenizer of its own.
        (vec!["perplexity", "--model", d, "--text", t, "--lengths", "4"], "tokenizer"),
        (vec!["perplexity", "--model", d, "--layers", "2", "--text", t], "--layers"),
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("error:") && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A text shorter than the longest length (the real tokenizer, which fits no 389-row
    // model, is refused first: use a model over the real vocabulary's size).
    let big = Spec { hidden: 32, heads: 2, kv_heads: 2, head_dim: 16, ff: 40, vocab: 151936, ..Spec::qwen_v1() };
    let (bdir, _) = fixture("ppl-bad-big", &big, 35);
    let (code, _, err) = cli(&[
        "perplexity",
        "--model",
        bdir.to_str().unwrap(),
        "--tokenizer",
        vocab("qwen.tiktoken").to_str().unwrap(),
        "--text",
        t,
        "--lengths",
        "64",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tokens; --lengths asks for 64"), "{err}");
}
