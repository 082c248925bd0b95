//! `GpuMatrix`: an f16 `[rows, cols]` weight, split by rows across as many buffers as the
//! adapter's storage-binding limit requires (Qwen's 151936-row embedding is 593 MiB in f16;
//! many adapters bind at most 128 MiB).

use super::Gpu;
use crate::error::{Error, Result};

/// A run of whole rows in one buffer.
pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub buffer: wgpu::Buffer,
}

pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    /// u32 words per row: rows are padded to an even number of f16 values.
    pub stride: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    /// Bytes per row on the GPU.
    pub fn row_bytes(cols: usize) -> u64 {
        (cols.div_ceil(2) * 4) as u64
    }

    /// GPU bytes of a `[rows, cols]` matrix.
    pub fn bytes_for(rows: usize, cols: usize) -> u64 {
        rows as u64 * Self::row_bytes(cols)
    }

    /// Allocate an uninitialised matrix, as few chunks as the binding limit allows.
    pub fn new(gpu: &Gpu, label: &str, rows: usize, cols: usize) -> Result<Self> {
        let row_bytes = Self::row_bytes(cols);
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
        Ok(GpuMatrix { rows, cols, stride: cols.div_ceil(2), chunks })
    }

    /// Write rows `row0..` from f16 bits laid out with this matrix's padded row stride.
    pub fn write_rows(&self, gpu: &Gpu, row0: usize, halves: &[u16]) -> Result<()> {
        let per_row = self.stride * 2;
        if halves.len() % per_row != 0 || row0 + halves.len() / per_row > self.rows {
            return Err(Error::Weights(format!(
                "writing {} values at row {row0} does not fit a [{}, {}] matrix",
                halves.len(),
                self.rows,
                self.cols
            )));
        }
        let n_rows = halves.len() / per_row;
        for c in &self.chunks {
            let lo = row0.max(c.row0);
            let hi = (row0 + n_rows).min(c.row0 + c.rows);
            if lo >= hi {
                continue;
            }
            let src = &halves[(lo - row0) * per_row..(hi - row0) * per_row];
            let offset = ((lo - c.row0) * per_row * 2) as u64;
            gpu.write(&c.buffer, offset, bytemuck::cast_slice(src));
        }
        Ok(())
    }

    pub fn gpu_bytes(&self) -> u64 {
        Self::bytes_for(self.rows, self.cols)
    }
}
