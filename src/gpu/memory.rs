//! GPU memory accounting from the allocations themselves: every long-lived buffer is a
//! [`GpuBuffer`], counted in its device's [`Ledger`] from creation until it is dropped. The
//! figures the benchmark and the browser's fit check report are read from here, not computed
//! from formulas kept apart from the code that allocates.

use std::cell::Cell;
use std::rc::Rc;

/// Live long-lived buffers of one device: their count and bytes.
#[derive(Debug, Default)]
pub struct Ledger {
    bytes: Cell<u64>,
    buffers: Cell<usize>,
}

impl Ledger {
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    pub fn buffers(&self) -> usize {
        self.buffers.get()
    }

    /// Count `buffer` until the returned value is dropped.
    pub fn track(self: &Rc<Self>, buffer: wgpu::Buffer) -> GpuBuffer {
        self.bytes.set(self.bytes.get() + buffer.size());
        self.buffers.set(self.buffers.get() + 1);
        GpuBuffer { buffer, ledger: self.clone() }
    }
}

/// A buffer counted in its device's [`Ledger`]. Derefs to [`wgpu::Buffer`]; dropping it
/// releases the GPU memory (once no submitted work uses it) and counts it down. Not `Clone`:
/// one owner, one count.
#[derive(Debug)]
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    ledger: Rc<Ledger>,
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.ledger.bytes.set(self.ledger.bytes.get() - self.buffer.size());
        self.ledger.buffers.set(self.ledger.buffers.get() - 1);
    }
}
