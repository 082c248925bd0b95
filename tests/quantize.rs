//! Pre-quantized model folders (`qwen-webgpu quantize`): written from the tiny random
//! fixtures in every real layout, loaded through the public loader, and compared bit for bit
//! with quantizing the source while loading; their sizes; their errors; the q4 scale search.

mod common;

use common::{fixture, random_ids, temp_dir, Rng, Spec};
use half::f16;
use qwen_webgpu::gpu::{GpuMatrix, GpuOptions};
use qwen_webgpu::weights::quant::{decode_rows, encode_rows, WeightFormat, GROUP};
use qwen_webgpu::weights::quantize::{quantize_dir, QuantizeOptions, QuantizeReport};
use qwen_webgpu::weights::{FileSource, TensorSource};
use qwen_webgpu::{ModelOptions, Output, Qwen, Want};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn quantize(src: &Path, name: &str, format: WeightFormat, max_shard_bytes: u64) -> (PathBuf, QuantizeReport) {
    let out = temp_dir(name);
    let r = quantize_dir(src, &out, &QuantizeOptions { format, max_shard_bytes }, &mut |_, _, _| {}).expect("quantize");
    (out, r)
}

fn load(dir: &Path, weights: WeightFormat) -> Result<Qwen, qwen_webgpu::Error> {
    let opts = ModelOptions { context: Some(32), max_batch: 32, weights, ..Default::default() };
    pollster::block_on(Qwen::load_dir(dir, &GpuOptions::default(), &opts))
}

fn load_err(dir: &Path, weights: WeightFormat) -> String {
    match load(dir, weights) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn all_logits(m: &mut Qwen, tokens: &[u32]) -> Vec<f32> {
    m.reset();
    match pollster::block_on(m.feed(tokens, Want::AllLogits)).unwrap() {
        Output::Logits(l) => l,
        o => panic!("unexpected {o:?}"),
    }
}

/// Every byte of a matrix as the GPU holds it.
fn gpu_bytes(m: &Qwen, w: &GpuMatrix) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &w.chunks {
        out.extend(pollster::block_on(m.gpu.read(&c.buffer, 0, c.buffer.size())).unwrap());
    }
    out
}

fn matrices(m: &Qwen) -> Vec<(String, &GpuMatrix)> {
    let w = &m.weights;
    let mut v = vec![("embed".to_string(), &w.embed)];
    for (i, l) in w.layers.iter().enumerate() {
        for (n, x) in [("qkv", &l.qkv), ("o_proj", &l.o_proj), ("gate_up", &l.gate_up), ("down", &l.down)] {
            v.push((format!("layer{i}.{n}"), x));
        }
    }
    if let Some(h) = &w.lm_head {
        v.push(("lm_head".into(), h));
    }
    v
}

/// A qwen2 layout whose every matrix has a width that is a multiple of 64 (all quantized).
fn qwen2_wide() -> Spec {
    Spec { hidden: 128, heads: 4, kv_heads: 2, head_dim: 32, ff: 256, vocab: 512, layers: 2, ..Spec::qwen2(false) }
}

/// Quantize, load the folder, and compare with quantizing the source while loading: the same
/// GPU bytes for every matrix and exactly the same logits.
fn same_as_load_time(name: &str, spec: &Spec, seed: u64, max_shard_bytes: u64, sharded: bool) {
    let (src, _) = fixture(name, spec, seed);
    let prompt = random_ids(13, spec.vocab, seed + 1);
    for format in [WeightFormat::Q4, WeightFormat::Q8] {
        let (out, r) = quantize(&src, &format!("{name}-{}", format.name()), format, max_shard_bytes);
        assert_eq!(r.files.len() > 1, sharded, "{name} {format:?}: shards {:?}", r.files);
        assert_eq!(out.join("model.safetensors.index.json").exists(), sharded);
        assert!(out.join("config.json").exists());
        let src_meta = FileSource::open_dir(&out).unwrap();
        assert_eq!(src_meta.metadata().get("qwen_webgpu.format").map(String::as_str), Some(format.name()));
        assert_eq!(src_meta.metadata().get("qwen_webgpu.group").map(String::as_str), Some("32"));
        assert_eq!(src_meta.metadata().get("qwen_webgpu.version").map(String::as_str), Some("1"));
        assert!(r.quantized > 0, "{name}: nothing quantized");

        let mut a = load(&src, format).expect("load-time quantization");
        let mut b = load(&out, format).expect("pre-quantized load");
        for ((n, x), (_, y)) in matrices(&a).into_iter().zip(matrices(&b)) {
            assert_eq!(x.format, y.format, "{name} {n}");
            assert!(gpu_bytes(&a, x) == gpu_bytes(&b, y), "{name} {format:?} {n}: GPU bytes differ");
        }
        let (la, lb) = (all_logits(&mut a, &prompt), all_logits(&mut b, &prompt));
        assert!(la == lb, "{name} {format:?}: logits differ");
        println!(
            "{name} {}: {} matrices quantized, {} kept f16, {} shard(s), {} -> {} bytes",
            format.name(),
            r.quantized,
            r.kept_f16,
            r.files.len(),
            r.source_bytes,
            r.output_bytes
        );
    }
}

#[test]
fn qwen_v1_sharded_matches_load_time_quantization() {
    // v1: fused c_attn + bias, MLP width 88 (its down matrix stays f16), a 2-shard source;
    // a small shard limit makes the output sharded too.
    same_as_load_time("q-v1", &Spec::qwen_v1(), 21, 40_000, true);
}

#[test]
fn qwen2_matches_load_time_quantization() {
    // GQA, q/k/v biases, q/k/v written into one fused matrix, untied head, all quantized.
    same_as_load_time("q-qwen2", &qwen2_wide(), 22, 1 << 30, false);
}

#[test]
fn qwen3_matches_load_time_quantization() {
    // q/k norms, head_dim 24 (o_proj width 96 stays f16), tied embeddings.
    same_as_load_time("q-qwen3", &Spec::qwen3(), 23, 1 << 30, false);
}

#[test]
fn files_are_about_4x_and_2x_smaller() {
    let spec = qwen2_wide();
    let (src, _) = fixture("q-size", &spec, 24);
    let src_files = FileSource::open_dir(&src).unwrap();
    let matrix_bytes: u64 =
        src_files.tensors().values().filter(|t| t.shape.len() == 2).map(|t| t.byte_len() as u64).sum();
    let file_len = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    for (format, bits) in [(WeightFormat::Q4, 4.5), (WeightFormat::Q8, 8.5)] {
        let (out, _) = quantize(&src, &format!("q-size-{}", format.name()), format, 1 << 30);
        let q = FileSource::open_dir(&out).unwrap();
        let quant_bytes: u64 = q
            .tensors()
            .iter()
            .filter(|(n, _)| n.ends_with(".qweight") || n.ends_with(".scales"))
            .map(|(_, t)| t.byte_len() as u64)
            .sum();
        // Matrices: exactly bits/16 of bf16 (every matrix of this layout is quantized).
        assert_eq!(quant_bytes * 16, (matrix_bytes as f64 * bits) as u64, "{format:?}");
        let ratio = file_len(&src) as f64 / file_len(&out) as f64;
        println!(
            "{}: matrices {matrix_bytes} -> {quant_bytes} bytes ({:.2}x); files {} -> {} bytes ({ratio:.2}x)",
            format.name(),
            matrix_bytes as f64 / quant_bytes as f64,
            file_len(&src),
            file_len(&out)
        );
        let want = 16.0 / bits;
        assert!(ratio > want * 0.9 && ratio < want * 1.01, "{format:?}: files only {ratio:.2}x smaller");
    }
}

#[test]
fn auto_format_and_mismatches() {
    let spec = Spec::qwen3();
    let (src, _) = fixture("q-mismatch", &spec, 25);
    let (out, _) = quantize(&src, "q-mismatch-q4", WeightFormat::Q4, 1 << 30);
    use qwen_webgpu::weights::quant::{resolve_format, stored_format};
    let stored = stored_format(FileSource::open_dir(&out).unwrap().metadata()).unwrap();
    assert_eq!(stored, Some(WeightFormat::Q4));
    assert_eq!(resolve_format(None, stored).unwrap(), WeightFormat::Q4);
    assert_eq!(resolve_format(None, None).unwrap(), WeightFormat::F16);
    assert_eq!(resolve_format(Some(WeightFormat::Q8), None).unwrap(), WeightFormat::Q8);
    for asked in [WeightFormat::F16, WeightFormat::Q8] {
        let e = load_err(&out, asked);
        assert!(e.contains("pre-quantized to q4") && e.contains(asked.name()), "{e}");
    }
    // Quantizing again, or into a folder that holds a checkpoint, is refused.
    let e = quantize_dir(
        &out,
        &temp_dir("q-again"),
        &QuantizeOptions { format: WeightFormat::Q8, max_shard_bytes: 1 << 30 },
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already pre-quantized"), "{e}");
    let e = quantize_dir(
        &src,
        &out,
        &QuantizeOptions { format: WeightFormat::Q8, max_shard_bytes: 1 << 30 },
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already holds a checkpoint"), "{e}");
}

/// Rewrite a pre-quantized `model.safetensors` with `edit` applied to its tensors and metadata.
fn rewrite(
    dir: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>),
) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    let mut metadata: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
    edit(&mut tensors, &mut metadata);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, Some(metadata), &dir.join("model.safetensors")).unwrap();
}

#[test]
fn corrupt_prequantized_folders_get_clear_errors() {
    let spec = Spec::qwen3();
    let (src, _) = fixture("q-corrupt", &spec, 26);
    let (good, _) = quantize(&src, "q-corrupt-q4", WeightFormat::Q4, 1 << 30);
    let original = std::fs::read(good.join("model.safetensors")).unwrap();
    let q = "model.layers.1.mlp.up_proj.weight";
    let check = |what: &str, edit: &dyn Fn(&mut BTreeMap<_, _>, &mut HashMap<String, String>), parts: &[&str]| {
        std::fs::write(good.join("model.safetensors"), &original).unwrap();
        rewrite(&good, |t, m| edit(t, m));
        let e = load_err(&good, WeightFormat::Q4);
        for p in parts {
            assert!(e.contains(p), "{what}: error {e:?} should mention {p:?}");
        }
    };
    check("missing scales", &|t, _| drop(t.remove(&format!("{q}.scales"))), &["lacks", &format!("{q}.scales")]);
    check("missing qweight", &|t, _| drop(t.remove(&format!("{q}.qweight"))), &["lacks", &format!("{q}.qweight")]);
    check(
        "qweight of the wrong width",
        &|t, _| {
            let e = t.get_mut(&format!("{q}.qweight")).unwrap();
            e.1 = vec![e.1[0], e.1[1] / 2];
            e.2.truncate(e.2.len() / 2);
        },
        &[&format!("{q}.qweight"), "shape"],
    );
    check(
        "scales with a row missing",
        &|t, _| {
            let e = t.get_mut(&format!("{q}.scales")).unwrap();
            e.1[0] -= 1;
            let n = e.2.len() - e.1[1] * 2;
            e.2.truncate(n);
        },
        &[&format!("{q}.scales"), "shape"],
    );
    check(
        "scales stored as F32",
        &|t, _| {
            let e = t.get_mut(&format!("{q}.scales")).unwrap();
            e.0 = safetensors::Dtype::F32;
            e.2 = e.2.chunks(2).flat_map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes()).collect();
        },
        &[&format!("{q}.scales"), "dtype F32", "F16"],
    );
    check(
        "qweight stored as I32",
        &|t, _| t.get_mut(&format!("{q}.qweight")).unwrap().0 = safetensors::Dtype::I32,
        &[&format!("{q}.qweight"), "dtype I32", "U32"],
    );
    check(
        "unknown format",
        &|_, m| drop(m.insert("qwen_webgpu.format".into(), "q3".into())),
        &["qwen_webgpu.format", "\"q3\""],
    );
    check(
        "newer version",
        &|_, m| drop(m.insert("qwen_webgpu.version".into(), "2".into())),
        &["qwen_webgpu.version", "\"2\""],
    );
    check("other group size", &|_, m| drop(m.insert("qwen_webgpu.group".into(), "64".into())), &["qwen_webgpu.group"]);
    check("no metadata", &|_, m| m.clear(), &["no qwen_webgpu.format", ".qweight"]);
    check(
        "metadata says q8, tensors are q4",
        &|_, m| drop(m.insert("qwen_webgpu.format".into(), "q8".into())),
        &["says q8", "q4"],
    );
    // A truncated file.
    std::fs::write(good.join("model.safetensors"), &original[..original.len() - 100]).unwrap();
    let e = load_err(&good, WeightFormat::Q4);
    assert!(e.contains("out of range") && e.contains("truncated"), "{e}");
}

/// The q4 scale search: never more squared error than plain Q4_0 (`m / -8`) in any group,
/// and clearly less overall on Gaussian weights; q8 is unchanged (amax / 127).
#[test]
fn q4_scale_search_lowers_the_error() {
    let mut rng = Rng::new(27);
    let cols = 4096;
    let rows = 64;
    let vals: Vec<f32> = (0..rows * cols).map(|_| half::bf16::from_f32(rng.normal() * 0.02).to_f32()).collect();
    let (w, s) = encode_rows(WeightFormat::Q4, &vals, cols, "t").unwrap();
    let got = decode_rows(WeightFormat::Q4, &w, &s, rows, cols);
    let (mut new_err, mut old_err, mut energy) = (0f64, 0f64, 0f64);
    for (g, (x, y)) in vals.chunks(GROUP).zip(got.chunks(GROUP)).enumerate() {
        // Plain Q4_0, the encoder before the search.
        let m = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = f16::from_f32(m / -8.0).to_f32();
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        let old: f64 = x.iter().map(|&v| ((v - (v * inv).round().clamp(-8.0, 7.0) * d) as f64).powi(2)).sum();
        let new: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        assert!(new <= old * (1.0 + 1e-5) + 1e-12, "group {g}: {new} > {old}");
        old_err += old;
        new_err += new;
        energy += x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    }
    println!(
        "q4 relative squared error on N(0, 0.02) weights: plain Q4_0 {:.5}, searched {:.5} ({:.1}% less)",
        old_err / energy,
        new_err / energy,
        100.0 * (1.0 - new_err / old_err)
    );
    assert!(new_err < 0.93 * old_err, "search gains too little: {new_err} vs {old_err}");
}
