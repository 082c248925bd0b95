//! The default KV cache length: the trained context (at most 4096) for most models; for Qwen
//! v1, whose dynamic NTK and logN carry it past its trained length, the longest of 32K/16K/8K
//! that fits the GPU memory budget. Sizes from Qwen-1.8B's real config (QWEN.md).

use qwen_webgpu::model::{gpu_bytes, LONG_CONTEXTS};
use qwen_webgpu::weights::quant::WeightFormat;
use qwen_webgpu::{KvFormat, ModelOptions, QwenConfig};

const QWEN_18B: &str = r#"{"architectures":["QWenLMHeadModel"],"hidden_size":2048,"intermediate_size":11008,
 "kv_channels":128,"layer_norm_epsilon":1e-6,"max_position_embeddings":8192,"model_type":"qwen",
 "num_attention_heads":16,"num_hidden_layers":24,"rotary_emb_base":10000,"rotary_pct":1.0,"seq_length":8192,
 "tie_word_embeddings":false,"use_dynamic_ntk":true,"use_logn_attn":true,"vocab_size":151936}"#;

const QWEN3_17B: &str = r#"{"model_type":"qwen3","hidden_size":2048,"intermediate_size":6144,"num_attention_heads":16,
 "num_key_value_heads":8,"head_dim":128,"num_hidden_layers":28,"max_position_embeddings":40960,"rope_theta":1000000,
 "rms_norm_eps":1e-6,"tie_word_embeddings":true,"vocab_size":151936}"#;

fn opts(kv: KvFormat, budget: Option<u64>) -> ModelOptions {
    ModelOptions { weights: WeightFormat::Q4, kv, max_gpu_bytes: budget, ..Default::default() }
}

#[test]
fn qwen_v1_defaults_to_the_longest_context_that_fits() {
    let cfg = QwenConfig::from_json(QWEN_18B).unwrap();
    // Default budget 4 GiB: q8 KV (about 98 KB a token) fits 16K, not 32K (4.37 GB in all).
    let q8 = opts(KvFormat::Q8, None);
    assert_eq!(q8.context_for(&cfg), 16384);
    let (w, s) = gpu_bytes(&cfg, &q8);
    assert!(w + s <= 4 << 30, "{w} + {s}");
    let at32 = ModelOptions { context: Some(32768), ..q8.clone() };
    let (w32, s32) = gpu_bytes(&cfg, &at32);
    assert!(w32 + s32 > 4 << 30);
    // A larger budget: 32K; the largest: what the per-layer KV cache allows (f32 at 32K is
    // 256 MiB a layer, above WebGPU's default binding limit: 16K).
    assert_eq!(opts(KvFormat::Q8, Some(w32 + s32)).context_for(&cfg), 32768);
    assert_eq!(opts(KvFormat::Q8, Some(w32 + s32 - 1)).context_for(&cfg), 16384);
    assert_eq!(opts(KvFormat::F32, Some(u64::MAX)).context_for(&cfg), 16384);
    assert_eq!(opts(KvFormat::F16, Some(u64::MAX)).context_for(&cfg), 32768);
    // f16 KV in 4 GiB: 16K (4.27 GB); f32: 8K, the trained length.
    assert_eq!(opts(KvFormat::F16, None).context_for(&cfg), 16384);
    assert_eq!(opts(KvFormat::F32, None).context_for(&cfg), 8192);
    // A budget below every long context: the plain default (min(trained, 4096)).
    assert_eq!(opts(KvFormat::Q8, Some(1 << 30)).context_for(&cfg), 4096);
    // Asked for: as asked, whatever the budget.
    assert_eq!(ModelOptions { context: Some(100), ..opts(KvFormat::Q8, Some(1)) }.context_for(&cfg), 100);
    assert!(LONG_CONTEXTS.iter().all(|&c| c >= cfg.seq_length), "every long context reaches the trained length");
}

#[test]
fn other_families_keep_their_trained_context_up_to_4096() {
    let cfg = QwenConfig::from_json(QWEN3_17B).unwrap();
    assert_eq!(opts(KvFormat::Q8, Some(u64::MAX)).context_for(&cfg), 4096);
    // Qwen v1 without dynamic NTK (a config that turns it off) is not carried past its length.
    let v1 = QWEN_18B.replace(r#""use_dynamic_ntk":true"#, r#""use_dynamic_ntk":false"#);
    let cfg = QwenConfig::from_json(&v1).unwrap();
    assert_eq!(opts(KvFormat::Q8, Some(u64::MAX)).context_for(&cfg), 4096);
}
