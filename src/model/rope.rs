//! Rotary position embedding tables, computed on the CPU for the positions of one forward
//! pass, and Qwen v1's long-context tricks (dynamic NTK and logN), as `modeling_qwen.py`
//! computes them.
//!
//! Angles are `f32(position) * f32(inv_freq)` in f32, as the reference computes them; cos and
//! sin of that f32 angle are then taken in f64 and rounded, so large positions lose nothing
//! to a GPU's approximate trigonometry.

/// `inv_freq[i] = 1 / base^(2i / head_dim)`, computed in f64 and rounded to f32.
pub fn inv_freq(base: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| (1.0 / base.powf((2 * i) as f64 / head_dim as f64)) as f32).collect()
}

/// Qwen v1 dynamic NTK: the alpha for a prefill whose total key length is `kv_len`.
/// `ctx = log2(kv_len / seq_length) + 1; alpha = max(2^ceil(ctx) - 1, 1)`.
pub fn ntk_alpha(kv_len: usize, seq_length: usize) -> f64 {
    let ctx = (kv_len as f64 / seq_length as f64).log2() + 1.0;
    (2f64.powf(ctx.ceil()) - 1.0).max(1.0)
}

/// The RoPE base after NTK scaling: `base * alpha^(dim / (dim - 2))`.
pub fn ntk_base(base: f64, alpha: f64, head_dim: usize) -> f64 {
    if alpha == 1.0 {
        base
    } else {
        base * alpha.powf(head_dim as f64 / (head_dim as f64 - 2.0))
    }
}

/// Qwen v1 logN query scale at 0-based `position`: `ln(p + 1) / ln(seq_length)` once
/// `p + 1 > seq_length`, else 1.
pub fn logn_scale(position: usize, seq_length: usize) -> f32 {
    let i = position + 1;
    if i > seq_length {
        ((i as f64).ln() / (seq_length as f64).ln()) as f32
    } else {
        1.0
    }
}

/// Fill `out` with one row per position `pos0 .. pos0 + n`: `[cos; D/2] [sin; D/2] [q scale]`
/// (the layout `qkv_rope.wgsl` reads). `logn_seq_length` enables logN scaling.
pub fn fill_table(out: &mut Vec<f32>, inv_freq: &[f32], pos0: usize, n: usize, logn_seq_length: Option<usize>) {
    let half = inv_freq.len();
    out.clear();
    for t in 0..n {
        let pos = pos0 + t;
        let p = pos as f32;
        for &f in inv_freq {
            out.push(((p * f) as f64).cos() as f32);
        }
        for &f in inv_freq {
            out.push(((p * f) as f64).sin() as f32);
        }
        out.push(logn_seq_length.map_or(1.0, |s| logn_scale(pos, s)));
    }
    debug_assert_eq!(out.len(), n * (2 * half + 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntk_alpha_matches_qwen_md() {
        assert_eq!(ntk_alpha(100, 8192), 1.0);
        assert_eq!(ntk_alpha(8192, 8192), 1.0);
        assert_eq!(ntk_alpha(8193, 8192), 3.0);
        assert_eq!(ntk_alpha(16384, 8192), 3.0);
        assert_eq!(ntk_alpha(16385, 8192), 7.0);
        assert_eq!(ntk_alpha(32768, 8192), 7.0);
    }

    #[test]
    fn logn_is_one_inside_training_length() {
        assert_eq!(logn_scale(8191, 8192), 1.0);
        let s = logn_scale(8192, 8192);
        assert!((s as f64 - (8193f64).ln() / (8192f64).ln()).abs() < 1e-7);
    }
}
