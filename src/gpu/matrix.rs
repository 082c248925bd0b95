//! `GpuMatrix`: a `[rows, cols]` weight in one of the [`WeightFormat`]s, split by rows across
//! as many buffers as the adapter's storage-binding limit requires (Qwen's 151936-row
//! embedding is 593 MiB in f16; many adapters bind at most 128 MiB).

use super::Gpu;
use crate::error::{Error, Result};
use crate::weights::quant::encode_rows;
pub use crate::weights::quant::WeightFormat;

/// A run of whole rows in one buffer: `rows * stride` value words, then (quantized formats)
/// `rows * scales_per_row` f16 scales.
pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub buffer: wgpu::Buffer,
}

impl MatrixChunk {
    /// Word offset of this chunk's scales.
    pub fn scales_offset(&self, stride: usize) -> usize {
        self.rows * stride
    }
}

pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub format: WeightFormat,
    /// u32 words of values per row.
    pub stride: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    /// GPU bytes of a `[rows, cols]` matrix asked for in `format`.
    pub fn bytes_for(rows: usize, cols: usize, format: WeightFormat) -> u64 {
        rows as u64 * format.for_cols(cols).row_bytes(cols)
    }

    /// Allocate an uninitialised matrix, as few chunks as the binding limit allows. A
    /// quantized format falls back to f16 for widths it cannot group.
    pub fn new(gpu: &Gpu, label: &str, rows: usize, cols: usize, format: WeightFormat) -> Result<Self> {
        let format = format.for_cols(cols);
        let row_bytes = format.row_bytes(cols);
        let per_chunk = (gpu.max_binding / row_bytes) as usize;
        if per_chunk == 0 {
            return Err(Error::Gpu(format!(
                "{label}: one row of {cols} values ({row_bytes} bytes) exceeds the storage binding limit of {} bytes",
                gpu.max_binding
            )));
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per_chunk.min(rows - row0);
            let buffer = gpu.storage(&format!("{label}[{row0}..{}]", row0 + n), n as u64 * row_bytes)?;
            chunks.push(MatrixChunk { row0, rows: n, buffer });
            row0 += n;
        }
        Ok(GpuMatrix { rows, cols, format, stride: format.words_per_row(cols), chunks })
    }

    /// Encode and write whole rows `row0..` from f32 values (`vals.len()` a multiple of
    /// `cols`). `what` names the tensor in errors.
    pub fn write_rows(&self, gpu: &Gpu, row0: usize, vals: &[f32], what: &str) -> Result<()> {
        if !vals.len().is_multiple_of(self.cols) || row0 + vals.len() / self.cols > self.rows {
            return Err(Error::Weights(format!(
                "{what}: {} values at row {row0} do not fit a [{}, {}] matrix",
                vals.len(),
                self.rows,
                self.cols
            )));
        }
        let n_rows = vals.len() / self.cols;
        let spr = self.format.scales_per_row(self.cols);
        for c in &self.chunks {
            let lo = row0.max(c.row0);
            let hi = (row0 + n_rows).min(c.row0 + c.rows);
            if lo >= hi {
                continue;
            }
            let (words, scales) =
                encode_rows(self.format, &vals[(lo - row0) * self.cols..(hi - row0) * self.cols], self.cols, what)?;
            gpu.write(&c.buffer, ((lo - c.row0) * self.stride * 4) as u64, bytemuck::cast_slice(&words));
            if !scales.is_empty() {
                // spr is even (WeightFormat::for_cols), so this offset is 4-byte aligned.
                let at = c.scales_offset(self.stride) * 4 + (lo - c.row0) * spr * 2;
                gpu.write(&c.buffer, at as u64, bytemuck::cast_slice(&scales));
            }
        }
        Ok(())
    }

    pub fn gpu_bytes(&self) -> u64 {
        self.rows as u64 * self.format.row_bytes(self.cols)
    }
}
