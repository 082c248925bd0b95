//! The browser's model store reads back what the GPU holds as a checkpoint
//! (`model::export`): for every layout and format, the exported q4/q8 words and scales and f16
//! matrices equal, byte for byte, what `qwen-webgpu quantize` writes for the same source (norms
//! and biases equal in value: the store keeps the GPU's f32), matrices split across bindings
//! come back whole (vocabularies of 3000-4000 rows on a 64 KiB binding limit), and the exported file loads to exactly the same logits.

mod common;

use common::{fixture, random_ids, temp_dir, Spec};
use qwen_webgpu::gpu::GpuOptions;
use qwen_webgpu::model::export::{read_rows, store_version, Export};
use qwen_webgpu::weights::quant::WeightFormat;
use qwen_webgpu::weights::quantize::{quantize_dir, QuantizeOptions};
use qwen_webgpu::weights::{to_f32, FileSource, TensorSource};
use qwen_webgpu::{ModelOptions, Output, Qwen, Want};
use std::path::Path;

fn load(dir: &Path, weights: WeightFormat, max_binding: Option<u64>) -> Qwen {
    let opts = ModelOptions { context: Some(32), max_batch: 16, weights, ..Default::default() };
    let g = GpuOptions { max_binding_bytes: max_binding, ..Default::default() };
    pollster::block_on(Qwen::load_dir(dir, &g, &opts)).expect("load")
}

fn logits(m: &mut Qwen, tokens: &[u32]) -> Vec<f32> {
    m.reset();
    match pollster::block_on(m.feed(tokens, Want::AllLogits)).unwrap() {
        Output::Logits(l) => l,
        o => panic!("unexpected {o:?}"),
    }
}

/// The exported file, read `rows_per_read` rows at a time as the browser reads it.
fn export_file(m: &Qwen, format: WeightFormat, rows_per_read: usize) -> (Export, Vec<u8>) {
    let e = Export::plan(&m.config, format).expect("plan");
    let mut file = e.header.clone();
    for t in &e.tensors {
        assert_eq!(file.len() as u64, e.header.len() as u64 + t.offset, "{}: offset", t.name);
        let mut r = 0;
        while r < t.rows() {
            let n = rows_per_read.min(t.rows() - r);
            let b = pollster::block_on(read_rows(m, format, &t.name, r, n)).expect("read_rows");
            assert_eq!(b.len() as u64, n as u64 * t.row_bytes(), "{} rows {r}..+{n}", t.name);
            file.extend_from_slice(&b);
            r += n;
        }
    }
    assert_eq!(file.len() as u64, e.file_bytes());
    (e, file)
}

fn check(name: &str, spec: &Spec, seed: u64, max_binding: u64) {
    let (src, _) = fixture(name, spec, seed);
    let prompt = random_ids(9, spec.vocab, seed + 1);
    for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
        let mut a = load(&src, format, Some(max_binding));
        assert!(a.weights.embed.chunks.len() > 1, "{name}: the embedding should be split across bindings");
        let (e, file) = export_file(&a, format, 5);
        let out = temp_dir(&format!("{name}-export-{}", format.name()));
        std::fs::write(out.join("model.safetensors"), &file).unwrap();
        std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
        let mut exported = FileSource::open_dir(&out).expect("the exported file parses");

        if format != WeightFormat::F16 {
            // Byte for byte what `qwen-webgpu quantize` writes (vectors: equal values).
            let q = temp_dir(&format!("{name}-quantize-{}", format.name()));
            quantize_dir(&src, &q, &QuantizeOptions { format, max_shard_bytes: 1 << 30 }, &mut |_, _, _| {}).unwrap();
            let mut cli = FileSource::open_dir(&q).unwrap();
            assert_eq!(exported.metadata(), cli.metadata(), "{name} {format:?}: metadata");
            let names: Vec<String> = cli.tensors().keys().cloned().collect();
            assert_eq!(
                names,
                exported.tensors().keys().cloned().collect::<Vec<_>>(),
                "{name} {format:?}: tensor names"
            );
            let (mut same_bytes, mut same_values) = (0, 0);
            for n in &names {
                let (ti, te) = (cli.tensors()[n].clone(), exported.tensors()[n].clone());
                assert_eq!(ti.shape, te.shape, "{name} {n}: shape");
                let (bi, be) = (cli.read(n).unwrap(), exported.read(n).unwrap());
                if ti.dtype.name() == te.dtype.name() {
                    assert!(bi == be, "{name} {format:?} {n}: bytes differ from quantize's");
                    same_bytes += 1;
                } else {
                    assert_eq!(te.dtype.name(), "F32", "{name} {n}");
                    assert_eq!(
                        to_f32(n, &ti.dtype, &bi).unwrap(),
                        to_f32(n, &te.dtype, &be).unwrap(),
                        "{name} {n}: values"
                    );
                    same_values += 1;
                }
            }
            println!(
                "{name} {}: {same_bytes} tensors byte-equal to quantize's, {same_values} vectors equal in value",
                format.name()
            );
        } else {
            assert!(exported.metadata().is_empty(), "an f16 export is a plain checkpoint");
        }
        assert_eq!(e.tensors.len(), exported.tensors().len());

        // The exported file loads (as the store's reload does) to the same logits.
        let mut b = load(&out, format, Some(max_binding));
        assert!(
            logits(&mut a, &prompt) == logits(&mut b, &prompt),
            "{name} {format:?}: logits differ after the round trip"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn qwen_v1_export_equals_quantize() {
    // Fused c_attn + bias, MLP width 88 (down stays f16), untied head.
    check("x-v1", &Spec { vocab: 4000, ..Spec::qwen_v1() }, 31, 64 << 10);
}

#[test]
fn qwen2_export_equals_quantize() {
    // q/k/v stored as three tensors: row ranges of the fused GPU matrix; biases.
    let spec = Spec {
        hidden: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: 32,
        ff: 256,
        vocab: 3001,
        layers: 2,
        ..Spec::qwen2(false)
    };
    check("x-qwen2", &spec, 32, 64 << 10);
}

#[test]
fn qwen3_export_equals_quantize() {
    // q/k norms (one GPU buffer), tied embeddings, o_proj width 96 (stays f16).
    check("x-qwen3", &Spec { vocab: 4000, ..Spec::qwen3() }, 33, 64 << 10);
}

#[test]
fn bad_reads_are_errors() {
    let (src, _) = fixture("x-bad", &Spec::qwen3(), 34);
    let m = load(&src, WeightFormat::Q4, None);
    let e = Export::plan(&m.config, WeightFormat::Q4).unwrap();
    let t = &e.tensors[0];
    for (n, r0, rows) in
        [("nope", 0, 1), (t.name.as_str(), t.rows(), 1), (t.name.as_str(), 0, 0), (t.name.as_str(), 0, t.rows() + 1)]
    {
        assert!(pollster::block_on(read_rows(&m, WeightFormat::Q4, n, r0, rows)).is_err(), "{n} {r0}+{rows}");
    }
    assert_eq!(store_version(), "1.1");
}
