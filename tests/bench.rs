//! The benchmark runs end to end on a reduced Qwen-1.8B shape (so it cannot rot) and reports
//! consistent numbers. Speed itself is not asserted: these machines are shared and noisy.

use std::process::Command;

#[test]
fn bench_reduced_size_reports_every_figure() {
    let json = std::env::temp_dir().join(format!("bench-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu"))
        .args(["bench", "--layers", "1", "--vocab", "1000", "--prefill", "8,20", "--decode-at", "8,40"])
        .args(["--decode-tokens", "2", "--weights", "q4", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {r}"));
    // One Qwen-1.8B layer: qkv 6144x2048, o 2048x2048, 3 MLP matrices 5504x2048; plus a
    // 1000-row LM head and one embedding row; q4 is 18 bytes per 32 weights.
    let q4 = |n: u64| n * 18 / 32;
    let layer = q4(6144 * 2048 + 2048 * 2048 + 3 * 5504 * 2048);
    assert_eq!(r["weight_format"], "q4");
    // Just what the measurements need: the longest, 40, plus 2 decoded tokens and one more.
    assert_eq!(r["context"], 43);
    assert_eq!(f("weight_bytes_per_token") as u64, layer + q4(1000 * 2048) + q4(2048));
    // Weights (embedding and head included), activations and the KV cache; not the
    // bandwidth probe's 2 x 128 MiB.
    let bytes = f("gpu_bytes_allocated") as u64;
    assert!(bytes > layer + 2 * q4(1000 * 2048) && bytes < layer + (64 << 20), "{bytes}");
    assert!(f("bandwidth_gb_s") > 0.0);
    assert!(f("time_to_first_token_s") > 0.0);
    assert!(f("dispatches_per_decoded_token") >= 10.0);
    assert_eq!(r["prefill"].as_array().unwrap().len(), 2);
    let decode = r["decode"].as_array().unwrap();
    assert_eq!(decode.len(), 2);
    for d in decode {
        let frac = d["roofline_fraction"].as_f64().unwrap();
        assert!(frac > 0.0 && frac.is_finite(), "{d}");
        assert!(d["tok_per_s"].as_f64().unwrap() > 0.0);
        assert!(d["dispatches"].as_u64().unwrap() >= 10, "{d}");
    }
    assert_eq!(decode[1]["dispatches"], r["dispatches_per_decoded_token"]);
    assert_eq!(r["decode_sampling"], "argmax");
    // Decoding by sampling on the GPU (as generation with a temperature does): the same
    // dispatches (the sampling kernel in place of the argmax) and 4 bytes read back.
    let out = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu"))
        .args(["bench", "--layers", "1", "--vocab", "1000", "--prefill", "8", "--decode-at", "8"])
        .args(["--decode-tokens", "3", "--weights", "q4", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(s["decode_sampling"], "temperature 0.8, top-k 40, top-p 0.9 (drawn on the GPU)");
    assert_eq!(s["dispatches_per_decoded_token"], r["dispatches_per_decoded_token"]);
    assert_eq!(s["readback_bytes_per_decoded_token"], 4);
    assert!(s["decode"][0]["tok_per_s"].as_f64().unwrap() > 0.0);
}

/// The browser's options (`benchmark()`, `www/bench.html`) mean what the CLI's flags mean.
#[test]
fn browser_bench_options_match_the_cli() {
    use qwen_webgpu::bench::SynthBench;
    let d = SynthBench::from_json("{}").unwrap();
    assert_eq!(d, SynthBench::default());
    assert_eq!(
        (d.prefill.as_slice(), d.decode_at.as_slice(), d.decode_tokens),
        (&[128, 1024][..], &[128, 2048][..], 16)
    );
    let cfg = d.config();
    assert_eq!((cfg.num_hidden_layers, cfg.vocab_size), (24, 151936));
    let o = d.model_options(None).unwrap();
    assert_eq!((o.context, o.max_batch, o.weights.name(), o.kv.name()), (Some(2048 + 16 + 1), 128, "f16", "f32"));

    // The reduced run of the test above: the same model and KV cache length as the CLI's.
    let s = SynthBench::from_json(
        r#"{"layers":1,"vocab":1000,"prefill":[8,20],"decode_at":[8,40],"decode_tokens":2,"weights":"q4"}"#,
    )
    .unwrap();
    assert_eq!(SynthBench::model_name(&s.config()), "Qwen-1.8B-shaped, random weights, 1 layers, vocab 1000");
    assert_eq!(s.model_options(None).unwrap().context, Some(40 + 2 + 1));
    assert_eq!(s.bench_options().seed, 7);

    assert_eq!(s.sampling(), None);
    let t = SynthBench::from_json(r#"{"temperature":0.7,"top_p":0.95}"#).unwrap().sampling().unwrap();
    assert_eq!((t.temperature, t.top_k, t.top_p), (0.7, 0, 0.95));

    for bad in [
        r#"{"layers":0}"#,
        r#"{"vocab":0}"#,
        r#"{"prefill":[0]}"#,
        r#"{"layer":1}"#,
        r#"{"layers":-1}"#,
        "[",
        r#"{"top_k":40}"#,
        r#"{"temperature":-1}"#,
        r#"{"temperature":1,"top_p":0}"#,
    ] {
        let e = SynthBench::from_json(bad).unwrap_err();
        assert!(matches!(e, qwen_webgpu::Error::Request(_)), "{bad}: {e}");
    }
    assert!(SynthBench::from_json(r#"{"weights":"q5"}"#).unwrap().model_options(None).is_err());
}

/// GPU memory is read from the allocations themselves: after loading, the live bytes equal
/// the pre-download estimate (`model::gpu_bytes`, the fit check's figure) exactly; the
/// benchmark's probe buffers are freed and counted down, so a second run on the same model
/// reports the same bytes and buffers as the first; an `AllLogits` pass's buffer counts while
/// it lives.
#[test]
fn gpu_memory_is_counted_from_the_allocations() {
    use qwen_webgpu::bench::{self, RandomSource, SynthBench};
    use qwen_webgpu::gpu::{Gpu, GpuOptions};
    use qwen_webgpu::{model, Qwen, Want};
    let s = SynthBench::from_json(
        r#"{"layers":1,"vocab":1000,"prefill":[8],"decode_at":[8],"decode_tokens":2,"weights":"q4","kv_cache":"q8"}"#,
    )
    .unwrap();
    let cfg = s.config();
    let opts = s.model_options(None).unwrap();
    let gpu = pollster::block_on(Gpu::new(&GpuOptions::default())).unwrap();
    assert_eq!((gpu.allocated_bytes(), gpu.allocated_buffers()), (0, 0));
    let mut m = Qwen::load(gpu, cfg.clone(), &mut RandomSource::new(&cfg, 1), &opts, &mut |_, _| {}).unwrap();
    let (w, st) = model::gpu_bytes(&cfg, &opts);
    assert_eq!(m.gpu.allocated_bytes(), w + st, "estimate {w} + {st}");
    let buffers = m.gpu.allocated_buffers();
    let first = pollster::block_on(bench::run(&mut m, "synth", &s.bench_options())).unwrap();
    let second = pollster::block_on(bench::run(&mut m, "synth", &s.bench_options())).unwrap();
    assert_eq!(first.gpu_bytes_allocated, w + st);
    assert_eq!(second.gpu_bytes_allocated, first.gpu_bytes_allocated);
    println!("GPU bytes: first run {}, second run {}", first.gpu_bytes_allocated, second.gpu_bytes_allocated);
    assert_eq!((second.gpu_buffers, first.gpu_buffers), (buffers, buffers));
    // All logits need one more buffer, counted until the model drops it.
    m.reset();
    pollster::block_on(m.feed(&[1, 2, 3], Want::AllLogits)).unwrap();
    assert_eq!(m.gpu.allocated_buffers(), buffers + 1);
    assert_eq!(m.gpu.allocated_bytes(), w + st + qwen_webgpu::gpu::buffer_size(m.max_batch() as u64 * 1000 * 4));
}

/// Decoding at a cache is set up without a prefill (the cache is taken as full), and with
/// windows the roofline counts only the keys each layer's window reads: at a 40-token cache,
/// 2 decoded tokens see 41 and 42 positions; a layer with an 8-key window reads 8 of them.
#[test]
fn windows_are_reported_and_bound_the_kv_bytes() {
    use qwen_webgpu::bench::kv_positions_per_token;
    assert_eq!(kv_positions_per_token(&[0], 40, 2), 41.5);
    assert_eq!(kv_positions_per_token(&[8, 0], 40, 2), 8.0 + 41.5);
    assert_eq!(kv_positions_per_token(&[41, 100], 40, 2), 41.0 + 41.5);
    let json = std::env::temp_dir().join(format!("bench-window-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_qwen-webgpu"))
        .args(["bench", "--layers", "2", "--vocab", "1000", "--prefill", "8", "--decode-at", "40,300"])
        .args(["--decode-tokens", "2", "--weights", "q4", "--window", "8,0", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(stdout.contains("windows        8,all (keys per layer)"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["windows"], serde_json::json!([8, 0]));
    // f32 KV cache: K and V rows of 2048 floats per layer and position.
    let kv_row = 2 * 2048 * 4;
    let weights = r["weight_bytes_per_token"].as_u64().unwrap();
    let d = r["decode"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["bytes_per_token"].as_u64().unwrap(), weights + (kv_row as f64 * (8.0 + 41.5)) as u64);
    assert_eq!(d[1]["bytes_per_token"].as_u64().unwrap(), weights + (kv_row as f64 * (8.0 + 301.5)) as u64);
    assert!(d[1]["ms_per_token"].as_f64().unwrap() > 0.0);
}
