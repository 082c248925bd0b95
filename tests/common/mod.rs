//! Test fixtures: tiny random Qwen checkpoints written to disk in the real layouts (real
//! safetensors via the `safetensors` crate, real config.json field names), the GPU, and
//! comparison helpers.
#![allow(dead_code)]

pub mod candle_gguf;
pub mod candle_ref;
pub mod gguf_fixture;
pub mod reference;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Seeded SplitMix64 with a normal sampler.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Round to a value both bf16 and f16 hold exactly (bf16 mantissa, f16 normal range), so the
/// GPU's f16 weights equal the reference's f32 weights bit for bit.
pub fn representable(x: f32) -> f32 {
    let b = half::bf16::from_f32(x).to_f32();
    if b.abs() < 6.2e-5 {
        0.0
    } else {
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileDtype {
    BF16,
    F16,
    F32,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub model_type: &'static str,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The real MLP width (v1's config says twice this).
    pub ff: usize,
    pub vocab: usize,
    pub tie: bool,
    /// v1 seq_length / max_position_embeddings.
    pub seq_length: usize,
    pub ntk_logn: bool,
    pub dtype: FileDtype,
    pub shards: usize,
}

impl Spec {
    /// Qwen v1 (the report's layout): fused c_attn with bias, w1/w2/c_proj MLP, untied head.
    pub fn qwen_v1() -> Spec {
        Spec {
            model_type: "qwen",
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            head_dim: 16,
            ff: 88,
            vocab: 389,
            tie: false,
            seq_length: 256,
            ntk_logn: true,
            dtype: FileDtype::BF16,
            shards: 2,
        }
    }
    /// Qwen2 with grouped-query attention (6 query heads share 2 kv heads).
    pub fn qwen2(tie: bool) -> Spec {
        Spec {
            model_type: "qwen2",
            hidden: 96,
            layers: 2,
            heads: 6,
            kv_heads: 2,
            head_dim: 16,
            ff: 120,
            vocab: 301,
            tie,
            seq_length: 512,
            ntk_logn: false,
            dtype: FileDtype::BF16,
            shards: 1,
        }
    }
    /// Qwen3: q/k norms, no bias, head_dim not hidden/heads.
    pub fn qwen3() -> Spec {
        Spec {
            model_type: "qwen3",
            hidden: 64,
            layers: 3,
            heads: 4,
            kv_heads: 2,
            head_dim: 24,
            ff: 100,
            vocab: 333,
            tie: true,
            seq_length: 512,
            ntk_logn: false,
            dtype: FileDtype::BF16,
            shards: 1,
        }
    }

    pub fn config_json(&self) -> String {
        match self.model_type {
            "qwen" => serde_json::json!({
                "architectures": ["QWenLMHeadModel"],
                "model_type": "qwen",
                "hidden_size": self.hidden,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "kv_channels": self.head_dim,
                "intermediate_size": self.ff * 2,
                "vocab_size": self.vocab,
                "rotary_emb_base": 10000,
                "rotary_pct": 1.0,
                "seq_length": self.seq_length,
                "max_position_embeddings": self.seq_length,
                "use_dynamic_ntk": self.ntk_logn,
                "use_logn_attn": self.ntk_logn,
                "layer_norm_epsilon": 1e-6,
                "tie_word_embeddings": self.tie,
                "no_bias": true,
                "bf16": true
            }),
            t => serde_json::json!({
                "architectures": [if t == "qwen2" { "Qwen2ForCausalLM" } else { "Qwen3ForCausalLM" }],
                "model_type": t,
                "hidden_size": self.hidden,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads,
                "head_dim": self.head_dim,
                "intermediate_size": self.ff,
                "vocab_size": self.vocab,
                "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-6,
                "max_position_embeddings": self.seq_length,
                "max_window_layers": self.layers,
                "sliding_window": null,
                "use_sliding_window": false,
                "tie_word_embeddings": self.tie,
                "hidden_act": "silu",
                "attention_bias": false,
                "torch_dtype": "bfloat16"
            }),
        }
        .to_string()
    }
}

/// A checkpoint: tensor name → (shape, values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Random tensors in the real layout of `spec`. Scales keep activations O(1) and make the
/// logits peaked, so greedy decoding has clear winners.
pub fn random_tensors(spec: &Spec, seed: u64) -> Tensors {
    let mut rng = Rng::new(seed);
    let mut t = Tensors::new();
    let (d, ff, v, hd) = (spec.hidden, spec.ff, spec.vocab, spec.head_dim);
    let (qd, kvd) = (spec.heads * hd, spec.kv_heads * hd);
    let mut mat = |rng: &mut Rng, name: String, rows: usize, cols: usize, scale: f32| {
        let vals = (0..rows * cols).map(|_| representable(rng.normal() * scale)).collect();
        t.insert(name, (vec![rows, cols], vals));
    };
    let s = |n: usize| 1.0 / (n as f32).sqrt();
    let mut vecs: Vec<(String, usize, f32, f32)> = Vec::new(); // name, len, mean, std
    if spec.model_type == "qwen" {
        mat(&mut rng, "transformer.wte.weight".into(), v, d, 1.0);
        for i in 0..spec.layers {
            let n = |x: &str| format!("transformer.h.{i}.{x}");
            mat(&mut rng, n("attn.c_attn.weight"), qd + 2 * kvd, d, s(d));
            mat(&mut rng, n("attn.c_proj.weight"), d, qd, s(qd));
            mat(&mut rng, n("mlp.w1.weight"), ff, d, s(d));
            mat(&mut rng, n("mlp.w2.weight"), ff, d, s(d));
            mat(&mut rng, n("mlp.c_proj.weight"), d, ff, s(ff));
            vecs.push((n("attn.c_attn.bias"), qd + 2 * kvd, 0.0, 0.2));
            vecs.push((n("ln_1.weight"), d, 1.0, 0.1));
            vecs.push((n("ln_2.weight"), d, 1.0, 0.1));
        }
        vecs.push(("transformer.ln_f.weight".into(), d, 1.0, 0.1));
    } else {
        // A tied table is also the LM head: smaller, so the last token does not dominate.
        mat(&mut rng, "model.embed_tokens.weight".into(), v, d, if spec.tie { 0.15 } else { 1.0 });
        for i in 0..spec.layers {
            let n = |x: &str| format!("model.layers.{i}.{x}");
            mat(&mut rng, n("self_attn.q_proj.weight"), qd, d, s(d));
            mat(&mut rng, n("self_attn.k_proj.weight"), kvd, d, s(d));
            mat(&mut rng, n("self_attn.v_proj.weight"), kvd, d, s(d));
            mat(&mut rng, n("self_attn.o_proj.weight"), d, qd, s(qd));
            mat(&mut rng, n("mlp.gate_proj.weight"), ff, d, s(d));
            mat(&mut rng, n("mlp.up_proj.weight"), ff, d, s(d));
            mat(&mut rng, n("mlp.down_proj.weight"), d, ff, s(ff));
            if spec.model_type == "qwen2" {
                vecs.push((n("self_attn.q_proj.bias"), qd, 0.0, 0.2));
                vecs.push((n("self_attn.k_proj.bias"), kvd, 0.0, 0.2));
                vecs.push((n("self_attn.v_proj.bias"), kvd, 0.0, 0.2));
            } else {
                vecs.push((n("self_attn.q_norm.weight"), hd, 1.0, 0.1));
                vecs.push((n("self_attn.k_norm.weight"), hd, 1.0, 0.1));
            }
            vecs.push((n("input_layernorm.weight"), d, 1.0, 0.1));
            vecs.push((n("post_attention_layernorm.weight"), d, 1.0, 0.1));
        }
        vecs.push(("model.norm.weight".into(), d, 1.0, 0.1));
    }
    if !spec.tie {
        mat(&mut rng, "lm_head.weight".into(), v, d, 3.0 * s(d));
    }
    for (name, len, mean, std) in vecs {
        let vals = (0..len).map(|_| representable(mean + std * rng.normal())).collect();
        t.insert(name, (vec![len], vals));
    }
    t
}

fn encode(vals: &[f32], dtype: FileDtype) -> (safetensors::Dtype, Vec<u8>) {
    match dtype {
        FileDtype::BF16 => {
            (safetensors::Dtype::BF16, vals.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect())
        }
        FileDtype::F16 => {
            (safetensors::Dtype::F16, vals.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())
        }
        FileDtype::F32 => (safetensors::Dtype::F32, vals.iter().flat_map(|&x| x.to_le_bytes()).collect()),
    }
}

/// A tensor ready for the safetensors writer: dtype, shape, bytes.
type Encoded = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Write `tensors` as safetensors (sharded with an index when `shards > 1`) + config.json.
pub fn write_checkpoint(dir: &Path, spec: &Spec, tensors: &Tensors) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), spec.config_json()).unwrap();
    let names: Vec<&String> = tensors.keys().collect();
    let per = names.len().div_ceil(spec.shards);
    let mut weight_map = serde_json::Map::new();
    for (s, group) in names.chunks(per).enumerate() {
        let file = if spec.shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, spec.shards)
        };
        let data: Vec<(String, Encoded)> = group
            .iter()
            .map(|n| {
                let (shape, vals) = &tensors[*n];
                let (dt, bytes) = encode(vals, spec.dtype);
                ((*n).clone(), (dt, shape.clone(), bytes))
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, (dt, shape, bytes))| {
                (n.clone(), safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in group {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    if spec.shards > 1 {
        let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

/// A fresh temporary folder under the target dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Write a fixture and return its folder and tensors.
pub fn fixture(name: &str, spec: &Spec, seed: u64) -> (PathBuf, Tensors) {
    let dir = temp_dir(name);
    let t = random_tensors(spec, seed);
    write_checkpoint(&dir, spec, &t);
    (dir, t)
}

/// Random prompt ids.
pub fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab as u32)).collect()
}

/// Max |a - b| / (atol + rtol |b|) style check; returns (max abs error, worst index).
pub fn max_abs_err(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let e = (x - y).abs();
        if e.is_nan() || e > worst.0 {
            worst = (if e.is_nan() { f32::INFINITY } else { e }, i);
        }
    }
    worst
}

/// Assert `got` ≈ `want` within `atol + rtol * |want|` element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!((g - w).abs() <= tol, "{what}: index {i}: computed {g} vs reference {w} (tol {tol})");
    }
}

pub fn gpu() -> qwen_webgpu::gpu::Gpu {
    gpu_with(None)
}

pub fn gpu_with(max_binding: Option<u64>) -> qwen_webgpu::gpu::Gpu {
    pollster::block_on(qwen_webgpu::gpu::Gpu::new(&qwen_webgpu::gpu::GpuOptions {
        max_binding_bytes: max_binding,
        ..Default::default()
    }))
    .expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)")
}

/// `rows` rows of `cols` values of random valid ggml `t` blocks: random bytes, with every f16
/// scale field set to a small value of random sign (random bytes there would be NaN or huge),
/// sized so decoded values are of order one (K-quant scales multiply `d` by up to 63, Q6_K's
/// by 127, and q by 31 or 32).
pub fn random_ggml_blocks(rng: &mut Rng, t: qwen_webgpu::weights::ggml::GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    use qwen_webgpu::weights::ggml::GgmlType;
    let (n, size) = t.block();
    let blocks = rows * cols / n;
    let mut out = Vec::with_capacity(blocks * size);
    for _ in 0..blocks {
        let mut b: Vec<u8> = (0..size).map(|_| rng.below(256) as u8).collect();
        let mut put = |at: usize, v: f32| b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
        let d = sign * (0.002 + 0.02 * rng.uniform())
            / match t {
                GgmlType::Q6K => 64.0,
                _ if n == 256 => 16.0,
                _ => 1.0,
            };
        match t {
            GgmlType::Q6K => put(208, d),
            GgmlType::Q4K | GgmlType::Q5K => {
                put(0, d);
                put(2, 0.5 * d * rng.uniform());
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                put(0, d);
                put(2, -0.1 * rng.uniform());
            }
            _ => put(0, d),
        }
        out.extend(b);
    }
    out
}
