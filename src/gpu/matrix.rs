//! `GpuMatrix`: a `[rows, cols]` weight in one of the [`WeightFormat`]s, split by rows across
//! as many buffers as the adapter's storage-binding limit requires (Qwen's 151936-row
//! embedding is 593 MiB in f16; many adapters bind at most 128 MiB).

use super::{Gpu, GpuBuffer};
use crate::error::{Error, Result};
use crate::weights::quant::encode_rows;
pub use crate::weights::quant::WeightFormat;

/// A run of whole rows in one buffer, in one format: `rows * stride` value words, then
/// (q8/q4) `rows * scales_per_row` f16 scales; or (GGUF block formats) `rows * stride` bytes.
pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub format: WeightFormat,
    /// u32 words of values per row (bytes for [`WeightFormat::Ggml`]).
    pub stride: usize,
    pub buffer: GpuBuffer,
}

impl MatrixChunk {
    /// Word offset of this chunk's scales.
    pub fn scales_offset(&self) -> usize {
        self.rows * self.stride
    }

    /// GPU bytes of this chunk's rows.
    pub fn gpu_bytes(&self, cols: usize) -> u64 {
        self.rows as u64 * self.format.row_bytes(cols)
    }
}

/// A weight matrix. Most are in one format; a matrix fused from tensors a GGUF file stores in
/// different types (q, k and v; gate and up) keeps each part in its own format, in its own
/// chunks ([`GpuMatrix::with_parts`]).
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    /// The format of every chunk, or for a matrix of mixed parts the first one's.
    pub format: WeightFormat,
    /// u32 words of values per row in `format`.
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
        Self::with_parts(gpu, label, cols, &[(rows, format)])
    }

    /// A matrix of consecutive row ranges (`(rows, format)` each), every range in its own
    /// chunks. Each format falls back to f16 for widths it cannot group ([`WeightFormat::for_cols`]).
    pub fn with_parts(gpu: &Gpu, label: &str, cols: usize, parts: &[(usize, WeightFormat)]) -> Result<Self> {
        let mut chunks = Vec::new();
        let mut row0 = 0;
        for &(rows, format) in parts {
            let format = format.for_cols(cols);
            let row_bytes = format.row_bytes(cols);
            // Buffers are rounded up to 16 bytes (`buffer_size`): keep that within the limit.
            let per_chunk = (gpu.max_binding.saturating_sub(16) / row_bytes.max(1)) as usize;
            if per_chunk == 0 {
                return Err(Error::Gpu(format!(
                    "{label}: one row of {cols} values ({row_bytes} bytes) exceeds the storage binding limit of {} bytes",
                    gpu.max_binding
                )));
            }
            let end = row0 + rows;
            while row0 < end {
                let n = per_chunk.min(end - row0);
                let buffer = gpu.storage(&format!("{label}[{row0}..{}]", row0 + n), n as u64 * row_bytes)?;
                let stride = format.words_per_row(cols);
                chunks.push(MatrixChunk { row0, rows: n, format, stride, buffer });
                row0 += n;
            }
        }
        let format = chunks.first().map_or(parts.first().map_or(WeightFormat::F16, |p| p.1), |c| c.format);
        Ok(GpuMatrix { rows: row0, cols, format, stride: format.words_per_row(cols), chunks })
    }

    /// Whether every chunk is in `self.format`.
    pub fn is_uniform(&self) -> bool {
        self.chunks.iter().all(|c| c.format == self.format)
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
        let n = vals.len() / self.cols;
        for (c, lo, hi) in self.chunks_over(row0, n) {
            let part = &vals[(lo - row0) * self.cols..(hi - row0) * self.cols];
            let (words, scales) = encode_rows(c.format, part, self.cols, what)?;
            self.write_words(gpu, lo, bytemuck::cast_slice(&words), what)?;
            if !scales.is_empty() {
                self.write_scales(gpu, lo, bytemuck::cast_slice(&scales), what)?;
            }
        }
        Ok(())
    }

    /// Write encoded value words (little-endian u32, `stride` per row; for a GGUF block
    /// format the stored bytes, `stride` bytes a row) of whole rows `row0..`. The rows must lie
    /// in chunks of one format.
    pub fn write_words(&self, gpu: &Gpu, row0: usize, bytes: &[u8], what: &str) -> Result<()> {
        self.write_part(gpu, row0, bytes, false, what)
    }

    /// Write the f16 scales (little-endian, `scales_per_row` per row) of whole rows `row0..`
    /// of a q8/q4 matrix.
    pub fn write_scales(&self, gpu: &Gpu, row0: usize, bytes: &[u8], what: &str) -> Result<()> {
        self.write_part(gpu, row0, bytes, true, what)
    }

    fn write_part(&self, gpu: &Gpu, row0: usize, bytes: &[u8], scales: bool, what: &str) -> Result<()> {
        let format = self.chunks_over(row0, 1).next().map(|(c, ..)| c.format).ok_or_else(|| {
            Error::Weights(format!("{what}: row {row0} is past the end of a {}-row matrix", self.rows))
        })?;
        let row_bytes = match (scales, format) {
            (false, WeightFormat::Ggml(_)) => format.row_bytes(self.cols) as usize,
            (false, _) => format.words_per_row(self.cols) * 4,
            (true, _) => format.scales_per_row(self.cols) * 2,
        };
        if row_bytes == 0 {
            return Err(Error::Weights(format!("{what}: scales for a {} matrix", format.name())));
        }
        if !bytes.len().is_multiple_of(row_bytes) || row0 + bytes.len() / row_bytes > self.rows {
            return Err(Error::Weights(format!(
                "{what}: {} bytes at row {row0} are not whole rows of {row_bytes} bytes of a {}-row matrix",
                bytes.len(),
                self.rows
            )));
        }
        let n_rows = bytes.len() / row_bytes;
        // Check every chunk before writing any: a refused write changes nothing.
        if let Some((c, ..)) = self.chunks_over(row0, n_rows).find(|(c, ..)| c.format != format) {
            return Err(Error::Weights(format!(
                "{what}: rows {row0}..{} span a {} and a {} part",
                row0 + n_rows,
                format.name(),
                c.format.name()
            )));
        }
        for (c, lo, hi) in self.chunks_over(row0, n_rows) {
            // Scales start after the chunk's words; spr is even (WeightFormat::for_cols), so
            // every offset here is 4-byte aligned. GGUF block rows need not be whole words:
            // they are only ever written from a chunk's first row (each tensor has its own
            // chunks), so the offset is 0 there.
            let base = if scales { c.scales_offset() * 4 } else { 0 };
            let at = base + (lo - c.row0) * row_bytes;
            if !at.is_multiple_of(4) {
                return Err(Error::Weights(format!(
                    "{what}: rows from {lo} start at byte {at} of their buffer, not a whole word"
                )));
            }
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
        self.chunks.iter().map(|c| c.gpu_bytes(self.cols)).sum()
    }

    /// GPU bytes of one row (the embedding row a token reads): the largest of the parts'.
    pub fn max_row_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.format.row_bytes(self.cols)).max().unwrap_or(0)
    }
}
