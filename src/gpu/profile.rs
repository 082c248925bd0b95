//! GPU time per dispatch, from timestamps written between the dispatches of a pass
//! (`TIMESTAMP_QUERY_INSIDE_PASSES`: native adapters; browsers do not offer it). For
//! `qwen-webgpu bench --profile`: where a forward pass spends its time.

use super::Gpu;
use crate::error::{Error, Result};

/// Timestamps a profiled pass can hold (wgpu's largest query set).
pub const MAX_QUERIES: u32 = 4096;

/// The query set and buffers of profiled passes (one pass at a time).
pub struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

/// One dispatch's GPU time.
#[derive(Debug, Clone)]
pub struct DispatchTime {
    /// The kernel's label: `name[DEFINES]`.
    pub kernel: String,
    /// Workgroups dispatched (tells apart matrices that share a kernel).
    pub groups: u32,
    pub ns: f64,
}

impl Profiler {
    /// Fails where the device was opened without timestamp queries inside passes
    /// ([`super::GpuOptions::profile`], or an adapter without them).
    pub fn new(gpu: &Gpu) -> Result<Profiler> {
        let need = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !gpu.features.contains(need) {
            return Err(Error::Request(format!(
                "profiling needs timestamp queries inside compute passes, which {} does not offer here",
                gpu.info.name
            )));
        }
        let bytes = MAX_QUERIES as u64 * 8;
        let buffer = |label, usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Profiler {
            set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: MAX_QUERIES,
            }),
            resolve: buffer("profile_resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer("profile_readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            period_ns: gpu.queue.get_timestamp_period() as f64,
        })
    }

    pub fn query_set(&self) -> &wgpu::QuerySet {
        &self.set
    }

    /// After a pass that wrote `n` timestamps: copy them out (same encoder).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder, n: u32) {
        let n = n.min(MAX_QUERIES);
        enc.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
    }

    /// After the submission: the time of each dispatch in `dispatches` (kernel label, groups),
    /// whose timestamps were written before each one and after the last.
    pub async fn read(&self, gpu: &Gpu, dispatches: Vec<(String, u32)>) -> Result<Vec<DispatchTime>> {
        let n = (dispatches.len() + 1).min(MAX_QUERIES as usize);
        let bytes = gpu.map_read(&self.readback, n as u64 * 8).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        Ok(dispatches
            .into_iter()
            .zip(ticks.windows(2))
            .map(|((kernel, groups), t)| DispatchTime {
                kernel,
                groups,
                ns: t[1].saturating_sub(t[0]) as f64 * self.period_ns,
            })
            .collect())
    }
}
