//! The GPU weight encoder (`shaders/quantize.wgsl`) against the CPU reference encoder
//! (`weights::quant::encode_rows`): every word and scale must be equal, bit for bit, for every
//! stored dtype and GPU format, on random rows and on hand-made groups (zeros, one huge value,
//! ties, subnormals, ±65504). Its software IEEE arithmetic (`common/softfloat.wgsl`) is first
//! checked, operation by operation, against the CPU's own.

mod common;

use common::{fixture, gpu, gpu_with, FileDtype, Rng, Spec};
use half::{bf16, f16};
use qwen_webgpu::gpu::{Gpu, GpuMatrix, Recorder, ShaderKey};
use qwen_webgpu::model::weights::{self, Encoder};
use qwen_webgpu::ops::{self, QuantizeRows};
use qwen_webgpu::weights::quant::{encode_rows, WeightFormat};
use qwen_webgpu::weights::{Dtype, FileSource};
use qwen_webgpu::QwenConfig;

qwen_webgpu::kernel_params! {
    pub struct CheckParams {
        pub n: u32,
        pub op: u32,
        pub _pad: [u32; 2],
    }
}

/// Run softfloat operation `op` (see `shaders/softfloat_check.wgsl`) on the GPU.
fn softfloat(g: &Gpu, op: u32, a: &[u32], b: &[u32]) -> Vec<u32> {
    use qwen_webgpu::gpu::Binding::{Read, ReadWrite};
    let k = g.kernel(&ShaderKey::new("softfloat_check"), &[Read, Read, ReadWrite]).unwrap();
    let ba = g.storage_init("a", bytemuck::cast_slice(a)).unwrap();
    let bb = g.storage_init("b", bytemuck::cast_slice(b)).unwrap();
    let out = g.storage("out", a.len() as u64 * 4).unwrap();
    let mut rec = Recorder::new(g);
    let p = CheckParams { n: a.len() as u32, op, _pad: [0; 2] };
    rec.dispatch(&k, &p, &[&ba, &bb, &out], a.len().div_ceil(64) as u32).unwrap();
    rec.submit().unwrap();
    let bytes = pollster::block_on(g.read(&out, 0, a.len() as u64 * 4)).unwrap();
    bytemuck::cast_slice(&bytes).to_vec()
}

/// Bit patterns that reach every case: uniform bits (NaN, inf, subnormals), small and
/// large exponents, near-integers and halves, and values close to each other (cancellation).
fn interesting(rng: &mut Rng, n: usize) -> (Vec<u32>, Vec<u32>) {
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    let specials = [
        0u32,
        0x8000_0000,
        1,
        0x8000_0001,
        0x007f_ffff,
        0x0080_0000,
        0x7f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x3f80_0000,
        0x4b40_0000,
        0x477f_e000,
        0xc77f_e000,
    ];
    for i in 0..n {
        let pick = |rng: &mut Rng, other: u32| -> u32 {
            let r = rng.next_u64() as u32;
            match (rng.next_u64() as u32) % 9 {
                0 => r,
                1 => r & 0x807f_ffff | (((rng.next_u64() as u32) % 8) << 23), // subnormal / tiny exponents
                2 => r & 0x80ff_ffff | ((120 + (rng.next_u64() as u32) % 16) << 24 >> 1), // around 1
                3 => ((((rng.next_u64() as u32) % 64) as f32 - 32.0) * 0.5).to_bits(), // halves
                4 => other ^ ((rng.next_u64() as u32) & 0xf),                 // near the other operand
                5 => specials[((rng.next_u64() as u32) as usize) % specials.len()],
                6 => f16::from_bits((rng.next_u64() as u32) as u16).to_f32().to_bits(),
                7 => bf16::from_bits((rng.next_u64() as u32) as u16).to_f32().to_bits(),
                _ => (r & 0x80ff_ffff) | (((rng.next_u64() as u32) % 40 + 100) << 23), // 2^-27..2^12
            }
        };
        let x = pick(rng, i as u32);
        let y = pick(rng, x);
        a.push(x);
        b.push(y);
    }
    (a, b)
}

fn round_fast(v: f32) -> f32 {
    (v + 12582912.0) - 12582912.0
}

#[test]
fn softfloat_matches_the_cpu_bit_for_bit() {
    let g = gpu();
    let mut rng = Rng::new(7);
    let n = 1 << 16;
    let (a, b) = interesting(&mut rng, n);
    let f = |x: u32| f32::from_bits(x);
    type Want = fn(u32, u32) -> u32;
    let ops: [(u32, &str, Want); 9] = [
        (0, "add", |x, y| (f32::from_bits(x) + f32::from_bits(y)).to_bits()),
        (1, "sub", |x, y| (f32::from_bits(x) - f32::from_bits(y)).to_bits()),
        (2, "mul", |x, y| (f32::from_bits(x) * f32::from_bits(y)).to_bits()),
        (3, "div", |x, y| (f32::from_bits(x) / f32::from_bits(y)).to_bits()),
        (4, "to f16", |x, _| f16::from_f32(f32::from_bits(x)).to_bits() as u32),
        (5, "from f16", |x, _| f16::from_bits(x as u16).to_f32().to_bits()),
        (6, "round", |x, _| f32::from_bits(x).round().to_bits()),
        (7, "round_fast", |x, _| round_fast(f32::from_bits(x)).to_bits()),
        (8, "as i32", |x, _| f32::from_bits(x).round() as i32 as u32),
    ];
    for (op, name, want) in ops {
        let got = softfloat(&g, op, &a, &b);
        let mut bad = 0;
        for i in 0..n {
            let (x, y) = (a[i], b[i]);
            if op == 8 && (f(x).is_nan() || f(x).abs() >= 8388608.0) {
                continue; // only used on small integral values
            }
            let w = want(x, y);
            let nan =
                |v: u32| if op == 4 { v & 0x7c00 == 0x7c00 && v & 0x3ff != 0 } else { f32::from_bits(v).is_nan() };
            let same = if nan(w) { nan(got[i]) } else { got[i] == w };
            if !same {
                if bad < 8 {
                    eprintln!(
                        "{name}: {x:#010x} ({:e}), {y:#010x} ({:e}): got {:#010x}, want {w:#010x}",
                        f(x),
                        f(y),
                        got[i]
                    );
                }
                bad += 1;
            }
        }
        assert_eq!(bad, 0, "{name}: {bad} of {n} results differ from the CPU");
    }
}

/// Stored bytes of `vals` in `dtype` and the f32 values the CPU encoder sees.
fn stored(vals: &[f32], dtype: &Dtype) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        Dtype::F32 => (bytemuck::cast_slice(vals).to_vec(), vals.to_vec()),
        Dtype::F16 => {
            let h: Vec<f16> = vals.iter().map(|&x| f16::from_f32(x)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|x| x.to_f32()).collect())
        }
        _ => {
            let h: Vec<bf16> = vals.iter().map(|&x| bf16::from_f32(x)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|x| x.to_f32()).collect())
        }
    }
}

/// Encode `vals` (`[rows, cols]`) on the GPU into a fresh matrix; returns (words, scales) in
/// the CPU encoder's layout, and the error slot's value.
fn gpu_encode(g: &Gpu, format: WeightFormat, dtype: &Dtype, vals: &[f32], cols: usize) -> (Vec<u32>, Vec<u16>, u32) {
    let rows = vals.len() / cols;
    let m = GpuMatrix::new(g, "m", rows, cols, format).unwrap();
    assert_eq!(m.format, format, "the test asks for widths the format keeps");
    let (bytes, _) = stored(vals, dtype);
    let src = g.storage_init("src", &bytes).unwrap();
    let err = g.storage_init("err", bytemuck::cast_slice(&[u32::MAX; 4])).unwrap();
    let mut rec = Recorder::new(g);
    for c in &m.chunks {
        let job = QuantizeRows {
            src: &src,
            dtype,
            src_row0: c.row0,
            rows: c.rows,
            cols,
            dst: &c.buffer,
            format,
            dst_word0: 0,
            scales_word0: c.scales_offset(),
            stride: m.stride,
            err: &err,
            err_slot: 2,
            err_row0: c.row0,
        };
        ops::quantize(&mut rec, &job).unwrap();
    }
    rec.submit().unwrap();
    let spr = format.scales_per_row(cols);
    let (mut words, mut scales) = (Vec::new(), Vec::new());
    for c in &m.chunks {
        let n = c.rows * (m.stride * 4 + spr * 2);
        let b = pollster::block_on(g.read(&c.buffer, 0, n.div_ceil(4) as u64 * 4)).unwrap();
        let w: &[u32] = bytemuck::cast_slice(&b[..c.rows * m.stride * 4]);
        words.extend_from_slice(w);
        let s = &b[c.rows * m.stride * 4..n];
        scales.extend(s.chunks_exact(2).map(|h| u16::from_le_bytes([h[0], h[1]])));
    }
    let e = pollster::block_on(g.read(&err, 8, 4)).unwrap();
    (words, scales, u32::from_le_bytes([e[0], e[1], e[2], e[3]]))
}

/// Groups a scale search can trip on, each 32 values.
fn hand_made(rng: &mut Rng) -> Vec<Vec<f32>> {
    let tiny = f32::from_bits(0x0000_0400); // an f32 subnormal (bf16 keeps it)
    let mut out = vec![
        vec![0.0; 32],
        {
            let mut v = vec![0.0; 32];
            v[5] = -0.0;
            v[9] = 3.0e-41;
            v
        },
        {
            let mut v = vec![0.01; 32];
            v[17] = 60000.0;
            v
        },
        {
            let mut v = vec![1e-3; 32];
            v[0] = -65504.0;
            v[31] = 65504.0;
            v
        },
        // Ties: halves of the step m / 8 (here m = 8, step 1).
        (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect(),
        (0..32).map(|i| if i % 2 == 0 { 0.5 } else { -1.5 }).collect(),
        (0..32).map(|i| tiny * (i as f32 - 16.0)).collect(),
        (0..32).map(|i| f32::from_bits(0x0080_0000) * (i as f32 + 1.0)).collect(),
        (0..32).map(|i| 6.0e-8 * (i as f32 - 7.0)).collect(), // f16 subnormal scales
        (0..32).map(|i| if i == 3 { 1.0 } else { 0.0 }).collect(),
        (0..32).map(|i| if i == 3 { -1.0 } else { 1e-30 }).collect(),
    ];
    // Random groups with one outlier, and groups of equal magnitudes.
    for _ in 0..6 {
        let mut v: Vec<f32> = (0..32).map(|_| rng.normal() * 0.02).collect();
        let at = ((rng.next_u64() as u32) % 32) as usize;
        v[at] *= 50.0;
        out.push(v);
        let s = rng.normal();
        out.push((0..32).map(|i| if i % 3 == 0 { s } else { -s }).collect());
    }
    out
}

#[test]
fn gpu_encoder_equals_the_cpu_encoder() {
    let g = gpu();
    let mut rng = Rng::new(11);
    // 128 columns = 4 groups a row: hand-made groups fill rows; then random rows.
    let cols = 128;
    let mut vals: Vec<f32> = hand_made(&mut rng).concat();
    while !vals.len().is_multiple_of(cols) {
        vals.push(rng.normal());
    }
    for _ in 0..37 * cols {
        vals.push(rng.normal() * 0.05);
    }
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        // bf16 rounds ±65504 to ±65536, past f16: use its largest value below instead.
        let vals: Vec<f32> = match dtype {
            Dtype::BF16 => vals.iter().map(|&x| if x.abs() == 65504.0 { x.signum() * 65280.0 } else { x }).collect(),
            _ => vals.clone(),
        };
        let (_, seen) = stored(&vals, &dtype);
        for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
            let (want_w, want_s) = encode_rows(format, &seen, cols, "t").unwrap();
            let (got_w, got_s, err) = gpu_encode(&g, format, &dtype, &vals, cols);
            assert_eq!(err, u32::MAX, "{dtype:?} -> {format:?}: an error was reported");
            let diff_w = got_w.iter().zip(&want_w).position(|(a, b)| a != b);
            let diff_s = got_s.iter().zip(&want_s).position(|(a, b)| a != b);
            assert_eq!(got_w.len(), want_w.len());
            assert_eq!(got_s.len(), want_s.len());
            assert!(
                diff_w.is_none(),
                "{dtype:?} -> {format:?}: word {diff_w:?} differs ({:#x?} vs {:#x?})",
                diff_w.map(|i| got_w[i]),
                diff_w.map(|i| want_w[i])
            );
            assert!(
                diff_s.is_none(),
                "{dtype:?} -> {format:?}: scale {diff_s:?} differs ({:?} vs {:?})",
                diff_s.map(|i| got_s[i]),
                diff_s.map(|i| want_s[i])
            );
        }
    }
}

/// Every matrix buffer of a checkpoint loaded through the uploader, as bytes.
fn uploaded(
    dir: &std::path::Path,
    format: WeightFormat,
    encoder: Encoder,
    max_binding: Option<u64>,
) -> Vec<(String, Vec<u8>)> {
    let g = gpu_with(max_binding);
    let cfg = QwenConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut src = FileSource::open_dir(dir).unwrap();
    let (g, w) = weights::load(g, &cfg, &mut src, format, encoder, &mut |_, _| {}).unwrap();
    let mut mats: Vec<(String, &GpuMatrix)> = vec![("embed".into(), &w.embed)];
    if let Some(h) = &w.lm_head {
        mats.push(("lm_head".into(), h));
    }
    for (i, l) in w.layers.iter().enumerate() {
        for (n, m) in [("qkv", &l.qkv), ("o_proj", &l.o_proj), ("gate_up", &l.gate_up), ("down", &l.down)] {
            mats.push((format!("layer{i}.{n}"), m));
        }
    }
    let mut out = Vec::new();
    for (name, m) in mats {
        for (k, c) in m.chunks.iter().enumerate() {
            out.push((
                format!("{name}[{k}] {:?}", m.format),
                pollster::block_on(g.read(&c.buffer, 0, c.buffer.size())).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn uploads_encoded_on_the_gpu_equal_the_cpu_encoders() {
    // Every matrix quantizable (widths multiples of 64) but the odd-width down projection,
    // each dtype a checkpoint can hold, and 64 KiB bindings: matrices split into chunks and
    // tensors larger than the staging buffer go up in blocks.
    for (dtype, seed) in [(FileDtype::BF16, 1), (FileDtype::F16, 2), (FileDtype::F32, 3)] {
        let spec =
            Spec { hidden: 128, heads: 4, kv_heads: 4, head_dim: 32, ff: 200, vocab: 2001, dtype, ..Spec::qwen_v1() };
        let (dir, _) = fixture(&format!("encoder-{seed}"), &spec, seed);
        for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
            let gpu_side = uploaded(&dir, format, Encoder::Gpu, Some(1 << 16));
            let cpu_side = uploaded(&dir, format, Encoder::Cpu, Some(1 << 16));
            assert!(gpu_side.len() > 12, "the embedding should be split: {} buffers", gpu_side.len());
            assert_eq!(gpu_side.len(), cpu_side.len());
            for ((name, a), (_, b)) in gpu_side.iter().zip(&cpu_side) {
                let at = a.iter().zip(b).position(|(x, y)| x != y);
                assert!(at.is_none(), "{dtype:?} as {format:?}: {name} differs at byte {at:?}");
            }
        }
    }
}

#[test]
fn a_bad_value_fails_the_load_naming_tensor_and_row() {
    let spec = Spec {
        hidden: 128,
        heads: 4,
        kv_heads: 4,
        head_dim: 32,
        ff: 200,
        vocab: 301,
        dtype: FileDtype::F32,
        ..Spec::qwen_v1()
    };
    let mut t = common::random_tensors(&spec, 4);
    let name = "transformer.h.1.mlp.c_proj.weight";
    let (shape, vals) = t.get_mut(name).unwrap();
    let cols = shape[1];
    vals[17 * cols + 5] = f32::INFINITY;
    let dir = common::temp_dir("encoder-bad");
    common::write_checkpoint(&dir, &spec, &t);
    let cfg = QwenConfig::from_json(&spec.config_json()).unwrap();
    for format in [WeightFormat::Q4, WeightFormat::F16] {
        let mut src = FileSource::open_dir(&dir).unwrap();
        let e = weights::load(gpu(), &cfg, &mut src, format, Encoder::Gpu, &mut |_, _| {})
            .err()
            .expect("the load should fail");
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains("row 17") && msg.contains("non-finite"), "{format:?}: {msg}");
    }
}

#[test]
fn gpu_encoder_reports_the_first_bad_row() {
    let g = gpu();
    let cols = 64;
    for (format, bad, kind) in [
        (WeightFormat::Q4, f32::NAN, 1),
        (WeightFormat::Q4, f32::INFINITY, 1),
        (WeightFormat::Q8, f32::NAN, 1),
        (WeightFormat::Q8, f32::NEG_INFINITY, 1),
        (WeightFormat::F16, 1.0e6, 2),
        (WeightFormat::Q8, 1.0e8, 2),
        (WeightFormat::Q4, 1.0e8, 2),
    ] {
        let mut vals = vec![0.5f32; 9 * cols];
        vals[7 * cols + 3] = bad;
        vals[8 * cols + 60] = bad;
        let (_, _, err) = gpu_encode(&g, format, &Dtype::F32, &vals, cols);
        assert_eq!(err, 7 * 4 + kind, "{format:?} with {bad}");
        // The CPU encoder refuses the same rows.
        assert!(encode_rows(format, &vals, cols, "t").is_err(), "{format:?} with {bad}: the CPU accepted it");
    }
}

#[test]
fn a_gpu_error_while_loading_names_what_was_being_done() {
    // An allocation the device refuses inside Gpu::scoped is reported by settle() with what
    // the scope said it was doing (the uploader names each buffer and tensor this way).
    let g = gpu();
    let too_big = g.limits.max_buffer_size.saturating_add(1024);
    g.scoped(
        || "allocating layer7.gate_up".into(),
        || {
            g.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("too big"),
                size: too_big,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        },
    );
    let e = pollster::block_on(g.settle()).expect_err("the allocation should fail");
    assert!(e.to_string().contains("allocating layer7.gate_up"), "{e}");
    // Settled scopes are gone: the device goes on.
    pollster::block_on(g.settle()).unwrap();
    let b = g.storage("fine", 1024).unwrap();
    assert_eq!(b.size(), 1024);
}
