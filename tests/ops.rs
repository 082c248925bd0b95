//! Every kernel against a plain CPU implementation, on shapes that are not multiples of the
//! workgroup sizes, with sentinel values around outputs to catch stray writes.

mod common;

use common::{assert_close, gpu, gpu_with, random_ggml_blocks, Rng};
use qwen_webgpu::gpu::{Gpu, GpuBuffer, GpuMatrix, Recorder};
use qwen_webgpu::ops::{self, Heads, KvFormat, LinearKernel};
use qwen_webgpu::weights::ggml::{self, GgmlType};
use qwen_webgpu::weights::quant::{self, WeightFormat};

const SENTINEL: f32 = 12345.0;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

fn buf(g: &Gpu, data: &[f32]) -> GpuBuffer {
    g.storage_init("test", bytemuck::cast_slice(data)).unwrap()
}

fn read(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    pollster::block_on(g.read_f32(b, 0, n)).unwrap()
}

/// Encode a KV cache `[ctx, kvh, d]` in `fmt` on the CPU: (bytes, the values the GPU sees).
fn kv_encode(data: &[f32], fmt: KvFormat, d: usize) -> (Vec<u8>, Vec<f32>) {
    match fmt {
        KvFormat::F32 => (bytemuck::cast_slice(data).to_vec(), data.to_vec()),
        KvFormat::F16 => {
            let bits: Vec<u16> = data.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
            (bytemuck::cast_slice(&bits).to_vec(), f16_round(data))
        }
        KvFormat::Q8 => {
            let (mut q, mut scales, mut seen) = (Vec::new(), Vec::new(), Vec::new());
            for head in data.chunks(d) {
                let s = head.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                for &x in head {
                    let v = (x * inv).round().clamp(-127.0, 127.0) as i8;
                    q.push(v as u8);
                    seen.push(v as f32 * s);
                }
                scales.push(s);
            }
            q.extend_from_slice(bytemuck::cast_slice(&scales));
            (q, seen)
        }
    }
}

/// A KV cache buffer filled with `data`; returns it and the values the GPU sees.
fn kv_buf(g: &Gpu, data: &[f32], fmt: KvFormat, d: usize) -> (GpuBuffer, Vec<f32>) {
    let (bytes, seen) = kv_encode(data, fmt, d);
    (g.storage_init("kv", &bytes).unwrap(), seen)
}

/// Read back `n` values of a KV cache buffer in `fmt`.
fn read_kv(g: &Gpu, b: &wgpu::Buffer, n: usize, fmt: KvFormat, d: usize) -> Vec<f32> {
    match fmt {
        KvFormat::F32 => read(g, b, n),
        KvFormat::F16 => {
            let bytes = pollster::block_on(g.read(b, 0, n as u64 * 2)).unwrap();
            bytes.chunks_exact(2).take(n).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        KvFormat::Q8 => {
            let bytes = pollster::block_on(g.read(b, 0, n as u64 + (n / d) as u64 * 4)).unwrap();
            let scales: &[f32] = bytemuck::cast_slice(&bytes[n..n + n / d * 4]);
            bytes[..n].iter().enumerate().map(|(i, &q)| q as i8 as f32 * scales[i / d]).collect()
        }
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
    let mut g = gpu();
    let mut rng = Rng::new(2);
    // Widths with and without 16-byte loads; a CPU adapter's and a GPU's workgroup width.
    for (rows, cols, row0) in [(5, 333, 2), (3, 2052, 1)] {
        for norm_wg in [ops::WG, ops::NORM_WG] {
            g.tuning.norm_wg = norm_wg;
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
            let what = format!("rms_norm {rows}x{cols}, {norm_wg} threads");
            assert_close(&what, &read(&g, &out, (rows + 1) * cols), &want, 1e-5, 1e-5);
        }
    }
}

/// CPU RMSNorm of one row (f64 sums): `x * rsqrt(mean(x^2) + eps) * w`.
fn rms_normed(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| (*v as f64 * inv * *g as f64) as f32).collect()
}

/// Every linear kernel that can run `m` here.
fn kinds(g: &Gpu, m: &GpuMatrix) -> Vec<LinearKernel> {
    use LinearKernel::*;
    let all = [MatVec, Block, SubgroupBlock, Tiled];
    all.into_iter().filter(|&k| ops::linear_fits(g, k, m)).collect()
}

/// Every linear kernel that can run `m` here, the block kernels in each geometry (rows,
/// threads): the adapter's own `own`, a GPU's (4, 64) and 16 rows of one subgroup.
fn kernel_runs(g: &Gpu, m: &GpuMatrix, own: (u32, u32)) -> Vec<(LinearKernel, (u32, u32))> {
    let mut geometries = vec![own, (4, ops::WG), (16, g.subgroup_size.unwrap_or(ops::WG))];
    geometries.sort();
    geometries.dedup();
    kinds(g, m)
        .into_iter()
        .flat_map(|k| {
            let n = if matches!(k, LinearKernel::Block | LinearKernel::SubgroupBlock) { geometries.len() } else { 1 };
            geometries[..n].iter().map(move |&geo| (k, geo)).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn linear_every_kernel_odd_shapes() {
    let mut rng = Rng::new(3);
    for (mut g, split) in [(gpu(), false), (gpu_with(Some(64 << 10)), true)] {
        let own = (g.tuning.block_rows, g.tuning.block_wg);
        for &(n_tokens, cols, rows) in &[
            (1, 35, 77),
            (2, 130, 300),
            (3, 35, 77),
            (17, 130, 300),
            (33, 64, 65),
            (5, 301, 260),
            (1, 136, 77),
            (2, 520, 301),
        ] {
            let w = f16_round(&randn(&mut rng, rows * cols));
            let m = matrix(&g, &w, rows, cols);
            if split && rows * cols * 2 > 64 << 10 {
                assert!(m.chunks.len() > 1);
            }
            let x_row0 = 2;
            let x = randn(&mut rng, (x_row0 + n_tokens) * cols);
            let bias = randn(&mut rng, rows);
            let init = randn(&mut rng, n_tokens * rows);
            let norm_w = randn(&mut rng, cols);
            let (xb, bb, nb) = (buf(&g, &x), buf(&g, &bias), buf(&g, &norm_w));
            let eps = 1e-6;
            for (kind, (block_rows, block_wg)) in kernel_runs(&g, &m, own) {
                g.tuning.block_rows = block_rows;
                g.tuning.block_wg = block_wg;
                for (use_bias, acc, norm) in [
                    (false, false, false),
                    (true, false, false),
                    (false, true, false),
                    (true, true, false),
                    (false, false, true),
                    (true, true, true),
                ] {
                    let mut start = init.clone();
                    start.extend(vec![SENTINEL; rows]);
                    let out = buf(&g, &start);
                    let nw = norm.then_some((&*nb, eps));
                    run(&g, |r| {
                        ops::linear_with(r, kind, &xb, x_row0, n_tokens, nw, &m, use_bias.then_some(&bb), &out, acc)
                            .unwrap()
                    });
                    let mut want = Vec::new();
                    for t in 0..n_tokens {
                        let xr = &x[(x_row0 + t) * cols..(x_row0 + t + 1) * cols];
                        let xr = if norm { rms_normed(xr, &norm_w, eps) } else { xr.to_vec() };
                        for o in 0..rows {
                            let mut s: f64 =
                                w[o * cols..(o + 1) * cols].iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
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
                    let what = format!(
                        "linear {kind:?} ({block_rows} rows, {block_wg} threads) t={n_tokens} {rows}x{cols} bias={use_bias} acc={acc} norm={norm} split={split}"
                    );
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

/// Random inputs of the q/k/v split and RoPE: `n` rows of the raw projection `width` wide,
/// the RoPE table for positions `pos0..` (logN from position 9 on, so its scale is tested)
/// and q/k norm weights `[2 d]`, each on the host and on the GPU.
fn rope_inputs(
    g: &Gpu,
    rng: &mut Rng,
    width: usize,
    d: usize,
    n: usize,
    pos0: usize,
) -> (HostAndGpu, HostAndGpu, HostAndGpu) {
    let qkv = randn(rng, n * width);
    let inv = qwen_webgpu::model::rope::inv_freq(10000.0, d);
    let mut table = Vec::new();
    qwen_webgpu::model::rope::fill_table(&mut table, &inv, pos0, n, Some(9));
    let norm_w = randn(rng, 2 * d);
    let (qkvb, tb, nb) = (buf(g, &qkv), buf(g, &table), buf(g, &norm_w));
    ((qkv, qkvb), (table, tb), (norm_w, nb))
}

#[test]
fn qkv_rope_splits_norms_rotates_and_writes_cache() {
    let g = gpu();
    let mut rng = Rng::new(4);
    use KvFormat::{F16, F32, Q8};
    let cases = [
        (3usize, 1usize, 10usize, false, F32),
        (4, 2, 24, true, F32),
        (2, 2, 160, true, F32),
        (3, 1, 12, false, F16),
        (4, 2, 24, true, F16),
        (2, 2, 160, true, F16),
        (3, 1, 12, false, Q8),
        (4, 2, 24, true, Q8),
        (2, 2, 160, true, Q8),
    ];
    for &(h, kvh, d, qk_norm, kv) in &cases {
        let (n, pos0, ctx) = (5, 7, 14);
        let heads = Heads { n_heads: h, n_kv_heads: kvh, head_dim: d, kv, kv_scales: kv.scales_offset(ctx, kvh, d) };
        let width = (h + 2 * kvh) * d;
        let ((qkv, qkvb), (table, tb), (norm_w, nb)) = rope_inputs(&g, &mut rng, width, d, n, pos0);
        let q_out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
        let (kc, _) = kv_buf(&g, &vec![SENTINEL; ctx * kvh * d], kv, d);
        let (vc, _) = kv_buf(&g, &vec![SENTINEL; ctx * kvh * d], kv, d);
        run(&g, |r| {
            ops::qkv_rope(r, heads, n, pos0, &qkvb, &tb, qk_norm.then_some((&nb, 1e-6)), &q_out, &kc, &vc).unwrap()
        });
        let mut want_q = vec![SENTINEL; (n + 1) * h * d];
        let mut want_k = vec![SENTINEL; ctx * kvh * d];
        let mut want_v = vec![SENTINEL; ctx * kvh * d];
        for t in 0..n {
            let row = &table[t * (d + 1)..(t + 1) * (d + 1)];
            let [q, k, v] = qkv_cpu(&qkv[t * width..(t + 1) * width], (h, kvh, d), row, qk_norm.then_some(&norm_w));
            want_q[t * h * d..(t + 1) * h * d].copy_from_slice(&q);
            let at = (pos0 + t) * kvh * d;
            want_k[at..at + kvh * d].copy_from_slice(&k);
            want_v[at..at + kvh * d].copy_from_slice(&v);
        }
        let what = format!("qkv_rope h={h} kvh={kvh} d={d} norm={qk_norm} kv={kv:?}");
        assert_close(&format!("{what} q"), &read(&g, &q_out, want_q.len()), &want_q, 1e-5, 1e-5);
        // Packed caches: the GPU encodes what the CPU computed; compare with the CPU's encoding,
        // allowing one step of slack for values that round the other way.
        let (_, want_k) = kv_encode(&want_k, kv, d);
        let (_, want_v) = kv_encode(&want_v, kv, d);
        let (atol, rtol) = match kv {
            F32 => (1e-5, 1e-5),
            F16 => (1e-5, 1e-3),
            Q8 => (0.05, 0.0), // one int8 step of a head whose max is at most ~5
        };
        assert_close(&format!("{what} k"), &read_kv(&g, &kc, want_k.len(), kv, d), &want_k, atol, rtol);
        let v_tol = if kv == Q8 { 1e-5 } else { 0.0 };
        assert_close(&format!("{what} v"), &read_kv(&g, &vc, want_v.len(), kv, d), &want_v, v_tol, v_tol);
        // The logN scale (positions ≥ 9 here) really was applied.
        assert!(table[(n - 1) * (d + 1) + d] > 1.0);
    }
}

/// Values on the host and the GPU buffer that holds them.
type HostAndGpu = (Vec<f32>, GpuBuffer);

/// Random attention inputs: `n` queries of `h` heads, a cache of `ctx` positions of `kvh`
/// heads in format `kv` (keys scaled up so that the softmax is peaked), each as the CPU
/// values (the cache's as stored, after rounding) and its GPU buffer.
fn attention_inputs(
    g: &Gpu,
    rng: &mut Rng,
    (h, kvh, d): (usize, usize, usize),
    n: usize,
    ctx: usize,
    kv: KvFormat,
) -> (Heads, HostAndGpu, HostAndGpu, HostAndGpu) {
    let heads = Heads { n_heads: h, n_kv_heads: kvh, head_dim: d, kv, kv_scales: kv.scales_offset(ctx, kvh, d) };
    let q = randn(rng, n * h * d);
    let k: Vec<f32> = randn(rng, ctx * kvh * d).iter().map(|x| x * 2.0).collect();
    let v = randn(rng, ctx * kvh * d);
    let ((kb, k), (vb, v)) = (kv_buf(g, &k, kv, d), kv_buf(g, &v, kv, d));
    let qb = buf(g, &q);
    (heads, (q, qb), (k, kb), (v, vb))
}

/// Both attention kernels, the row-tiled one first (it fits every shape these tests use, and
/// is the one `ops::attention` picks for them).
fn attention_kernels(g: &Gpu, heads: Heads) -> [ops::AttentionKernel; 2] {
    assert_eq!(ops::attention_kernel(g, heads), ops::AttentionKernel::Rows);
    [ops::AttentionKernel::Rows, ops::AttentionKernel::PerQuery]
}

#[test]
fn attention_causal_gqa_long_context() {
    let g = gpu();
    let mut rng = Rng::new(5);
    use KvFormat::{F16, F32, Q8};
    let cases = [
        (6usize, 2usize, 24usize, 4usize, 70usize, F32),
        (2, 1, 160, 3, 0, F32),
        (3, 3, 8, 9, 130, F32),
        (6, 2, 24, 4, 70, F16),
        (2, 1, 160, 3, 0, F16),
        (6, 2, 24, 4, 70, Q8),
        (2, 1, 160, 3, 0, Q8),
        // Decode shapes: split-K over many key blocks (with a partials buffer), the last
        // block partial; two tokens, whose key counts differ.
        (4, 2, 128, 1, 1000, F32),
        (3, 1, 40, 2, 2100, F16),
        (4, 4, 128, 1, 777, Q8),
        (2, 2, 8, 2, 63, F32),
    ];
    let partials = g.storage("partials", ops::attention_partials_bytes(6, 160)).unwrap();
    for (&(h, kvh, d, n, pos0, kv), split) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
        let keys = pos0 + n;
        let ctx = keys + 3;
        let (heads, (q, qb), (k, kb), (v, vb)) = attention_inputs(&g, &mut rng, (h, kvh, d), n, ctx, kv);
        let out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
        let part = split.then_some(&*partials);
        if split && n <= ops::ATTENTION_SPLIT_MAX_TOKENS && pos0 + n > 64 {
            assert!(ops::attention_split_chunk(n, pos0, 0).is_some(), "split-K runs for n={n} pos0={pos0}");
        }
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
        for kind in attention_kernels(&g, heads) {
            run(&g, |r| ops::attention_with(r, kind, heads, n, pos0, &qb, &kb, &vb, &out, part, 0).unwrap());
            assert_close(
                &format!("attention {kind:?} h={h} kvh={kvh} d={d} n={n} pos0={pos0} kv={kv:?} split={split}"),
                &read(&g, &out, want.len()),
                &want,
                2e-5,
                2e-4,
            );
        }
    }
}

/// Plain attention in f64 with an explicit mask: query t (at position pos0 + t) of head hh
/// scores every key 0 ..= pos0 + t, keys `j` with `pos - j >= window` (window > 0) get -inf,
/// then softmax and the weighted sum of values. `[n, h, d]` out.
#[allow(clippy::too_many_arguments)]
fn attention_cpu_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (h, kvh, d): (usize, usize, usize),
    n: usize,
    pos0: usize,
    window: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * h * d);
    for t in 0..n {
        let pos = pos0 + t;
        for hh in 0..h {
            let g = hh / (h / kvh);
            let qh = &q[(t * h + hh) * d..(t * h + hh + 1) * d];
            let scores: Vec<f64> = (0..=pos)
                .map(|j| {
                    if window > 0 && pos - j >= window {
                        return f64::NEG_INFINITY;
                    }
                    let kj = &k[(j * kvh + g) * d..(j * kvh + g + 1) * d];
                    qh.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (d as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for i in 0..d {
                out.push((0..=pos).map(|j| e[j] / z * v[(j * kvh + g) * d + i] as f64).sum::<f64>() as f32);
            }
        }
    }
    out
}

#[test]
fn attention_windows_skip_old_keys() {
    let g = gpu();
    let mut rng = Rng::new(17);
    use KvFormat::{F16, F32, Q8};
    // (heads, kv heads, head dim, tokens, pos0, kv format, windows). Decode (1 token at
    // 300+: windows of one key, a few, a hundred, longer than the context, none) and prefill
    // (several tokens after a cached prefix, windows shorter than the batch).
    type Case = (usize, usize, usize, usize, usize, KvFormat, Vec<usize>);
    let cases: Vec<Case> = vec![
        (6, 2, 64, 1, 300, F32, vec![1, 7, 100, 400, 0]),
        (6, 2, 128, 1, 333, F16, vec![1, 7, 100, 334, 0]),
        (6, 2, 64, 1, 1001, Q8, vec![1, 7, 100, 65, 129, 2000, 0]),
        (4, 1, 128, 2, 517, Q8, vec![1, 2, 7, 100, 0]),
        (6, 2, 64, 2, 64, F32, vec![1, 2, 3, 64, 65, 66, 0]),
        (6, 2, 64, 9, 150, F32, vec![1, 3, 8, 70, 0]),
        (6, 3, 128, 13, 41, F16, vec![1, 5, 12, 40, 0]),
        (6, 2, 64, 37, 200, Q8, vec![2, 30, 64, 65, 300, 0]),
        (4, 4, 64, 40, 70, F16, vec![1, 20, 0]),
        (2, 2, 64, 5, 0, F32, vec![1, 3, 0]),
    ];
    let partials = g.storage("partials", ops::attention_partials_bytes(6, 128)).unwrap();
    for (h, kvh, d, n, pos0, kv, windows) in cases {
        let keys = pos0 + n;
        let ctx = keys + 5;
        let (heads, (q, qb), (k, kb), (v, vb)) = attention_inputs(&g, &mut rng, (h, kvh, d), n, ctx, kv);
        let whole = attention_cpu_masked(&q, &k, &v, (h, kvh, d), n, pos0, 0);
        for &w in &windows {
            let mut want = attention_cpu_masked(&q, &k, &v, (h, kvh, d), n, pos0, w);
            // A window shorter than some token's keys changes that token's result.
            if w > 0 && w < keys {
                let diff = want.iter().zip(&whole).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff > 1e-3, "window {w} changes nothing at n={n} pos0={pos0} (max diff {diff})");
            }
            want.extend(vec![SENTINEL; h * d]);
            for split in [false, true] {
                let what =
                    format!("attention h={h} kvh={kvh} d={d} n={n} pos0={pos0} kv={kv:?} window={w} split={split}");
                let chunk = ops::attention_split_chunk(n, pos0, w);
                if split && n <= ops::ATTENTION_SPLIT_MAX_TOKENS {
                    // Split-K over the window's span only: like a cache of that many keys.
                    let span = if w == 0 { keys } else { (w + n - 1).min(keys) };
                    assert_eq!(ops::attention_span(n, pos0, w), span, "{what}");
                    assert_eq!(chunk, ops::attention_split_chunk(n, span - n, 0), "{what}");
                    assert_eq!(chunk.is_some(), span > 64, "{what}");
                }
                let part = split.then_some(&*partials);
                for kind in attention_kernels(&g, heads) {
                    let out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
                    run(&g, |r| ops::attention_with(r, kind, heads, n, pos0, &qb, &kb, &vb, &out, part, w).unwrap());
                    assert_close(&format!("{what} {kind:?}"), &read(&g, &out, want.len()), &want, 2e-5, 2e-4);
                }
            }
        }
    }
    // A 32K cache with a 1K window splits like a 1K cache; windows longer than the cache
    // are no window.
    assert_eq!(ops::attention_split_chunk(1, 32767, 1024), ops::attention_split_chunk(1, 1023, 0));
    assert_eq!(ops::attention_split_chunk(2, 32766, 1024), ops::attention_split_chunk(2, 1023, 0));
    assert_eq!(ops::attention_split_chunk(1, 32767, 1), None);
    assert_eq!(ops::attention_split_chunk(1, 500, 4096), ops::attention_split_chunk(1, 500, 0));
}

/// The CPU's q, k and v of one token from the raw projection row `x` `[(h + 2 kvh) d]`:
/// (Qwen3) per-head RMSNorm of q and k with `norm_w` `[2 d]`, RoPE with the table `row`,
/// the logN scale on q. Returns (q `[h d]`, k `[kvh d]`, v `[kvh d]`).
fn qkv_cpu(x: &[f32], (h, kvh, d): (usize, usize, usize), row: &[f32], norm_w: Option<&[f32]>) -> [Vec<f32>; 3] {
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (hh, head) in x.chunks(d).enumerate() {
        let mut v = head.to_vec();
        if hh >= h + kvh {
            out[2].extend(v);
            continue;
        }
        if let Some(w) = norm_w {
            let w = if hh < h { &w[..d] } else { &w[d..] };
            let ms = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>() / d as f64;
            let s = (1.0 / (ms + 1e-6).sqrt()) as f32;
            v.iter_mut().zip(w).for_each(|(a, b)| *a = *a * s * b);
        }
        rope_cpu(&mut v, row);
        if hh < h {
            v.iter_mut().for_each(|a| *a *= row[d]);
            out[0].extend(v);
        } else {
            out[1].extend(v);
        }
    }
    out
}

#[test]
fn attention_decode_fuses_rope_cache_write_and_attention() {
    let g = gpu();
    let mut rng = Rng::new(23);
    use KvFormat::{F16, F32, Q8};
    // (heads, kv heads, head dim, tokens, pos0, kv format, q/k norm, windows): MHA and GQA
    // groups up to 8 (two tokens: 16 query rows a workgroup), head dims below, at and above
    // the workgroup, the first token, a second token that sees the first's new key, long
    // caches split into many blocks.
    type Case = (usize, usize, usize, usize, usize, KvFormat, bool, Vec<usize>);
    let cases: Vec<Case> = vec![
        (6, 2, 64, 1, 300, F32, false, vec![0, 1, 7, 100]),
        (6, 2, 128, 1, 333, F16, true, vec![0, 7, 334]),
        (6, 2, 64, 2, 1001, Q8, true, vec![0, 1, 2, 65, 129]),
        (4, 4, 128, 1, 0, Q8, false, vec![0]),
        (4, 1, 128, 2, 0, F32, true, vec![0, 1]),
        (16, 2, 128, 2, 777, Q8, false, vec![0, 100]),
        (3, 1, 24, 1, 63, F16, false, vec![0, 5]),
        (2, 2, 160, 2, 130, F32, true, vec![0, 50]),
        (12, 2, 128, 1, 2100, Q8, true, vec![0, 1024]),
        // head_dim 512 (the largest a config may have): two quads of values a thread.
        (2, 1, 512, 1, 300, F16, true, vec![0]),
    ];
    // Splits grow with the cache: none up to 256 keys, 8 at 2048, 32 from 8192.
    let splits = |keys: usize| ops::attention_decode_split_chunk(1, keys - 1, 0).map_or(1, |c| keys.div_ceil(c));
    assert_eq!([splits(256), splits(257), splits(2048), splits(8192), splits(32768)], [1, 2, 8, 32, 32]);
    let partials = g.storage("partials", ops::attention_partials_bytes(16, 160)).unwrap();
    for (h, kvh, d, n, pos0, kv, qk_norm, windows) in cases {
        let ctx = pos0 + n + 3;
        let heads = Heads { n_heads: h, n_kv_heads: kvh, head_dim: d, kv, kv_scales: kv.scales_offset(ctx, kvh, d) };
        assert!(ops::attention_decode_fits(&g, heads, n), "h={h} kvh={kvh} d={d} n={n}");
        let width = (h + 2 * kvh) * d;
        let ((qkv, qkvb), (table, tb), (norm_w, nb)) = rope_inputs(&g, &mut rng, width, d, n, pos0);
        // The CPU's queries, and the cache with the pass's keys and values in place.
        let mut k_all: Vec<f32> = randn(&mut rng, ctx * kvh * d).iter().map(|x| x * 2.0).collect();
        let mut v_all = randn(&mut rng, ctx * kvh * d);
        let mut q = Vec::new();
        for t in 0..n {
            let row = &table[t * (d + 1)..(t + 1) * (d + 1)];
            let [qt, kt, vt] = qkv_cpu(&qkv[t * width..(t + 1) * width], (h, kvh, d), row, qk_norm.then_some(&norm_w));
            q.extend(qt);
            let at = (pos0 + t) * kvh * d;
            k_all[at..at + kvh * d].copy_from_slice(&kt);
            v_all[at..at + kvh * d].copy_from_slice(&vt);
        }
        let (_, want_k) = kv_encode(&k_all, kv, d);
        let (_, want_v) = kv_encode(&v_all, kv, d);
        for &w in &windows {
            for split in [false, true] {
                let what = format!("attention_decode h={h} kvh={kvh} d={d} n={n} pos0={pos0} kv={kv:?} norm={qk_norm} window={w} split={split}");
                let span = ops::attention_span(n, pos0, w);
                let chunk = ops::attention_decode_split_chunk(n, pos0, w);
                assert_eq!(chunk.is_some(), span > ops::DECODE_MIN_CHUNK, "{what}");
                // The cache as the pass finds it: old positions filled, the pass's rows stale.
                let mut k_old = k_all.clone();
                let mut v_old = v_all.clone();
                let pass = pos0 * kvh * d..(pos0 + n) * kvh * d;
                k_old[pass.clone()].iter_mut().for_each(|x| *x = 7.0);
                v_old[pass].iter_mut().for_each(|x| *x = -7.0);
                let ((kb, _), (vb, _)) = (kv_buf(&g, &k_old, kv, d), kv_buf(&g, &v_old, kv, d));
                let out = buf(&g, &vec![SENTINEL; (n + 1) * h * d]);
                let part = split.then_some(&*partials);
                let norm = qk_norm.then_some((&*nb, 1e-6));
                run(&g, |r| {
                    ops::attention_decode(r, heads, n, pos0, &qkvb, &tb, norm, &kb, &vb, &out, part, w).unwrap()
                });
                // The cache: as the CPU encodes it (one int8 step of slack, as qkv_rope's test).
                let (atol, rtol) = match kv {
                    F32 => (1e-5, 1e-5),
                    F16 => (1e-5, 1e-3),
                    Q8 => (0.05, 0.0),
                };
                let got_k = read_kv(&g, &kb, ctx * kvh * d, kv, d);
                let got_v = read_kv(&g, &vb, ctx * kvh * d, kv, d);
                assert_close(&format!("{what} k"), &got_k, &want_k, atol, rtol);
                assert_close(&format!("{what} v"), &got_v, &want_v, atol, rtol);
                // The output: attention in f64 over the keys and values the cache now holds.
                let mut want = attention_cpu_masked(&q, &got_k, &got_v, (h, kvh, d), n, pos0, w);
                want.extend(vec![SENTINEL; h * d]);
                assert_close(&what, &read(&g, &out, want.len()), &want, 2e-5, 2e-4);
            }
        }
    }
}

#[test]
fn silu_mul_elementwise() {
    let g = gpu();
    let mut rng = Rng::new(6);
    let (tokens, width) = (3, 1001);
    // Rows of [gate | up].
    let gate_up: Vec<f32> = randn(&mut rng, tokens * 2 * width).iter().map(|x| x * 8.0).collect();
    let gb = buf(&g, &gate_up);
    let out = buf(&g, &vec![SENTINEL; tokens * width + 1]);
    run(&g, |r| ops::silu_mul(r, &gb, tokens, width, &out).unwrap());
    let mut want = Vec::new();
    for row in gate_up.chunks(2 * width) {
        let (gate, up) = row.split_at(width);
        want.extend(gate.iter().zip(up).map(|(x, u)| (*x as f64 / (1.0 + (-*x as f64).exp()) * *u as f64) as f32));
    }
    want.push(SENTINEL);
    assert_close("silu_mul", &read(&g, &out, tokens * width + 1), &want, 1e-6, 1e-5);
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
    for (mut g, split) in [(gpu(), false), (gpu_with(Some(64 << 10)), true)] {
        let own = (g.tuning.block_rows, g.tuning.block_wg);
        for format in [WeightFormat::Q8, WeightFormat::Q4] {
            for (rows, cols) in [(601, 320), (77, 2112)] {
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
                for (n_tokens, norm) in [(1, false), (2, true), (5, false), (19, true)]
                    .into_iter()
                    .filter(|(n, _)| n * cols * 4 <= 64 << 10)
                {
                    let x = randn(&mut rng, n_tokens * cols);
                    let bias = randn(&mut rng, rows);
                    let norm_w = randn(&mut rng, cols);
                    let (xb, bb, nb) = (buf(&g, &x), buf(&g, &bias), buf(&g, &norm_w));
                    let mut want = Vec::new();
                    for t in 0..n_tokens {
                        let xr = &x[t * cols..(t + 1) * cols];
                        let xr = if norm { rms_normed(xr, &norm_w, 1e-6) } else { xr.to_vec() };
                        for o in 0..rows {
                            let s: f64 =
                                deq[o * cols..(o + 1) * cols].iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                            want.push((s + bias[o] as f64) as f32);
                        }
                    }
                    for (kind, (block_rows, block_wg)) in kernel_runs(&g, &m, own) {
                        g.tuning.block_rows = block_rows;
                        g.tuning.block_wg = block_wg;
                        let out = buf(&g, &vec![SENTINEL; n_tokens * rows + 1]);
                        let nw = norm.then_some((&*nb, 1e-6));
                        run(&g, |r| {
                            ops::linear_with(r, kind, &xb, 0, n_tokens, nw, &m, Some(&bb), &out, false).unwrap()
                        });
                        let mut want = want.clone();
                        want.push(SENTINEL);
                        assert_close(
                            &format!("{format:?} {kind:?} ({block_rows} rows, {block_wg} threads) t={n_tokens} norm={norm} split={split}"),
                            &read(&g, &out, want.len()),
                            &want,
                            1e-4,
                            1e-4,
                        );
                    }
                }
            }
            let (rows, cols) = (601, 320);
            let w = randn(&mut rng, rows * cols);
            let (m, deq) = matrix_in(&g, &w, rows, cols, format);
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

/// The fused gate/up + SwiGLU kernel: silu(gate_i) * up_i from rows i and width + i of one
/// matrix, in every weight format and kernel, with and without the fused RMSNorm, for decode
/// and prefill batches, against f64 sums of the CPU-dequantized weights. Block geometries with
/// odd row counts round up to pairs.
#[test]
fn swiglu_every_kernel_and_format() {
    let mut rng = Rng::new(11);
    let mut g = gpu();
    let own = (g.tuning.block_rows, g.tuning.block_wg);
    let (width, cols) = (70, 320);
    for format in [WeightFormat::F16, WeightFormat::Q8, WeightFormat::Q4] {
        let w = randn(&mut rng, 2 * width * cols);
        let (m, deq) = matrix_in(&g, &w, 2 * width, cols, format);
        assert!(ops::swiglu_fits(&m));
        for (n_tokens, norm) in [(1, true), (2, false), (19, true), (40, true)] {
            let x_row0 = 1;
            let x = randn(&mut rng, (x_row0 + n_tokens) * cols);
            let norm_w = randn(&mut rng, cols);
            let (xb, nb) = (buf(&g, &x), buf(&g, &norm_w));
            // The reference, and each output's tolerance: f32 sums of gate and up are off by
            // a few ulps of their size, which their product scales.
            let (mut want, mut tol) = (Vec::new(), Vec::new());
            for t in 0..n_tokens {
                let xr = &x[(x_row0 + t) * cols..(x_row0 + t + 1) * cols];
                let xr = if norm { rms_normed(xr, &norm_w, 1e-6) } else { xr.to_vec() };
                let dot = |row: usize| -> f64 {
                    deq[row * cols..(row + 1) * cols].iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum()
                };
                for i in 0..width {
                    let (gate, up) = (dot(i), dot(width + i));
                    want.push((gate / (1.0 + (-gate).exp()) * up) as f32);
                    tol.push(1e-4 + 1e-5 * (1.0 + gate.abs()) * (1.0 + up.abs()));
                }
            }
            let mut runs = kernel_runs(&g, &m, own);
            if ops::linear_fits(&g, LinearKernel::Block, &m) {
                runs.push((LinearKernel::Block, (3, ops::WG)));
            }
            for (kind, (block_rows, block_wg)) in runs {
                g.tuning.block_rows = block_rows;
                g.tuning.block_wg = block_wg;
                let out = buf(&g, &vec![SENTINEL; n_tokens * width + 1]);
                let nw = norm.then_some((&*nb, 1e-6));
                run(&g, |r| ops::swiglu_with(r, kind, &xb, x_row0, n_tokens, nw, &m, &out).unwrap());
                let what = format!(
                    "swiglu {format:?} {kind:?} ({block_rows} rows, {block_wg} threads) t={n_tokens} norm={norm}"
                );
                let got = read(&g, &out, want.len() + 1);
                assert_eq!(got[want.len()], SENTINEL, "{what}: wrote past the output");
                for (i, ((a, b), tol)) in got.iter().zip(&want).zip(&tol).enumerate() {
                    assert!(((a - b).abs() as f64) <= *tol, "{what}: output {i}: {a} vs {b} (tolerance {tol:.2e})");
                }
            }
            (g.tuning.block_rows, g.tuning.block_wg) = own;
        }
    }
    // Gate and up rows split across buffers: refused, never wrong.
    let g = gpu_with(Some(64 << 10));
    let (m, _) = matrix_in(&g, &randn(&mut rng, 2 * width * cols), 2 * width, cols, WeightFormat::F16);
    assert!(m.chunks.len() > 1 && !ops::swiglu_fits(&m));
    let (x, out) = (buf(&g, &vec![1.0; cols]), buf(&g, &vec![0.0; width]));
    let mut rec = Recorder::new(&g);
    let err = ops::swiglu(&mut rec, &x, 0, 1, None, &m, &out).unwrap_err().to_string();
    assert!(err.contains("one buffer"), "{err}");
}

/// lavapipe has fixed-size subgroups, so CI really runs the subgroup block mat-vec (above);
/// the workgroup-reduced one runs there too (it is what browsers get).
#[test]
fn block_matvec_kernels_run_where_they_fit() {
    let g = gpu();
    if g.info.name.contains("llvmpipe") {
        assert_eq!(g.subgroup_size, Some(8), "{}", g.describe());
    }
    let m = matrix(&g, &f16_round(&randn(&mut Rng::new(9), 70 * 64)), 70, 64);
    assert!(ops::linear_fits(&g, LinearKernel::Block, &m));
    assert_eq!(ops::linear_fits(&g, LinearKernel::SubgroupBlock, &m), g.subgroup_size.is_some());
    let odd = matrix(&g, &f16_round(&randn(&mut Rng::new(9), 7 * 36)), 7, 36); // f16 width % 8 != 0
    assert!(!ops::linear_fits(&g, LinearKernel::Block, &odd));
    assert!(!ops::linear_fits(&g, LinearKernel::SubgroupBlock, &odd));
    let x = buf(&g, &vec![1.0; 64]);
    let out = buf(&g, &vec![0.0; 70]);
    let mut rec = Recorder::new(&g);
    assert!(ops::linear_with(&mut rec, LinearKernel::Block, &x, 0, 1, None, &odd, None, &out, false).is_err());
}

/// The kernel each batch size gets: never the tiled matmul for a few tokens, and on CPU
/// adapters (barriers are dear there) never at all; the mat-vecs take BLOCK_TOKENS tokens a
/// workgroup above two.
#[test]
fn linear_kernel_by_batch_size() {
    use LinearKernel::*;
    let mut g = gpu();
    let m = matrix(&g, &f16_round(&randn(&mut Rng::new(10), 70 * 64)), 70, 64);
    let odd = matrix(&g, &f16_round(&randn(&mut Rng::new(10), 7 * 36)), 7, 36);
    let mat_vec = if g.subgroup_size.is_some() { SubgroupBlock } else { MatVec };
    assert!(g.tuning.block_prefill, "CPU adapters prefill through the mat-vecs: {}", g.describe());
    for n in [1, 2, 3, 4, 16, 33, 1024] {
        assert_eq!(ops::linear_kernel(&g, n, &m), mat_vec, "{n} tokens");
        assert_eq!(ops::linear_kernel(&g, n, &odd), MatVec, "{n} tokens, odd width");
    }
    // A GPU's choice (tiled above SMALL_BATCH_TOKENS), on this adapter's subgroups.
    g.tuning.block_prefill = false;
    for n in [1, 2, 3, ops::SMALL_BATCH_TOKENS] {
        assert_eq!(ops::linear_kernel(&g, n, &m), mat_vec, "{n} tokens, GPU tuning");
    }
    assert_eq!(ops::linear_kernel(&g, ops::SMALL_BATCH_TOKENS + 1, &m), Tiled);
    assert_eq!(ops::linear_kernel(&g, 3, &odd), Tiled, "odd widths have no block kernel");
    assert_eq!(ops::linear_kernel(&g, 2, &odd), MatVec);
}

/// The sampling kernel against the CPU's definition (`sampler::draw`): the same token for the
/// same logits, parameters, seed and step, across greedy-with-penalty, temperature, top-k,
/// top-p and both, with ties, NaN and -inf among the logits; and the chosen token's bit set.
#[test]
fn sampling_kernel_matches_the_cpu_sampler() {
    use qwen_webgpu::sampler::{self, SamplingParams};
    let g = gpu();
    let mut rng = Rng::new(11);
    let p = |temperature, top_k, top_p, repetition_penalty, seed| SamplingParams {
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        seed,
        ..Default::default()
    };
    let configs = [
        p(0.0, 0, 1.0, 1.3, 1),
        p(0.7, 0, 1.0, 1.0, 2),
        p(1.0, 1, 1.0, 1.0, 3),
        p(0.8, 40, 1.0, 1.0, 4),
        p(1.2, 0, 0.9, 1.0, 5),
        p(0.6, 50, 0.8, 1.2, 0x1234_5678_9abc_def0),
        p(1.0, 0, 0.02, 1.0, 6),
        p(2.0, 999, 0.999, 0.8, 7),
        p(1e-3, 5, 1.0, 1.0, 8),
        // More than the kernel keeps in workgroup memory (1024): top-p over global keys.
        p(0.9, 2000, 0.7, 1.0, 9),
        // Nearly flat: more than 1024 tokens near the top, so top-p bisects global keys.
        p(20.0, 0, 0.5, 1.0, 10),
    ];
    let mut checked = 0;
    for (case, n) in [1000usize, 3001, 151_937].into_iter().enumerate() {
        let mut logits: Vec<f32> = (0..n).map(|_| 3.0 * rng.normal()).collect();
        logits[n / 3] = f32::NAN;
        logits[n / 2] = f32::NEG_INFINITY;
        if case == 1 {
            // Many ties: values on a grid of 1/4.
            logits.iter_mut().for_each(|x| *x = (*x * 4.0).round() / 4.0);
        }
        let history: Vec<u32> = (0..40).map(|_| rng.below(n as u32)).collect();
        let mut bits = vec![0u32; n.div_ceil(32)];
        for &t in &history {
            bits[t as usize / 32] |= 1 << (t % 32);
        }
        for params in &configs {
            for step in [0u32, 1, 2, 17, 1000] {
                let want = sampler::draw(params, &mut logits.clone(), &history, &[], step).unwrap();
                let lb = buf(&g, &logits);
                let seen = g.storage_init("seen", bytemuck::cast_slice(&bits)).unwrap();
                let out = g.storage("out", 4).unwrap();
                let sp = ops::SampleParams::new(params, n, step).unwrap();
                // Both workgroup sizes (GPUs 256, CPU adapters 64), alternating by step.
                let wg = if step % 2 == 0 { 256 } else { 64 };
                let bufs =
                    ops::SampleBuffers { logits: &lb, seen: &seen, counts: None, bias: None, keys: None, out: &out };
                run(&g, |r| ops::sample_in(r, wg, &sp, &bufs).unwrap());
                let got = pollster::block_on(g.read(&out, 0, 4)).unwrap();
                let got = u32::from_le_bytes([got[0], got[1], got[2], got[3]]);
                assert_eq!(got, want, "n {n}, {params:?}, step {step}, {wg} threads");
                let after: Vec<u32> =
                    bytemuck::cast_slice(&pollster::block_on(g.read(&seen, 0, bits.len() as u64 * 4)).unwrap())
                        .to_vec();
                let mut expect = bits.clone();
                expect[want as usize / 32] |= 1 << (want % 32);
                assert_eq!(after, expect, "seen bits after choosing {want}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * configs.len() * 5);
    // Nothing to choose: all NaN.
    let lb = buf(&g, &[f32::NAN; 37]);
    let seen = g.storage("seen", 8).unwrap();
    let out = g.storage("out", 4).unwrap();
    let sp = ops::SampleParams::new(&p(1.0, 0, 1.0, 1.0, 1), 37, 0).unwrap();
    let bufs = ops::SampleBuffers { logits: &lb, seen: &seen, counts: None, bias: None, keys: None, out: &out };
    run(&g, |r| ops::sample(r, &sp, &bufs).unwrap());
    assert_eq!(pollster::block_on(g.read(&out, 0, 4)).unwrap(), u32::MAX.to_le_bytes());
}

fn read_u32(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    bytemuck::cast_slice::<u8, u32>(&pollster::block_on(g.read(b, 0, n as u64 * 4)).unwrap()).to_vec()
}

/// Frequency and presence penalties and logit_bias in the sampling kernel against the CPU's
/// definition, over several steps of one generation (the kernel bumps each chosen token's
/// count and `seen` bit, as a queued-ahead pass needs): the same token at every step, greedy
/// and sampled, with and without top-k/top-p, both workgroup sizes, keys in place or apart
/// (apart: the logits are left as they were); the counts after equal the CPU's. Then +100
/// forces a token and -100 forbids one.
#[test]
fn sampling_kernel_with_penalties_and_bias_matches_the_cpu_sampler() {
    use qwen_webgpu::sampler::{self, SamplingParams};
    let g = gpu();
    let mut rng = Rng::new(21);
    let p =
        |temperature, top_k, top_p, frequency_penalty, presence_penalty, bias: &[(u32, f32)], seed| SamplingParams {
            temperature,
            top_k,
            top_p,
            frequency_penalty,
            presence_penalty,
            logit_bias: bias.to_vec(),
            seed,
            ..Default::default()
        };
    let configs = [
        p(0.0, 0, 1.0, 0.7, 0.3, &[], 1),
        p(0.0, 0, 1.0, 0.0, 0.0, &[(5, 2.5), (17, -3.0), (999, 1.25)], 2),
        p(0.8, 0, 1.0, 1.3, -0.4, &[(3, 0.5)], 3),
        p(1.0, 40, 1.0, 2.0, 0.0, &[(7, 4.0), (8, -1.5)], 4),
        p(1.2, 0, 0.9, 0.0, 1.7, &[], 5),
        p(0.6, 50, 0.8, -0.9, 0.6, &[(11, 3.0)], 6),
        SamplingParams { repetition_penalty: 1.3, ..p(0.9, 0, 0.95, 0.5, 0.5, &[(2, 1.0)], 7) },
    ];
    let mut checked = 0;
    for n in [1000usize, 5003] {
        for (c, params) in configs.iter().enumerate() {
            let mut logits: Vec<f32> = (0..n).map(|_| 2.0 * rng.normal()).collect();
            logits[n / 3] = f32::NAN;
            logits[n / 2] = f32::NEG_INFINITY;
            // A few strong tokens, so the penalties have repeats to act on.
            for t in 0..6 {
                logits[t * 7 % n] += 6.0;
            }
            let history: Vec<u32> = (0..30).map(|_| rng.below(n as u32)).collect();
            let mut bits = vec![0u32; n.div_ceil(32)];
            for &t in &history {
                bits[t as usize / 32] |= 1 << (t % 32);
            }
            let lb = buf(&g, &logits);
            let seen = g.storage_init("seen", bytemuck::cast_slice(&bits)).unwrap();
            let counts = g.storage_init("counts", bytemuck::cast_slice(&vec![0u32; n])).unwrap();
            let mut table = vec![0f32; n];
            params.logit_bias.iter().for_each(|&(id, b)| table[id as usize] = b);
            let bias = buf(&g, &table);
            let keys = g.storage("keys", n as u64 * 4).unwrap();
            let out = g.storage("out", 4).unwrap();
            let apart = c % 2 == 0;
            let (mut hist, mut generated) = (history.clone(), Vec::new());
            for step in 0..12u32 {
                let want = sampler::draw(params, &mut logits.clone(), &hist, &generated, step).unwrap();
                if !apart {
                    // In place, the kernel overwrote the logits with keys: write them again.
                    g.write(&lb, 0, bytemuck::cast_slice(&logits));
                }
                let sp = ops::SampleParams::new(params, n, step).unwrap();
                let bufs = ops::SampleBuffers {
                    logits: &lb,
                    seen: &seen,
                    counts: Some(&counts),
                    bias: (!params.logit_bias.is_empty()).then_some(&*bias),
                    keys: apart.then_some(&*keys),
                    out: &out,
                };
                let wg = if step % 2 == 0 { 256 } else { 64 };
                run(&g, |r| ops::sample_in(r, wg, &sp, &bufs).unwrap());
                let got = read_u32(&g, &out, 1)[0];
                assert_eq!(got, want, "n {n}, {params:?}, step {step}, {wg} threads, keys apart {apart}");
                hist.push(want);
                generated.push(want);
                checked += 1;
            }
            let mut expect = vec![0u32; n];
            generated.iter().for_each(|&t| expect[t as usize] += 1);
            assert_eq!(read_u32(&g, &counts, n), expect, "counts after {params:?}");
            if apart {
                let after: Vec<u32> = read_u32(&g, &lb, n);
                let before: Vec<u32> = logits.iter().map(|x| x.to_bits()).collect();
                assert_eq!(after, before, "keys apart leave the logits as they were");
            }
        }
    }
    assert_eq!(checked, 2 * configs.len() * 12);
    // Penalties without the counts buffer are refused, not ignored.
    let (lb, seen, out) = (buf(&g, &[1.0; 10]), g.storage("seen", 4).unwrap(), g.storage("out", 4).unwrap());
    let sp = ops::SampleParams::new(&p(1.0, 0, 1.0, 0.5, 0.0, &[], 1), 10, 0).unwrap();
    let bufs = ops::SampleBuffers { logits: &lb, seen: &seen, counts: None, bias: None, keys: None, out: &out };
    let mut rec = Recorder::new(&g);
    assert!(ops::sample(&mut rec, &sp, &bufs).unwrap_err().to_string().contains("counts"));

    // logit_bias +100 forces a token and -100 forbids the best one, greedy and sampled.
    let n = 1003;
    let logits: Vec<f32> = (0..n).map(|_| 3.0 * rng.normal()).collect();
    let best = sampler::argmax(&logits).unwrap();
    for temperature in [0.0, 1.0] {
        for (entry, forced) in [((617u32, 100.0f32), true), ((best, -100.0), false)] {
            let params = p(temperature, 0, 1.0, 0.0, 0.0, &[entry], 3);
            let mut table = vec![0f32; n];
            table[entry.0 as usize] = entry.1;
            let (lb, bias) = (buf(&g, &logits), buf(&g, &table));
            let seen = g.storage("seen", n.div_ceil(32) as u64 * 4).unwrap();
            let out = g.storage("out", 4).unwrap();
            for step in 0..20 {
                let sp = ops::SampleParams::new(&params, n, step).unwrap();
                let bufs = ops::SampleBuffers {
                    logits: &lb,
                    seen: &seen,
                    counts: None,
                    bias: Some(&bias),
                    keys: None,
                    out: &out,
                };
                run(&g, |r| ops::sample(r, &sp, &bufs).unwrap());
                let got = read_u32(&g, &out, 1)[0];
                assert_eq!(got == entry.0, forced, "temperature {temperature}, bias {entry:?}, step {step}: {got}");
                assert_eq!(got, sampler::draw(&params, &mut logits.clone(), &[], &[], step).unwrap());
            }
        }
    }
}

/// The logprobs kernel against the CPU's f64 log-softmax (`sampler::logprobs`) of the same
/// logits: the chosen token's logprob and the top-k ids and values within 1e-4, for k = 0, 1,
/// 7 and 20, with a token limit below the buffer's length, with NaN and -inf logits (never
/// listed, no NaN logprob for a finite token), ties on a grid (listed by id), no token
/// chosen, and a logit of +inf.
#[test]
fn logprobs_kernel_matches_the_cpu_log_softmax() {
    use qwen_webgpu::sampler::{self, MAX_TOP_LOGPROBS};
    let g = gpu();
    let mut rng = Rng::new(22);
    let mut checked = 0;
    for (case, (len, limit)) in
        [(1000usize, 1000usize), (5003, 4999), (151_937, 151_669), (37, 30)].into_iter().enumerate()
    {
        let mut logits: Vec<f32> = (0..len).map(|_| 4.0 * rng.normal()).collect();
        if case == 1 {
            logits.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0); // many ties
        }
        for i in [3, len / 3, limit - 1] {
            logits[i] = f32::NAN;
        }
        for i in [5, len / 2 + 1] {
            logits[i] = f32::NEG_INFINITY;
        }
        // A huge logit past the limit must not count.
        logits[len - 1] = if limit < len { 1e30 } else { logits[len - 1] };
        let lb = buf(&g, &logits);
        let out = g.storage("lp", ops::logprobs_words(MAX_TOP_LOGPROBS) as u64 * 4).unwrap();
        for (j, k) in [0usize, 1, 7, MAX_TOP_LOGPROBS].into_iter().enumerate() {
            let token = [0u32, limit as u32 / 2, 17, limit as u32 - 2][j];
            let next = g.storage_init("next", bytemuck::cast_slice(&[token, 0, 0, 0])).unwrap();
            run(&g, |r| ops::logprobs(r, &lb, limit, k, &next, &out).unwrap());
            let w = read_u32(&g, &out, ops::logprobs_words(k));
            let want = sampler::logprobs(&logits[..limit], token, k).unwrap();
            assert_eq!(w[0], token);
            let (m, s) = (f32::from_bits(w[1]), f32::from_bits(w[2]) as f64);
            let lp = sampler::logprob_of(f32::from_bits(w[3]), m, s);
            let what = format!("len {len}, limit {limit}, k {k}, token {token}");
            assert!((lp - want.logprob).abs() < 1e-4, "{what}: {lp} vs {}", want.logprob);
            let top: Vec<(u32, f32)> = (0..k)
                .map(|j| (w[4 + 2 * j], f32::from_bits(w[5 + 2 * j])))
                .filter(|e| e.0 != u32::MAX)
                .map(|(i, l)| (i, sampler::logprob_of(l, m, s)))
                .collect();
            assert_eq!(
                top.iter().map(|e| e.0).collect::<Vec<_>>(),
                want.top.iter().map(|e| e.0).collect::<Vec<_>>(),
                "{what}"
            );
            for (a, b) in top.iter().zip(&want.top) {
                assert!(a.1.is_finite() && (a.1 - b.1).abs() < 1e-4, "{what}: {a:?} vs {b:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16);
    // No token chosen; a short list (fewer finite logits than k); +inf takes all the mass.
    let logits = [f32::NAN, 2.0, f32::NEG_INFINITY, f32::INFINITY, 1.0];
    let lb = buf(&g, &logits);
    let out = g.storage("lp", ops::logprobs_words(MAX_TOP_LOGPROBS) as u64 * 4).unwrap();
    let next = g.storage_init("next", bytemuck::cast_slice(&[u32::MAX, 0, 0, 0])).unwrap();
    run(&g, |r| ops::logprobs(r, &lb, 5, 20, &next, &out).unwrap());
    let w = read_u32(&g, &out, ops::logprobs_words(20));
    assert_eq!(w[0], u32::MAX);
    assert!(f32::from_bits(w[3]).is_nan());
    let ids: Vec<u32> = (0..20).map(|j| w[4 + 2 * j]).filter(|&i| i != u32::MAX).collect();
    assert_eq!(ids, [3, 1, 4]);
    let (m, s) = (f32::from_bits(w[1]), f32::from_bits(w[2]) as f64);
    assert_eq!(sampler::logprob_of(f32::from_bits(w[5]), m, s), 0.0);
    assert_eq!(sampler::logprob_of(f32::from_bits(w[7]), m, s), f32::NEG_INFINITY);
    let mut rec = Recorder::new(&g);
    assert!(ops::logprobs(&mut rec, &lb, 5, MAX_TOP_LOGPROBS + 1, &next, &out).is_err());
}

/// A `[rows, cols]` matrix of random `t` blocks as the GPU holds it (uploaded byte for byte),
/// with its values decoded by the CPU decoder (`weights::ggml`, ggml's formulas).
fn ggml_matrix(g: &Gpu, rng: &mut Rng, t: GgmlType, rows: usize, cols: usize) -> (GpuMatrix, Vec<f32>) {
    let bytes = random_ggml_blocks(rng, t, rows, cols);
    let format = WeightFormat::from_ggml(t).unwrap();
    let m = GpuMatrix::new(g, "w", rows, cols, format).unwrap();
    assert_eq!(m.format, format);
    m.write_words(g, 0, &bytes, "w").unwrap();
    assert_eq!(m.gpu_bytes(), bytes.len() as u64, "GPU bytes equal the file's");
    (m, ggml::dequantize(t, &bytes, "w").unwrap())
}

/// GGUF block formats decoded by every weight kernel (mat-vecs, tiled matmul, embedding), in
/// rows that are not whole words (Q6_K's 210-byte and Q5_0's 22-byte blocks), split across
/// buffers or not, with and without the fused norm, against f64 sums of the CPU decoder's
/// values; and one matrix of mixed parts (a GGUF's q/k/v in different types).
#[test]
fn gguf_block_formats_in_every_weight_kernel() {
    let mut rng = Rng::new(15);
    for (mut g, split) in [(gpu(), false), (gpu_with(Some(64 << 10)), true)] {
        let own = (g.tuning.block_rows, g.tuning.block_wg);
        for t in [GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            // Split buffers: the formats whose rows are not whole words.
            if split && !matches!(t, GgmlType::Q5_0 | GgmlType::Q6K) {
                continue;
            }
            let cols = if t.block().0 == 256 { 768 } else { 96 };
            let rows = 77 + if split { 1000 } else { 0 };
            let (m, deq) = ggml_matrix(&g, &mut rng, t, rows, cols);
            assert!(!split || m.chunks.len() > 1, "{t:?} split");
            for (n_tokens, norm) in [(1, false), (5, true)] {
                let x = randn(&mut rng, n_tokens * cols);
                let bias = randn(&mut rng, rows);
                let norm_w = randn(&mut rng, cols);
                let (xb, bb, nb) = (buf(&g, &x), buf(&g, &bias), buf(&g, &norm_w));
                let mut want = Vec::new();
                for tok in 0..n_tokens {
                    let xr = &x[tok * cols..(tok + 1) * cols];
                    let xr = if norm { rms_normed(xr, &norm_w, 1e-6) } else { xr.to_vec() };
                    for o in 0..rows {
                        let s: f64 =
                            deq[o * cols..(o + 1) * cols].iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                        want.push((s + bias[o] as f64) as f32);
                    }
                }
                want.push(SENTINEL);
                for (kind, (block_rows, block_wg)) in kernel_runs(&g, &m, own) {
                    g.tuning.block_rows = block_rows;
                    g.tuning.block_wg = block_wg;
                    let out = buf(&g, &vec![SENTINEL; n_tokens * rows + 1]);
                    let nw = norm.then_some((&*nb, 1e-6));
                    run(&g, |r| ops::linear_with(r, kind, &xb, 0, n_tokens, nw, &m, Some(&bb), &out, false).unwrap());
                    assert_close(
                        &format!("{t:?} {kind:?} ({block_rows} rows, {block_wg} threads) t={n_tokens} norm={norm} split={split}"),
                        &read(&g, &out, want.len()),
                        &want,
                        1e-4,
                        1e-4,
                    );
                }
                (g.tuning.block_rows, g.tuning.block_wg) = own;
            }
            let tokens: Vec<u32> = vec![0, rows as u32 - 1, 50, 7, 76];
            let tb = g.storage_init("tokens", bytemuck::cast_slice(&tokens)).unwrap();
            let out = buf(&g, &vec![SENTINEL; tokens.len() * cols]);
            run(&g, |r| ops::embed(r, &tb, tokens.len(), &m, &out).unwrap());
            let want: Vec<f32> =
                tokens.iter().flat_map(|&k| deq[k as usize * cols..(k as usize + 1) * cols].to_vec()).collect();
            assert_close(&format!("{t:?} embed"), &read(&g, &out, want.len()), &want, 0.0, 0.0);
        }
        // Mixed parts: q as Q4_K, k as Q6_K (rows of odd blocks), v as q8 (from Q8_0), as
        // Q4_K_M files can hold a layer's q, k and v.
        let cols = 256;
        let parts =
            [(40, WeightFormat::Ggml(GgmlType::Q4K)), (24, WeightFormat::Ggml(GgmlType::Q6K)), (24, WeightFormat::Q8)];
        let m = GpuMatrix::with_parts(&g, "qkv", cols, &parts).unwrap();
        assert!(!m.is_uniform());
        let qb = random_ggml_blocks(&mut rng, GgmlType::Q4K, 40, cols);
        let kb = random_ggml_blocks(&mut rng, GgmlType::Q6K, 24, cols);
        let v = randn(&mut rng, 24 * cols);
        m.write_words(&g, 0, &qb, "q").unwrap();
        m.write_words(&g, 40, &kb, "k").unwrap();
        m.write_rows(&g, 64, &v, "v").unwrap();
        assert!(m.write_words(&g, 30, &qb[..144 * 20], "straddling").is_err(), "rows across parts are refused");
        let (vw, vs) = quant::encode_rows(WeightFormat::Q8, &v, cols, "v").unwrap();
        let mut deq = ggml::dequantize(GgmlType::Q4K, &qb, "q").unwrap();
        deq.extend(ggml::dequantize(GgmlType::Q6K, &kb, "k").unwrap());
        deq.extend(quant::decode_rows(WeightFormat::Q8, &vw, &vs, 24, cols));
        let x = randn(&mut rng, 3 * cols);
        let norm_w = randn(&mut rng, cols);
        let (xb, nb) = (buf(&g, &x), buf(&g, &norm_w));
        let mut want = Vec::new();
        for tok in 0..3 {
            let xr = rms_normed(&x[tok * cols..(tok + 1) * cols], &norm_w, 1e-6);
            for o in 0..88 {
                let s: f64 = deq[o * cols..(o + 1) * cols].iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                want.push(s as f32);
            }
        }
        for n_tokens in [1, 3] {
            for (kind, _) in kernel_runs(&g, &m, own) {
                let out = buf(&g, &vec![SENTINEL; n_tokens * 88]);
                run(&g, |r| {
                    ops::linear_with(r, kind, &xb, 0, n_tokens, Some((&*nb, 1e-6)), &m, None, &out, false).unwrap()
                });
                let what = format!("mixed parts {kind:?} t={n_tokens} split={split}");
                assert_close(&what, &read(&g, &out, n_tokens * 88), &want[..n_tokens * 88], 1e-4, 1e-4);
            }
        }
        // SwiGLU over a Q5_K gate/up matrix in one chunk.
        if !split {
            let width = 37;
            let (m, deq) = ggml_matrix(&g, &mut rng, GgmlType::Q5K, 2 * width, cols);
            assert!(ops::swiglu_fits(&m));
            let dot = |row: usize, xr: &[f32]| -> f64 {
                deq[row * cols..(row + 1) * cols].iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            for n_tokens in [1, 3] {
                let mut want = Vec::new();
                for tok in 0..n_tokens {
                    let xr = rms_normed(&x[tok * cols..(tok + 1) * cols], &norm_w, 1e-6);
                    for i in 0..width {
                        let (gate, up) = (dot(i, &xr), dot(width + i, &xr));
                        want.push((gate / (1.0 + (-gate).exp()) * up) as f32);
                    }
                }
                for (kind, _) in kernel_runs(&g, &m, own) {
                    let out = buf(&g, &vec![SENTINEL; n_tokens * width]);
                    run(&g, |r| ops::swiglu_with(r, kind, &xb, 0, n_tokens, Some((&*nb, 1e-6)), &m, &out).unwrap());
                    assert_close(
                        &format!("swiglu Q5_K {kind:?} t={n_tokens}"),
                        &read(&g, &out, want.len()),
                        &want,
                        1e-4,
                        1e-4,
                    );
                }
            }
        }
    }
}
