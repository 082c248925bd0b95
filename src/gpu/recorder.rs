//! Collects the dispatches of one forward pass and submits them as one command buffer.
//!
//! Each dispatch's uniform parameters go into one shared arena buffer (written once per
//! submission) and are bound with a dynamic offset.

use super::interface::KernelParams;
use super::{Gpu, Kernel};
use crate::error::{Error, Result};
use std::rc::Rc;

/// Most storage buffers one kernel binds.
pub const MAX_BINDINGS: usize = 7;

/// What passes that repeat reuse: the uniform arena (grown when too small) and the bind
/// groups, by (kernel, parameter size, storage buffers). Looking a group up allocates nothing:
/// the key is hashed in place and compared against the stored buffers.
#[derive(Default)]
pub struct PassEncoding {
    arena: Option<wgpu::Buffer>,
    groups: std::collections::HashMap<u64, Vec<CachedGroup>>,
}

struct CachedGroup {
    kernel: *const Kernel,
    params_size: u64,
    buffers: Vec<wgpu::Buffer>,
    group: wgpu::BindGroup,
}

impl PassEncoding {
    fn key(d: &Dispatch) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        (Rc::as_ptr(&d.kernel) as usize, d.params_size).hash(&mut h);
        for b in d.buffers() {
            b.hash(&mut h);
        }
        h.finish()
    }

    fn get(&self, key: u64, d: &Dispatch) -> Option<&wgpu::BindGroup> {
        self.groups.get(&key)?.iter().find_map(|c| {
            let same =
                c.kernel == Rc::as_ptr(&d.kernel) && c.params_size == d.params_size && c.buffers.iter().eq(d.buffers());
            same.then_some(&c.group)
        })
    }
}

/// How a kernel uses a storage buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Read,
    ReadWrite,
}

struct Dispatch {
    kernel: Rc<Kernel>,
    params_offset: u64,
    params_size: u64,
    /// The storage buffers in binding order, in place (no allocation per dispatch).
    buffers: [Option<wgpu::Buffer>; MAX_BINDINGS],
    groups: (u32, u32),
}

impl Dispatch {
    fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> + '_ {
        self.buffers.iter().map_while(Option::as_ref)
    }
}

/// One submission's worth of dispatches.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    params: Vec<u8>,
    dispatches: Vec<Dispatch>,
    align: usize,
}

/// Split a linear workgroup count into a grid within the per-dimension limit.
/// Kernels recover the linear index with `group_index()` from `common/grid.wgsl`.
pub fn grid(gpu: &Gpu, groups: u32) -> (u32, u32) {
    let max = gpu.limits.max_compute_workgroups_per_dimension.max(1);
    if groups <= max {
        (groups.max(1), 1)
    } else {
        let y = groups.div_ceil(max);
        (groups.div_ceil(y), y)
    }
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        let align = gpu.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        Recorder { gpu, params: Vec::new(), dispatches: Vec::new(), align }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Record `kernel` over `groups` workgroups (a linear count) with `params` and the
    /// storage `buffers` in binding order (1, 2, ...).
    pub fn dispatch<P: KernelParams + 'static>(
        &mut self,
        kernel: &Rc<Kernel>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: u32,
    ) -> Result<()> {
        if buffers.len() != kernel.bindings.len() || buffers.len() > MAX_BINDINGS {
            return Err(Error::Gpu(format!(
                "{}: {} buffers given for {} bindings",
                kernel.label,
                buffers.len(),
                kernel.bindings.len()
            )));
        }
        kernel.check_params::<P>()?;
        if groups == 0 {
            return Ok(());
        }
        let offset = self.params.len().div_ceil(self.align) * self.align;
        self.params.resize(offset, 0);
        self.params.extend_from_slice(bytemuck::bytes_of(params));
        let mut bound: [Option<wgpu::Buffer>; MAX_BINDINGS] = Default::default();
        for (slot, b) in bound.iter_mut().zip(buffers) {
            *slot = Some((*b).clone());
        }
        self.dispatches.push(Dispatch {
            kernel: kernel.clone(),
            params_offset: offset as u64,
            params_size: std::mem::size_of::<P>() as u64,
            buffers: bound,
            groups: grid(self.gpu, groups),
        });
        Ok(())
    }

    /// Encode everything into one compute pass and submit it.
    pub fn submit(self) -> Result<()> {
        let cmd = self.finish()?;
        self.gpu.queue.submit([cmd]);
        Ok(())
    }

    /// Encode everything into one compute pass; the caller may add copies before submitting.
    pub fn finish(&self) -> Result<wgpu::CommandBuffer> {
        let mut enc =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        self.encode(&mut enc)?;
        Ok(enc.finish())
    }

    /// Encode into an existing encoder, with a parameter buffer of its own.
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        self.encode_with(enc, &mut PassEncoding::default(), None)
    }

    /// Each dispatch's kernel label and workgroup count, in order (for profiles).
    pub fn dispatch_info(&self) -> Vec<(String, u32)> {
        self.dispatches.iter().map(|d| (d.kernel.label.clone(), d.groups.0 * d.groups.1)).collect()
    }

    /// Encode into an existing encoder, writing the parameters into `reuse`'s arena (grown
    /// when too small, else reused: no allocation per forward pass) and reusing its bind
    /// groups for dispatches that bind the same buffers. The arena's contents are replaced at
    /// the next queue operation, so one arena serves one recorder per submission. With
    /// `timestamps`, timestamp i is written before dispatch i and one after the last
    /// (see [`super::profile::Profiler`]).
    pub fn encode_with(
        &self,
        enc: &mut wgpu::CommandEncoder,
        reuse: &mut PassEncoding,
        timestamps: Option<&wgpu::QuerySet>,
    ) -> Result<()> {
        if self.dispatches.is_empty() {
            return Ok(());
        }
        let need = (self.params.len().div_ceil(16) * 16) as u64;
        if reuse.arena.as_ref().is_none_or(|a| a.size() < need) {
            reuse.arena = Some(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: need.next_power_of_two(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            // Cached groups bind the old arena.
            reuse.groups.clear();
        }
        let arena = reuse.arena.clone().expect("allocated above");
        self.gpu.write(&arena, 0, &self.params);
        // One lookup per dispatch; a miss makes the group and keeps it for later passes.
        let mut groups = Vec::with_capacity(self.dispatches.len());
        for d in &self.dispatches {
            let key = PassEncoding::key(d);
            let group = match reuse.get(key, d) {
                Some(g) => g.clone(),
                None => {
                    let group = self.bind_group(d, &arena);
                    let cached = CachedGroup {
                        kernel: Rc::as_ptr(&d.kernel),
                        params_size: d.params_size,
                        buffers: d.buffers().cloned().collect(),
                        group: group.clone(),
                    };
                    reuse.groups.entry(key).or_default().push(cached);
                    group
                }
            };
            groups.push(group);
        }
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
        let stamp = |pass: &mut wgpu::ComputePass, i: usize| {
            if let Some(q) = timestamps.filter(|_| i < super::profile::MAX_QUERIES as usize) {
                pass.write_timestamp(q, i as u32);
            }
        };
        for (i, (d, group)) in self.dispatches.iter().zip(&groups).enumerate() {
            stamp(&mut pass, i);
            pass.set_pipeline(&d.kernel.pipeline);
            pass.set_bind_group(0, group, &[d.params_offset as u32]);
            pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
        }
        stamp(&mut pass, self.dispatches.len());
        Ok(())
    }

    fn bind_group(&self, d: &Dispatch, arena: &wgpu::Buffer) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: wgpu::BufferSize::new(d.params_size),
            }),
        }];
        for (i, b) in d.buffers().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&d.kernel.label),
            layout: &d.kernel.layout,
            entries: &entries,
        })
    }
}
