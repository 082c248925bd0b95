//! Every kernel against a plain CPU implementation, on shapes that are not multiples of the
//! workgroup sizes, with sentinel values around outputs to catch stray writes.

mod common;

use common::{assert_close, gpu, gpu_with, Rng};
use qwen_webgpu::gpu::{Gpu, GpuMatrix, Recorder};
use qwen_webgpu::ops::{self, Heads, LinearKernel};
use qwen_webgpu::weights::quant::{self, WeightFormat};

const SENTINEL: f32 = 12345.0;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

fn buf(g: &Gpu, data: &[f32]) -> wgpu::Buffer {
    g.storage_init("test", bytemuck::cast_slice(data)).unwrap()
}

fn read(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    pollster::block_on(g.read_f32(b, 0, n)).unwrap()
}

/// A KV cache buffer: f32, or f16 pairs packed in u32.
fn kv_buf(g: &Gpu, data: &[f32], f16: bool) -> wgpu::Buffer {
    if f16 {
        let bits: Vec<u16> = data.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
        g.storage_init("kv", bytemuck::cast_slice(&bits)).unwrap()
    } else {
        buf(g, data)
    }
}

fn read_kv(g: &Gpu, b: &wgpu::Buffer, n: usize, f16: bool) -> Vec<f32> {
    if f16 {
        let bytes = pollster::block_on(g.read(b, 0, n as u64 * 2)).unwrap();
        bytes.chunks_exact(2).take(n).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    } else {
        read(g, b, n)
    }
}

/// Upload `[rows, cols]` values as a GpuMatrix in `format`; returns it with the values the
/// GPU holds (decoded on the CPU), the reference for the kernels.
fn matrix_in(g: &Gpu, w: &[f32], rows: usize, cols: usize, format: WeightFormat) -> (GpuMatrix, Vec<f32>) {
    let m = GpuMatrix::new(g, "w", rows, cols, format).unwrap();
    assert_eq!(m.format, format.for_cols(cols));
    m.write_rows(g, 0, w, "w").unwrap();
    let (words, scales) = quant::encode_rows(m.format, w, cols, "w").unwrap();
    let deq = quant::decode_rows(m.format, &words, &scales, rows, cols);
    (m, deq)
}

/// Upload f16-exact values as an f16 GpuMatrix.
fn matrix(g: &Gpu, w: &[f32], rows: usize, cols: usize) -> GpuMatrix {
    matrix_in(g, w, rows, cols, WeightFormat::F16).0
}

fn run(g: &Gpu, f: impl FnOnce(&mut Recorder)) {
    let mut rec = Recorder::new(g);
    f(&mut rec);
    rec.submit().unwrap();
}

#[test]
fn embed_gathers_rows_across_chunks() {
    let mut rng = Rng::new(1);
    for (g, vocab, cols) in [(gpu(), 77, 35), (gpu_with(Some(64 << 10)), 1000, 50)] {
        let table = f16_round(&randn(&mut rng, vocab * cols));
        let m = matrix(&g, &table, vocab, cols);
        if vocab == 1000 {
            assert!(m.chunks.len() >= 2);
        }
        let tokens: Vec<u32> = vec![0, vocab as u32 - 1, 5, 5, 600 % vocab as u32, 17, 3, 1, 2, 76, 40, 0, 33];
        let tb = g.storage_init("tokens", bytemuck::cast_slice(&tokens)).unwrap();
        let n = tokens.len();
        let out = buf(&g, &vec![SENTINEL; (n + 1) * cols]);
        run(&g, |r| ops::embed(r, &tb, n, &m, &out).unwrap());
        let mut want: Vec<f32> =
            tokens.iter().flat_map(|&t| table[t as usize * cols..(t as usize + 1) * cols].to_vec()).collect();
        want.extend(vec![SENTINEL; cols]);
        assert_close("embed", &read(&g, &out, (n + 1) * cols), &want, 0.0, 0.0);
    }
}

#[test]
fn rms_norm_rows() {
    let g = gpu();
    let mut rng = Rng::new(2);
    let (rows, cols, row0) = (5, 333, 2);
    let x = randn(&mut rng, (rows + row0) * cols);
    let w = randn(&mut rng, cols);
    let (xb, wb) = (buf(&g, &x), buf(&g, &w));
    let out = buf(&g, &vec![SENTINEL; (rows + 1) * cols]);
    run(&g, |r| ops::rms_norm(r, &xb, row0, rows, cols, &wb, 1e-6, &out).unwrap());
    let mut want = Vec::new();
    for r in row0..row0 + rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let ms = xr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / cols as f64;
        let s = 1.0 / (ms + 1e-6).sqrt();
        want.extend(xr.iter().zip(&w).map(|(a, b)| (*a as f64 * s * *b as f64) as f32));
    }
    want.extend(vec![SENTINEL; cols]);
    assert_close("rms_norm", &read(&g, &out, (rows + 1) * cols), &want, 1e-5, 1e-5);
}

#[test]
fn linear_both_kernels_odd_shapes() {
    let mut rng = Rng::new(3);
    for (g, split) in [(gpu(), false), (gpu_with(Some(64 << 10)), true)] {
        for &(n_tokens, cols, rows) in
            &[(1, 35, 77), (2, 130, 300), (3, 35, 77), (17, 130, 300), (33, 64, 65), (5, 301, 260)]
        {
            let w = f16_round(&randn(&mut rng, rows * cols));
            let m = matrix(&g, &w, rows, cols);
            if split && rows * cols * 2 > 64 << 10 {
                assert!(m.chunks.len() > 1);
            }
            let x_row0 = 2;
            let x = randn(&mut rng, (x_row0 + n_tokens) * cols);
            let bias = randn(&mut rng, rows);
            let init = randn(&mut rng, n_tokens * rows);
            let (xb, bb) = (buf(&g, &x), buf(&g, &bias));
            for kind in [LinearKernel::MatVec, LinearKernel::Tiled] {
                for (use_bias, acc) in [(false, false), (true, false), (false, true), (true, true)] {
                    let mut start = init.clone();
                    start.extend(vec![SENTINEL; rows]);
                    let out = buf(&g, &start);
                    run(&g, |r| {
                        ops::linear_with(r, kind, &xb, x_row0, n_tokens, &m, use_bias.then_some(&bb), &out, acc)
                            .unwrap()
                    });
                    let mut want = Vec::new();
                    for t in 0..n_tokens {
                        let xr = &x[(x_row0 + t) * cols..(x_row0 + t + 1) * cols];
                        for o in 0..rows {
                            let mut s: f64 =
                                w[o * cols..(o + 1) * cols].iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                            if use_bias {
                                s += bias[o] as f64;
                            }
                            if acc {
                                s += init[t * rows + o] as f64;
                            }
                            want.push(s as f32);
                        }
                    }
                    want.extend(vec![SENTINEL; rows]);
                    let what =
                        format!("linear {kind:?} t={n_tokens} {rows}x{cols} bias={use_bias} acc={acc} split={split}");
                    assert_close(&what, &read(&g, &out, (n_tokens + 1) * rows), &want, 1e-4, 1e-4);
                }
            }
        }
    }
}

/// CPU rotate-half RoPE with a table row (cos, sin, q scale).
fn rope_cpu(x: &mut [f32], row: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * row[i] - b * row[half + i];
        x[i + half] = b * row[i] + a * row[half + i];
    }
}

#[test]
fn qkv_rope_splits_norms_rotates_and_writes_cache() {
    let g = gpu();
    let mut rng = Rng::new(4);
    let cases = [
        (3usize, 1usize, 10usize, false, false),
        (4, 2, 24, true, false),
        (2, 2, 160, true, false),
        (3, 1, 12, false, true),
        (4, 2, 24, true, true),
        (2, 2, 160, true, true),
    ];
    for &(h, kvh, d, qk_norm, kv_f16) in &cases {
        let (n, pos0, ctx) = (5, 7, 14);
        let heads = Heads { n_heads: h, n_kv_heads: kvh, head_dim: d, kv_f16 };
        let width = (h + 2 * kvh) * d;
        let qkv = randn(&mut rng, n * width);
        let inv = qwen_webgpu::model::rope::inv_freq(10000.0, d);
        let mut table = Vec::new();
        qwen_webgpu::model::rope::fill_table(&mut table, &inv, pos0, n, Some(9));
        let norm_w = randn(&mut rng, 2 * d);
        let (qkvb, tb, nb) = (buf(&g, &qkv), buf(&g, &table), buf(&g, &norm_w));
        let q_out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
        let kc = kv_buf(&g, &vec![SENTINEL; ctx * kvh * d], kv_f16);
        let vc = kv_buf(&g, &vec![SENTINEL; ctx * kvh * d], kv_f16);
        run(&g, |r| {
            ops::qkv_rope(r, heads, n, pos0, &qkvb, &tb, qk_norm.then_some((&nb, 1e-6)), &q_out, &kc, &vc).unwrap()
        });
        let mut want_q = vec![SENTINEL; (n + 1) * h * d];
        let mut want_k = vec![SENTINEL; ctx * kvh * d];
        let mut want_v = vec![SENTINEL; ctx * kvh * d];
        for t in 0..n {
            let row = &table[t * (d + 1)..(t + 1) * (d + 1)];
            for hh in 0..h + 2 * kvh {
                let mut x = qkv[t * width + hh * d..t * width + (hh + 1) * d].to_vec();
                if hh >= h + kvh {
                    let at = (pos0 + t) * kvh * d + (hh - h - kvh) * d;
                    want_v[at..at + d].copy_from_slice(&x);
                    continue;
                }
                if qk_norm {
                    let w = if hh < h { &norm_w[..d] } else { &norm_w[d..] };
                    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
                    let s = (1.0 / (ms + 1e-6).sqrt()) as f32;
                    x.iter_mut().zip(w).for_each(|(a, b)| *a = *a * s * b);
                }
                rope_cpu(&mut x, row);
                if hh < h {
                    x.iter_mut().for_each(|v| *v *= row[d]);
                    want_q[t * h * d + hh * d..t * h * d + (hh + 1) * d].copy_from_slice(&x);
                } else {
                    let at = (pos0 + t) * kvh * d + (hh - h) * d;
                    want_k[at..at + d].copy_from_slice(&x);
                }
            }
        }
        let what = format!("qkv_rope h={h} kvh={kvh} d={d} norm={qk_norm} kv_f16={kv_f16}");
        assert_close(&format!("{what} q"), &read(&g, &q_out, want_q.len()), &want_q, 1e-5, 1e-5);
        // f16 caches: the GPU rounds what the CPU computed; allow one f16 ulp of slack.
        let (want_k, want_v) = if kv_f16 { (f16_round(&want_k), f16_round(&want_v)) } else { (want_k, want_v) };
        let k_tol = if kv_f16 { 1e-3 } else { 1e-5 };
        assert_close(&format!("{what} k"), &read_kv(&g, &kc, want_k.len(), kv_f16), &want_k, 1e-5, k_tol);
        assert_close(&format!("{what} v"), &read_kv(&g, &vc, want_v.len(), kv_f16), &want_v, 0.0, 0.0);
        // The logN scale (positions ≥ 9 here) really was applied.
        assert!(table[(n - 1) * (d + 1) + d] > 1.0);
    }
}

#[test]
fn attention_causal_gqa_long_context() {
    let g = gpu();
    let mut rng = Rng::new(5);
    let cases = [
        (6usize, 2usize, 24usize, 4usize, 70usize, false),
        (2, 1, 160, 3, 0, false),
        (3, 3, 8, 9, 130, false),
        (6, 2, 24, 4, 70, true),
        (2, 1, 160, 3, 0, true),
    ];
    for &(h, kvh, d, n, pos0, kv_f16) in &cases {
        let heads = Heads { n_heads: h, n_kv_heads: kvh, head_dim: d, kv_f16 };
        let keys = pos0 + n;
        let ctx = keys + 3;
        let q = randn(&mut rng, n * h * d);
        let mut k: Vec<f32> = randn(&mut rng, ctx * kvh * d).iter().map(|x| x * 2.0).collect();
        let mut v = randn(&mut rng, ctx * kvh * d);
        if kv_f16 {
            (k, v) = (f16_round(&k), f16_round(&v));
        }
        let (qb, kb, vb) = (buf(&g, &q), kv_buf(&g, &k, kv_f16), kv_buf(&g, &v, kv_f16));
        let out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
        run(&g, |r| ops::attention(r, heads, n, pos0, &qb, &kb, &vb, &out).unwrap());
        let mut want = Vec::new();
        for t in 0..n {
            for hh in 0..h {
                let kv = hh / (h / kvh);
                let qh = &q[(t * h + hh) * d..(t * h + hh + 1) * d];
                let s: Vec<f64> = (0..=pos0 + t)
                    .map(|j| {
                        qh.iter().zip(&k[(j * kvh + kv) * d..]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    want.push((0..=pos0 + t).map(|j| e[j] / z * v[(j * kvh + kv) * d + i] as f64).sum::<f64>() as f32);
                }
            }
        }
        want.extend(vec![SENTINEL; h * d]);
        assert_close(
            &format!("attention h={h} kvh={kvh} d={d} n={n} pos0={pos0} kv_f16={kv_f16}"),
            &read(&g, &out, want.len()),
            &want,
            2e-5,
            2e-4,
        );
    }
}

#[test]
fn silu_mul_elementwise() {
    let g = gpu();
    let mut rng = Rng::new(6);
    let n = 1001;
    let gate: Vec<f32> = randn(&mut rng, n).iter().map(|x| x * 8.0).collect();
    let up = randn(&mut rng, n);
    let mut start = gate.clone();
    start.push(SENTINEL);
    let (gb, ub) = (buf(&g, &start), buf(&g, &up));
    run(&g, |r| ops::silu_mul(r, &gb, &ub, n).unwrap());
    let mut want: Vec<f32> =
        gate.iter().zip(&up).map(|(x, u)| (*x as f64 / (1.0 + (-*x as f64).exp()) * *u as f64) as f32).collect();
    want.push(SENTINEL);
    assert_close("silu_mul", &read(&g, &gb, n + 1), &want, 1e-6, 1e-5);
}

#[test]
fn argmax_first_max_and_nan() {
    let g = gpu();
    let mut rng = Rng::new(7);
    let argmax = |x: &[f32]| -> u32 {
        let b = buf(&g, x);
        let out = g.storage("out", 4).unwrap();
        run(&g, |r| ops::argmax(r, &b, x.len(), &out).unwrap());
        let v = pollster::block_on(g.read(&out, 0, 4)).unwrap();
        u32::from_le_bytes([v[0], v[1], v[2], v[3]])
    };
    let mut big = randn(&mut rng, 151_937);
    big[123_457] = 9.0;
    big[150_001] = 9.0; // a tie: the first index wins
    big[5] = f32::NAN;
    assert_eq!(argmax(&big), 123_457);
    assert_eq!(argmax(&[-3.0, -1.0, -2.0]), 1);
    assert_eq!(argmax(&[f32::NAN, -5.0]), 1);
    assert_eq!(argmax(&[f32::NAN; 3]), u32::MAX);
}

/// Quantized weights: every kernel that reads a matrix (mat-vec, tiled matmul, embedding)
/// against the CPU-dequantized values, across chunk splits.
#[test]
fn quantized_formats_in_every_weight_kernel() {
    let mut rng = Rng::new(8);
    for (g, split) in [(gpu(), false), (gpu_with(Some(64 << 10)), true)] {
        for format in [WeightFormat::Q8, WeightFormat::Q4] {
            let (rows, cols) = (601, 320);
            let w = randn(&mut rng, rows * cols);
            let (m, deq) = matrix_in(&g, &w, rows, cols, format);
            assert!(!split || m.chunks.len() > 1);
            // The quantization error itself is bounded: q8 half a step, q4 at most one step.
            let step = if format == WeightFormat::Q8 { 0.5 / 127.0 } else { 1.0 / 8.0 };
            for (grp, (a, b)) in w.chunks(32).zip(deq.chunks(32)).enumerate() {
                let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= amax * step * 1.01 + 1e-3, "{format:?} group {grp}: {x} vs {y}");
                }
            }
            for n_tokens in [1, 2, 5, 19] {
                let x = randn(&mut rng, n_tokens * cols);
                let bias = randn(&mut rng, rows);
                let (xb, bb) = (buf(&g, &x), buf(&g, &bias));
                let mut want = Vec::new();
                for t in 0..n_tokens {
                    for o in 0..rows {
                        let s: f64 = deq[o * cols..(o + 1) * cols]
                            .iter()
                            .zip(&x[t * cols..])
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum();
                        want.push((s + bias[o] as f64) as f32);
                    }
                }
                for kind in [LinearKernel::MatVec, LinearKernel::Tiled] {
                    let out = buf(&g, &vec![SENTINEL; n_tokens * rows + 1]);
                    run(&g, |r| ops::linear_with(r, kind, &xb, 0, n_tokens, &m, Some(&bb), &out, false).unwrap());
                    let mut want = want.clone();
                    want.push(SENTINEL);
                    assert_close(
                        &format!("{format:?} {kind:?} t={n_tokens} split={split}"),
                        &read(&g, &out, want.len()),
                        &want,
                        1e-4,
                        1e-4,
                    );
                }
            }
            let tokens: Vec<u32> = vec![0, 600, 150, 7, 599, 333];
            let tb = g.storage_init("tokens", bytemuck::cast_slice(&tokens)).unwrap();
            let out = buf(&g, &vec![SENTINEL; tokens.len() * cols]);
            run(&g, |r| ops::embed(r, &tb, tokens.len(), &m, &out).unwrap());
            let want: Vec<f32> =
                tokens.iter().flat_map(|&t| deq[t as usize * cols..(t as usize + 1) * cols].to_vec()).collect();
            assert_close(&format!("{format:?} embed"), &read(&g, &out, want.len()), &want, 0.0, 0.0);
        }
    }
}
