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
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("error:") && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
