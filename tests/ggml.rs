//! Our CPU decoder of ggml's block types (`weights::ggml`, the kernels' reference) against
//! candle's (a port of ggml's `dequantize_row_*`), on random valid blocks of every type we
//! load, and the lossless Q8_0/Q4_0 repacks against our own q8/q4 decoder.

mod common;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use common::{random_ggml_blocks, Rng};
use qwen_webgpu::weights::ggml::{self, GgmlType};
use qwen_webgpu::weights::quant::{self, WeightFormat};

#[test]
fn block_decoder_matches_candle() {
    let mut rng = Rng::new(21);
    for (t, c) in [
        (GgmlType::Q8_0, GgmlDType::Q8_0),
        (GgmlType::Q4_0, GgmlDType::Q4_0),
        (GgmlType::Q4_1, GgmlDType::Q4_1),
        (GgmlType::Q5_0, GgmlDType::Q5_0),
        (GgmlType::Q5_1, GgmlDType::Q5_1),
        (GgmlType::Q4K, GgmlDType::Q4K),
        (GgmlType::Q5K, GgmlDType::Q5K),
        (GgmlType::Q6K, GgmlDType::Q6K),
    ] {
        let blocks = 24;
        let bytes = random_ggml_blocks(&mut rng, t, blocks, t.block().0);
        let ours = ggml::dequantize(t, &bytes, "t").unwrap();
        let theirs = qtensor_from_ggml(c, &bytes, vec![blocks, t.block().0], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{t:?}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(a == b || (a - b).abs() <= 1e-6 * b.abs().max(1.0), "{t:?} value {i}: ours {a}, candle {b}");
        }
    }
    assert!(ggml::dequantize(GgmlType::Q2K, &[0; 84], "t").unwrap_err().to_string().contains("Q2_K"));
    assert!(ggml::dequantize(GgmlType::Q4K, &[0; 143], "t").is_err());
}

/// Q8_0 and Q4_0 go to the GPU as our q8/q4 words and scales: the same values, bit for bit.
#[test]
fn q8_0_and_q4_0_repack_losslessly() {
    let mut rng = Rng::new(22);
    let (rows, cols) = (3, 128);
    for (t, f) in [(GgmlType::Q8_0, WeightFormat::Q8), (GgmlType::Q4_0, WeightFormat::Q4)] {
        let bytes = random_ggml_blocks(&mut rng, t, rows, cols);
        let (words, scales) = if t == GgmlType::Q8_0 { ggml::repack_q8_0(&bytes) } else { ggml::repack_q4_0(&bytes) };
        assert_eq!(words.len() + scales.len(), bytes.len(), "{t:?}: same bytes");
        let words: Vec<u32> = words.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let scales: Vec<u16> = scales.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let ours = quant::decode_rows(f, &words, &scales, rows, cols);
        assert_eq!(ours, ggml::dequantize(t, &bytes, "t").unwrap(), "{t:?}");
    }
}
