//! `GpuMatrix`: a `[rows, cols]` weight in one of the [`WeightFormat`]s, split by rows across
//! as many buffers as the adapter's storage-binding limit requires (Qwen's 151936-row
//! embedding is 593 MiB in f16; many adapters bind at most 128 MiB).

use super::{Gpu, GpuBuffer};
use crate::error::{Error, Result};
use crate::weights::quant::encode_rows;
pub use crate::weights::quant::WeightFormat;

/// A run of whole rows in one buffer: `rows * stride` value words, then (quantized formats)
/// `rows * scales_per_row` f16 scales.
pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub buffer: GpuBuffer,
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
    /// Exact when the adapter binds it whole (one chunk); each further chunk adds less than
    /// 16 bytes of rounding.
    pub fn bytes_for(rows: usize, cols: usize, format: WeightFormat) -> u64 {
        super::buffer_size(rows as u64 * format.for_cols(cols).row_bytes(cols))
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
        let (words, scales) = encode_rows(self.format, vals, self.cols, what)?;
        self.write_words(gpu, row0, bytemuck::cast_slice(&words), what)?;
        if !scales.is_empty() {
            self.write_scales(gpu, row0, bytemuck::cast_slice(&scales), what)?;
        }
        Ok(())
    }

    /// Write encoded value words (little-endian u32, `stride` per row) of whole rows `row0..`.
    pub fn write_words(&self, gpu: &Gpu, row0: usize, bytes: &[u8], what: &str) -> Result<()> {
        self.write_part(gpu, row0, bytes, self.stride * 4, false, what)
    }

    /// Write the f16 scales (little-endian, `scales_per_row` per row) of whole rows `row0..`
    /// of a quantized matrix.
    pub fn write_scales(&self, gpu: &Gpu, row0: usize, bytes: &[u8], what: &str) -> Result<()> {
        let spr = self.format.scales_per_row(self.cols);
        if spr == 0 {
            return Err(Error::Weights(format!("{what}: scales for a {} matrix", self.format.name())));
        }
        self.write_part(gpu, row0, bytes, spr * 2, true, what)
    }

    fn write_part(
        &self,
        gpu: &Gpu,
        row0: usize,
        bytes: &[u8],
        row_bytes: usize,
        scales: bool,
        what: &str,
    ) -> Result<()> {
        if !bytes.len().is_multiple_of(row_bytes) || row0 + bytes.len() / row_bytes > self.rows {
            return Err(Error::Weights(format!(
                "{what}: {} bytes at row {row0} are not whole rows of {row_bytes} bytes of a {}-row matrix",
                bytes.len(),
                self.rows
            )));
        }
        let n_rows = bytes.len() / row_bytes;
        for (c, lo, hi) in self.chunks_over(row0, n_rows) {
            // Scales start after the chunk's words; spr is even (WeightFormat::for_cols), so
            // every offset here is 4-byte aligned.
            let base = if scales { c.scales_offset(self.stride) * 4 } else { 0 };
            let at = base + (lo - c.row0) * row_bytes;
            gpu.write(&c.buffer, at as u64, &bytes[(lo - row0) * row_bytes..(hi - row0) * row_bytes]);
        }
        Ok(())
    }

    /// The chunks holding rows `row0..row0 + n`, each with the part of that range it holds
    /// (`lo..hi`, matrix rows), in row order.
    pub fn chunks_over(&self, row0: usize, n: usize) -> impl Iterator<Item = (&MatrixChunk, usize, usize)> {
        self.chunks.iter().filter_map(move |c| {
            let lo = row0.max(c.row0);
            let hi = (row0 + n).min(c.row0 + c.rows);
            (lo < hi).then_some((c, lo, hi))
        })
    }

    pub fn gpu_bytes(&self) -> u64 {
        self.rows as u64 * self.format.row_bytes(self.cols)
    }
}
