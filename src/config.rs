//! `config.json` → [`QwenConfig`]: one description for every family we run.
//!
//! Field names follow the Hugging Face configs (`hidden_size`, `num_key_value_heads`,
//! `rope_theta`, ...). Qwen v1 spells some of them differently (`kv_channels`,
//! `rotary_emb_base`, `layer_norm_epsilon`) and its `intermediate_size` is twice the real MLP
//! width; [`QwenConfig::from_json`] maps them onto the same fields.

use crate::error::{Error, Result};
use serde_json::Value;

/// Which checkpoint layout (tensor names, MLP wiring, norms) a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `model_type: "qwen"`: Qwen-1.8B/7B (v1), fused `c_attn`, `w1`/`w2` MLP (w2 is the gate).
    QwenV1,
    /// `model_type: "qwen2"`: Qwen1.5, Qwen2, Qwen2.5. q/k/v bias, GQA.
    Qwen2,
    /// `model_type: "qwen3"`: per-head q/k RMSNorm before RoPE, no bias, explicit head_dim.
    Qwen3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::QwenV1 => "qwen",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// How this family's checkpoints name their tensors.
    pub fn tensor_names(self) -> &'static TensorNames {
        match self {
            Family::QwenV1 => &QWEN_V1_NAMES,
            Family::Qwen2 | Family::Qwen3 => &QWEN2_NAMES,
        }
    }
}

/// How q, k and v are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvNames {
    /// One `[q + 2 kv, hidden]` tensor (`NAME.weight`, `NAME.bias`).
    Fused(&'static str),
    /// Three tensors, q, k, v.
    Split([&'static str; 3]),
}

/// A family's tensor names: whole names for the model-level tensors; per layer, names after
/// `{layer_prefix}{i}.` (matrices and norms end in `.weight`; biases are `{qkv}.bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorNames {
    pub embed: &'static str,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
    pub layer_prefix: &'static str,
    pub attn_norm: &'static str,
    pub qkv: QkvNames,
    /// Per-head RMSNorm weights of q and k (read when the config has `qk_norm`).
    pub q_norm: &'static str,
    pub k_norm: &'static str,
    pub o_proj: &'static str,
    pub mlp_norm: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    /// Tensors a checkpoint may carry that the model does not use (name suffixes).
    pub ignored_suffixes: &'static [&'static str],
}

/// Qwen v1 (`modeling_qwen.py`): `w2` is the gate and `w1` is up.
pub const QWEN_V1_NAMES: TensorNames = TensorNames {
    embed: "transformer.wte.weight",
    final_norm: "transformer.ln_f.weight",
    lm_head: "lm_head.weight",
    layer_prefix: "transformer.h.",
    attn_norm: "ln_1.weight",
    qkv: QkvNames::Fused("attn.c_attn"),
    q_norm: "",
    k_norm: "",
    o_proj: "attn.c_proj.weight",
    mlp_norm: "ln_2.weight",
    gate: "mlp.w2.weight",
    up: "mlp.w1.weight",
    down: "mlp.c_proj.weight",
    ignored_suffixes: &["rotary_emb.inv_freq"],
};

/// Qwen1.5, Qwen2, Qwen2.5, Qwen3 (the Hugging Face Llama-style names).
pub const QWEN2_NAMES: TensorNames = TensorNames {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    layer_prefix: "model.layers.",
    attn_norm: "input_layernorm.weight",
    qkv: QkvNames::Split(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
    q_norm: "self_attn.q_norm.weight",
    k_norm: "self_attn.k_norm.weight",
    o_proj: "self_attn.o_proj.weight",
    mlp_norm: "post_attention_layernorm.weight",
    gate: "mlp.gate_proj.weight",
    up: "mlp.up_proj.weight",
    down: "mlp.down_proj.weight",
    ignored_suffixes: &["rotary_emb.inv_freq"],
};

#[derive(Debug, Clone, PartialEq)]
pub struct QwenConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// The real MLP width (Qwen v1: half of its config's `intermediate_size`).
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (v1 `c_attn`, qwen2; qwen3 only with `attention_bias`).
    pub attention_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (qwen3).
    pub qk_norm: bool,
    /// Largest context the model was trained for (`max_position_embeddings`, v1 `seq_length`).
    pub max_position_embeddings: usize,
    /// Qwen v1: training context length that dynamic NTK and logN scale against.
    pub seq_length: usize,
    /// Qwen v1: dynamic NTK-aware RoPE base past `seq_length`.
    pub use_dynamic_ntk: bool,
    /// Qwen v1: logN query scaling past `seq_length`.
    pub use_logn_attn: bool,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| Error::Config(format!("missing field `{name}`")))
}

fn usize_field(v: &Value, name: &str) -> Result<usize> {
    let x = field(v, name)?;
    x.as_u64()
        .filter(|&n| n > 0 && n <= u32::MAX as u64)
        .map(|n| n as usize)
        .ok_or_else(|| Error::Config(format!("`{name}` must be a positive integer, got {x}")))
}

fn opt_usize(v: &Value, name: &str) -> Result<Option<usize>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => usize_field(v, name).map(Some),
    }
}

fn f64_field(v: &Value, name: &str) -> Result<f64> {
    let x = field(v, name)?;
    x.as_f64()
        .filter(|f| f.is_finite() && *f > 0.0)
        .ok_or_else(|| Error::Config(format!("`{name}` must be a positive number, got {x}")))
}

fn opt_f64(v: &Value, name: &str, default: f64) -> Result<f64> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(_) => f64_field(v, name),
    }
}

fn opt_bool(v: &Value, name: &str, default: bool) -> Result<bool> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(x) => Err(Error::Config(format!("`{name}` must be true or false, got {x}"))),
    }
}

impl QwenConfig {
    /// Parse the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(Error::Config("config.json must be a JSON object".into()));
        }
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("missing `model_type` (expected \"qwen\", \"qwen2\" or \"qwen3\")".into()))?;
        let cfg = match model_type {
            "qwen" => Self::qwen_v1(&v)?,
            "qwen2" => Self::qwen2_family(&v, Family::Qwen2)?,
            "qwen3" => Self::qwen2_family(&v, Family::Qwen3)?,
            other => {
                return Err(Error::Config(format!(
                    "unsupported model_type \"{other}\" (supported: qwen, qwen2, qwen3)"
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn qwen_v1(v: &Value) -> Result<Self> {
        let hidden_size = usize_field(v, "hidden_size")?;
        let heads = usize_field(v, "num_attention_heads")?;
        let head_dim = opt_usize(v, "kv_channels")?.unwrap_or(hidden_size / heads);
        let rotary_pct = opt_f64(v, "rotary_pct", 1.0)?;
        if rotary_pct != 1.0 {
            return Err(Error::Config(format!(
                "rotary_pct {rotary_pct} is not supported (only 1.0, as in every released Qwen v1)"
            )));
        }
        let ff = usize_field(v, "intermediate_size")?;
        if ff % 2 != 0 {
            return Err(Error::Config(format!("qwen intermediate_size {ff} must be even")));
        }
        let seq_length = usize_field(v, "seq_length")?;
        Ok(QwenConfig {
            family: Family::QwenV1,
            hidden_size,
            num_hidden_layers: usize_field(v, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim,
            intermediate_size: ff / 2,
            vocab_size: usize_field(v, "vocab_size")?,
            rope_theta: opt_f64(v, "rotary_emb_base", 10000.0)?,
            rms_norm_eps: opt_f64(v, "layer_norm_epsilon", 1e-6)?,
            tie_word_embeddings: opt_bool(v, "tie_word_embeddings", false)?,
            attention_bias: true,
            qk_norm: false,
            max_position_embeddings: opt_usize(v, "max_position_embeddings")?.unwrap_or(seq_length),
            seq_length,
            use_dynamic_ntk: opt_bool(v, "use_dynamic_ntk", false)?,
            use_logn_attn: opt_bool(v, "use_logn_attn", false)?,
        })
    }

    fn qwen2_family(v: &Value, family: Family) -> Result<Self> {
        let hidden_size = usize_field(v, "hidden_size")?;
        let heads = usize_field(v, "num_attention_heads")?;
        let head_dim = opt_usize(v, "head_dim")?.unwrap_or(hidden_size / heads);
        let max_pos = usize_field(v, "max_position_embeddings")?;
        match v.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(x) => {
                return Err(Error::Config(format!(
                    "rope_scaling {x} is not supported (only plain RoPE; the long-context scaling we run is Qwen v1's dynamic NTK)"
                )))
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(Error::Config(format!("hidden_act \"{act}\" is not supported (only silu)")));
            }
        }
        Ok(QwenConfig {
            family,
            hidden_size,
            num_hidden_layers: usize_field(v, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: opt_usize(v, "num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            intermediate_size: usize_field(v, "intermediate_size")?,
            vocab_size: usize_field(v, "vocab_size")?,
            rope_theta: opt_f64(v, "rope_theta", 10000.0)?,
            rms_norm_eps: opt_f64(v, "rms_norm_eps", 1e-6)?,
            tie_word_embeddings: opt_bool(v, "tie_word_embeddings", false)?,
            attention_bias: match family {
                Family::Qwen3 => opt_bool(v, "attention_bias", false)?,
                _ => true,
            },
            qk_norm: family == Family::Qwen3,
            max_position_embeddings: max_pos,
            seq_length: max_pos,
            use_dynamic_ntk: false,
            use_logn_attn: false,
        })
    }

    fn validate(&self) -> Result<()> {
        // Bounds far above any real model keep every size computation in range, also with
        // 32-bit usize (wasm32).
        for (name, v, max) in [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("vocab_size", self.vocab_size, 1 << 22),
        ] {
            if v > max {
                return Err(Error::Config(format!("{name} {v} is implausibly large (at most {max})")));
            }
        }
        let h = self.num_attention_heads;
        let kv = self.num_key_value_heads;
        if !h.is_multiple_of(kv) {
            return Err(Error::Config(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > 512 {
            return Err(Error::Config(format!(
                "head_dim {} must be even, positive and at most 512 (hidden_size / num_attention_heads when not given)",
                self.head_dim
            )));
        }
        if self.family != Family::Qwen3 && self.head_dim * h != self.hidden_size {
            return Err(Error::Config(format!(
                "hidden_size {} != num_attention_heads {h} x head_dim {}",
                self.hidden_size, self.head_dim
            )));
        }
        Ok(())
    }

    /// Width of one q/k/v projection output: heads × head_dim.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
    /// Rows of the fused q|k|v projection.
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// Parameter count, as the checkpoint stores it (lm_head counted only when untied).
    pub fn parameter_count(&self) -> u64 {
        let (d, ff, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let qkv = self.qkv_dim() as u64;
        let mut layer = 2 * d + qkv * d + self.q_dim() as u64 * d + 3 * d * ff;
        if self.attention_bias {
            layer += qkv;
        }
        if self.qk_norm {
            layer += 2 * self.head_dim as u64;
        }
        let mut n = v * d + self.num_hidden_layers as u64 * layer + d;
        if !self.tie_word_embeddings {
            n += v * d;
        }
        n
    }
}
