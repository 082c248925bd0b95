//! A plain-Rust CPU Qwen (llama2.c `run.c` style), written from QWEN.md independently of
//! the crate: the oracle for Qwen v1's dynamic NTK and logN (which candle does not do), and
//! itself checked against candle-transformers on ordinary contexts.

use super::{Spec, Tensors};

pub struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    bq: Vec<f32>,
    bk: Vec<f32>,
    bv: Vec<f32>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Vec<f32>,
    mlp_norm: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

pub struct RefModel {
    pub s: Spec,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Vec<f32>,
    theta: f64,
    eps: f32,
    /// Layer i's attention window: a query at p sees keys j with p - j < windows[i]
    /// (0: every key), as the Qwen report's layer-wise window attention.
    windows: Vec<usize>,
}

/// `out[r] = sum_k w[r, k] x[k]`, accumulated in f64.
fn matvec(w: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let cols = x.len();
    (0..rows)
        .map(|r| w[r * cols..(r + 1) * cols].iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32)
        .collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let s = (1.0 / (ms + eps as f64).sqrt()) as f32;
    x.iter().zip(w).map(|(a, b)| a * s * b).collect()
}

fn rotate(x: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let angle = (pos as f32 * inv_freq[i]) as f64;
        let (s, c) = (angle.sin() as f32, angle.cos() as f32);
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

pub struct Cache {
    k: Vec<Vec<Vec<f32>>>, // [layer][pos] kv_dim
    v: Vec<Vec<Vec<f32>>>,
    inv_freq: Vec<f32>,
}

impl RefModel {
    pub fn new(s: &Spec, t: &Tensors) -> RefModel {
        let get = |n: &str| t.get(n).unwrap_or_else(|| panic!("fixture lacks {n}")).1.clone();
        let (qd, kvd) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let mut layers = Vec::new();
        for i in 0..s.layers {
            layers.push(if s.model_type == "qwen" {
                let n = |x: &str| format!("transformer.h.{i}.{x}");
                let w = get(&n("attn.c_attn.weight"));
                let b = get(&n("attn.c_attn.bias"));
                let d = s.hidden;
                Layer {
                    attn_norm: get(&n("ln_1.weight")),
                    wq: w[..qd * d].to_vec(),
                    wk: w[qd * d..(qd + kvd) * d].to_vec(),
                    wv: w[(qd + kvd) * d..].to_vec(),
                    bq: b[..qd].to_vec(),
                    bk: b[qd..qd + kvd].to_vec(),
                    bv: b[qd + kvd..].to_vec(),
                    q_norm: None,
                    k_norm: None,
                    wo: get(&n("attn.c_proj.weight")),
                    mlp_norm: get(&n("ln_2.weight")),
                    gate: get(&n("mlp.w2.weight")),
                    up: get(&n("mlp.w1.weight")),
                    down: get(&n("mlp.c_proj.weight")),
                }
            } else {
                let n = |x: &str| format!("model.layers.{i}.{x}");
                let bias = |x: &str, len: usize| t.get(&n(x)).map(|v| v.1.clone()).unwrap_or_else(|| vec![0.0; len]);
                Layer {
                    attn_norm: get(&n("input_layernorm.weight")),
                    wq: get(&n("self_attn.q_proj.weight")),
                    wk: get(&n("self_attn.k_proj.weight")),
                    wv: get(&n("self_attn.v_proj.weight")),
                    bq: bias("self_attn.q_proj.bias", qd),
                    bk: bias("self_attn.k_proj.bias", kvd),
                    bv: bias("self_attn.v_proj.bias", kvd),
                    q_norm: t.get(&n("self_attn.q_norm.weight")).map(|v| v.1.clone()),
                    k_norm: t.get(&n("self_attn.k_norm.weight")).map(|v| v.1.clone()),
                    wo: get(&n("self_attn.o_proj.weight")),
                    mlp_norm: get(&n("post_attention_layernorm.weight")),
                    gate: get(&n("mlp.gate_proj.weight")),
                    up: get(&n("mlp.up_proj.weight")),
                    down: get(&n("mlp.down_proj.weight")),
                }
            });
        }
        let v1 = s.model_type == "qwen";
        let embed = get(if v1 { "transformer.wte.weight" } else { "model.embed_tokens.weight" });
        let lm_head = if s.tie { embed.clone() } else { get("lm_head.weight") };
        RefModel {
            s: s.clone(),
            embed,
            layers,
            norm: get(if v1 { "transformer.ln_f.weight" } else { "model.norm.weight" }),
            lm_head,
            theta: if v1 { 10000.0 } else { 1e6 },
            eps: 1e-6,
            windows: vec![0; s.layers],
        }
    }

    /// The same model with per-layer attention windows (one per layer, 0 = the whole cache).
    pub fn with_windows(mut self, windows: Vec<usize>) -> RefModel {
        assert_eq!(windows.len(), self.s.layers, "one window per layer");
        self.windows = windows;
        self
    }

    /// A fresh cache for a sequence whose first forward sees `prefill_len` tokens: Qwen v1's
    /// dynamic NTK fixes its RoPE base from that length (modeling_qwen.py `get_ntk_alpha`).
    pub fn cache(&self, prefill_len: usize) -> Cache {
        let dim = self.s.head_dim as f64;
        let mut base = self.theta;
        if self.s.ntk_logn {
            let context_value = (prefill_len as f64 / self.s.seq_length as f64).log2() + 1.0;
            let alpha = (2f64.powf(context_value.ceil()) - 1.0).max(1.0);
            base *= alpha.powf(dim / (dim - 2.0));
        }
        let inv_freq = (0..self.s.head_dim / 2).map(|i| (1.0 / base.powf(2.0 * i as f64 / dim)) as f32).collect();
        Cache { k: vec![Vec::new(); self.s.layers], v: vec![Vec::new(); self.s.layers], inv_freq }
    }

    /// Feed one token at the next position; returns its logits.
    pub fn step(&self, cache: &mut Cache, token: u32) -> Vec<f32> {
        let s = &self.s;
        let (d, hd) = (s.hidden, s.head_dim);
        let pos = cache.k[0].len();
        let mut x = self.embed[token as usize * d..(token as usize + 1) * d].to_vec();
        for (li, l) in self.layers.iter().enumerate() {
            let xn = rmsnorm(&x, &l.attn_norm, self.eps);
            let add = |v: Vec<f32>, b: &[f32]| v.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<f32>>();
            let mut q = add(matvec(&l.wq, &xn, s.heads * hd), &l.bq);
            let mut k = add(matvec(&l.wk, &xn, s.kv_heads * hd), &l.bk);
            let v = add(matvec(&l.wv, &xn, s.kv_heads * hd), &l.bv);
            for h in 0..s.heads {
                let qh = &mut q[h * hd..(h + 1) * hd];
                if let Some(w) = &l.q_norm {
                    let n = rmsnorm(qh, w, self.eps);
                    qh.copy_from_slice(&n);
                }
                rotate(qh, pos, &cache.inv_freq);
                // logN: queries past seq_length are scaled by log(p + 1) / log(seq_length).
                if s.ntk_logn && pos + 1 > s.seq_length {
                    let f = ((pos + 1) as f64).ln() / (s.seq_length as f64).ln();
                    qh.iter_mut().for_each(|e| *e = (*e as f64 * f) as f32);
                }
            }
            for h in 0..s.kv_heads {
                let kh = &mut k[h * hd..(h + 1) * hd];
                if let Some(w) = &l.k_norm {
                    let n = rmsnorm(kh, w, self.eps);
                    kh.copy_from_slice(&n);
                }
                rotate(kh, pos, &cache.inv_freq);
            }
            cache.k[li].push(k);
            cache.v[li].push(v);
            let mut att = vec![0f32; s.heads * hd];
            let group = s.heads / s.kv_heads;
            // Keys further back than the layer's window are masked out (weight 0).
            let window = self.windows[li];
            let seen = |j: usize| window == 0 || pos - j < window;
            for h in 0..s.heads {
                let kvh = h / group;
                let qh = &q[h * hd..(h + 1) * hd];
                let scores: Vec<f64> = cache.k[li]
                    .iter()
                    .enumerate()
                    .map(|(j, kj)| {
                        if !seen(j) {
                            return f64::NEG_INFINITY;
                        }
                        qh.iter().zip(&kj[kvh * hd..(kvh + 1) * hd]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, vj) in cache.v[li].iter().enumerate() {
                    for i in 0..hd {
                        att[h * hd + i] += (e[j] / sum * vj[kvh * hd + i] as f64) as f32;
                    }
                }
            }
            let o = matvec(&l.wo, &att, d);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rmsnorm(&x, &l.mlp_norm, self.eps);
            let g = matvec(&l.gate, &xn, s.ff);
            let u = matvec(&l.up, &xn, s.ff);
            let h: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let dn = matvec(&l.down, &h, d);
            x.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
        }
        matvec(&self.lm_head, &rmsnorm(&x, &self.norm, self.eps), s.vocab)
    }

    /// Logits at every position of a fresh sequence.
    pub fn logits_all(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut c = self.cache(tokens.len());
        tokens.iter().map(|&t| self.step(&mut c, t)).collect()
    }

    /// Greedy continuation of `n` tokens.
    pub fn greedy(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut c = self.cache(prompt.len());
        let mut logits = Vec::new();
        for &t in prompt {
            logits = self.step(&mut c, t);
        }
        let mut out = Vec::new();
        for _ in 0..n {
            let next = argmax(&logits);
            out.push(next);
            logits = self.step(&mut c, next);
        }
        out
    }
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}
