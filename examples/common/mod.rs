//! What the fixture writers share.

use std::path::Path;

/// Write `tensors` (name → shape and f32 values) to `path` as one bf16 safetensors file.
pub fn write_bf16_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a (Vec<usize>, Vec<f32>))>,
    path: &Path,
) {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (shape, vals))| {
            (n.clone(), shape.clone(), vals.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), bytes).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write safetensors");
}
