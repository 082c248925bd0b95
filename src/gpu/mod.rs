//! The GPU: adapter, device and queue with the adapter's own limits, plus buffer helpers.
//!
//! Everything is asynchronous so the same code runs in the browser; the native CLI drives it
//! with `pollster::block_on`.

pub mod matrix;
pub mod profile;
pub mod recorder;
pub mod shaders;

use crate::error::{Error, Result};
pub use matrix::GpuMatrix;
pub use recorder::{Binding, Recorder};
pub use shaders::{Kernel, ShaderKey};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// How to open the GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Use a smaller storage-binding limit than the adapter's (tests use this to force
    /// weights to be split across bindings the way a 128 MiB adapter would).
    pub max_binding_bytes: Option<u64>,
    /// Do not use subgroup kernels even where the adapter has subgroups.
    pub no_subgroups: bool,
    /// Ask for timestamp queries between dispatches (native adapters that have them), for
    /// [`profile::Profiler`].
    pub profile: bool,
}

/// An open device. Cheap to share by reference; owns the compiled-kernel cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The subgroup size, when the device has subgroups of one fixed size (4..=64): enables the
    /// subgroup kernels. Never on the web backend (wgpu does not expose subgroups there).
    pub subgroup_size: Option<u32>,
    /// Prefill through the block mat-vec ([`crate::ops::BLOCK_TOKENS`] tokens a workgroup)
    /// rather than the tiled matmul.
    pub block_prefill: bool,
    /// Rows per workgroup of the block mat-vec ([`crate::ops::LinearKernel::Block`]): each
    /// block of x is loaded once for this many rows.
    pub block_rows: u32,
    /// Threads per workgroup of the block mat-vec: the subgroup size on CPU adapters (one
    /// SIMD vector a workgroup, reduced without barriers), else [`crate::ops::WG`].
    pub block_wg: u32,
    /// Threads of an RMSNorm workgroup: [`crate::ops::NORM_WG`] on GPUs (a row in one round
    /// of loads), [`crate::ops::WG`] on CPU adapters (which pay for each barrier of the wider
    /// reduction instead).
    pub norm_wg: u32,
    /// Largest storage buffer binding we use, in bytes: a multiple of 4, at most the
    /// device's `max_storage_buffer_binding_size` and `max_buffer_size`.
    pub max_binding: u64,
    kernels: RefCell<HashMap<ShaderKey, Rc<Kernel>>>,
    /// Bytes of every long-lived buffer created through [`Gpu::storage`] / [`Gpu::readback_buffer`].
    allocated: std::cell::Cell<u64>,
    /// First error the device reported outside an error scope (validation, out of memory, loss).
    fault: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Open the default adapter with its own limits.
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter found ({e}); is WebGPU/Vulkan available?")))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let timestamps = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let wanted = if opts.profile { wgpu::Features::SUBGROUP | timestamps } else { wgpu::Features::SUBGROUP };
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("qwen-webgpu"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open device on {}: {e}", info.name)))?;
        let limits = device.limits();
        let fault = Arc::new(Mutex::new(None::<String>));
        {
            let fault = fault.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    *f = Some(e.to_string());
                }
            }));
        }
        {
            let fault = fault.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    *f = Some(format!("device lost ({reason:?}): {msg}"));
                }
            });
        }
        let mut max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if let Some(cap) = opts.max_binding_bytes {
            max_binding = max_binding.min(cap);
        }
        // Buffers are whole 16-byte units (the vec4 views of the mat-vec kernels).
        let max_binding = max_binding & !15;
        let subgroup_size = (features.contains(wgpu::Features::SUBGROUP)
            && !opts.no_subgroups
            && info.subgroup_min_size == info.subgroup_max_size
            && (4..=64).contains(&info.subgroup_min_size)
            && info.subgroup_min_size.is_power_of_two())
        .then_some(info.subgroup_min_size);
        if max_binding < 1 << 16 {
            return Err(Error::Gpu(format!("storage binding limit {max_binding} bytes is too small")));
        }
        // On CPU adapters with subgroups (lavapipe) the tiled matmul's barriers cost more than
        // re-reading weights, so prefill uses the subgroup block mat-vec a few tokens at a
        // time (measured: 9x faster prefill there; on an H100 the tiled matmul is faster).
        // QWEN_WEBGPU_PREFILL=block|tiled overrides the choice (for benchmarking).
        let block_prefill = match std::env::var("QWEN_WEBGPU_PREFILL").as_deref() {
            Ok("block") => true,
            Ok("tiled") => false,
            _ => info.device_type == wgpu::DeviceType::Cpu && subgroup_size.is_some(),
        };
        // CPU adapters load x one SIMD lane at a time, as they load weights: more rows share
        // each x load there (lavapipe: 8 rows and one subgroup a workgroup run q4 mat-vecs
        // 2-3x faster than 4 rows of 64 threads; the H100 was measured at 4). QWEN_WEBGPU_ROWS overrides it (benchmarking).
        let block_rows = match std::env::var("QWEN_WEBGPU_ROWS").ok().and_then(|v| v.parse::<u32>().ok()) {
            Some(n @ 1..=32) => n,
            _ if info.device_type == wgpu::DeviceType::Cpu => 8,
            _ => 4,
        };
        let block_wg = match subgroup_size {
            Some(sg) if info.device_type == wgpu::DeviceType::Cpu => sg,
            _ => crate::ops::WG,
        };
        let norm_wg = if info.device_type == wgpu::DeviceType::Cpu { crate::ops::WG } else { crate::ops::NORM_WG };
        Ok(Gpu {
            norm_wg,
            block_prefill,
            block_rows,
            block_wg,
            device,
            queue,
            info,
            features,
            subgroup_size,
            limits,
            max_binding,
            kernels: RefCell::new(HashMap::new()),
            allocated: std::cell::Cell::new(0),
            fault,
        })
    }

    /// A CPU implementation (lavapipe, SwiftShader): workgroup barriers are costly there.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// One line naming the adapter, for logs and benchmark tables.
    pub fn describe(&self) -> String {
        let sg = match self.subgroup_size {
            Some(n) => format!(", subgroups of {n}"),
            None => String::new(),
        };
        let sg = if self.block_prefill { format!("{sg}, block-mat-vec prefill") } else { sg };
        format!(
            "{} ({:?}, {:?}), max storage binding {} MiB{sg}",
            self.info.name,
            self.info.device_type,
            self.info.backend,
            self.max_binding >> 20
        )
    }

    /// Fail if the device reported an error (validation, out-of-memory, device loss).
    pub fn check(&self) -> Result<()> {
        let f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match &*f {
            Some(msg) => Err(Error::Gpu(msg.clone())),
            None => Ok(()),
        }
    }

    /// A storage buffer of `size` bytes (rounded up to 4), refusing sizes over the binding limit.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        // Whole 16-byte units, so every byte is reachable through a vec4 view.
        let size = size.max(16).div_ceil(16) * 16;
        if size > self.max_binding {
            return Err(Error::Gpu(format!(
                "buffer {label} needs {size} bytes, above this adapter's storage binding limit of {} bytes",
                self.max_binding
            )));
        }
        self.allocated.set(self.allocated.get() + size);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A long-lived MAP_READ buffer for reading results back.
    pub fn readback_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        // Whole 16-byte units, as storage buffers are.
        let size = size.max(16).div_ceil(16) * 16;
        self.allocated.set(self.allocated.get() + size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Exact bytes of the long-lived buffers allocated so far (weights, activations, KV cache,
    /// readback buffers); per-submission uniform arenas and one-off readbacks not included.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.get()
    }

    /// A storage buffer filled with `data`.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let buf = self.storage(label, data.len() as u64)?;
        self.write(&buf, 0, data);
        Ok(buf)
    }

    /// Queue a write of `data` at `offset`, padding the tail to 4 bytes.
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buf, offset, data);
        } else {
            let mut v = data.to_vec();
            v.resize(data.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(buf, offset, &v);
        }
    }

    /// Copy `size` bytes from `src` and read them back to the CPU.
    pub async fn read(&self, src: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let size = size.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        self.map_read(&staging, size).await
    }

    /// Map a MAP_READ buffer (after its copy was submitted) and return its first `size` bytes.
    pub async fn map_read(&self, staging: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        let mapped = rx.await.map_err(|_| Error::Gpu("readback was cancelled (device lost?)".into()))?;
        self.check()?;
        mapped.map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        let out = {
            let view =
                staging.get_mapped_range(0..size).map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Read back an f32 buffer.
    pub async fn read_f32(&self, src: &wgpu::Buffer, offset_elems: usize, n: usize) -> Result<Vec<f32>> {
        let bytes = self.read(src, offset_elems as u64 * 4, n as u64 * 4).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// The compiled kernel for `key`, compiling it on first use.
    pub fn kernel(&self, key: &ShaderKey, bindings: &[Binding]) -> Result<Rc<Kernel>> {
        if let Some(k) = self.kernels.borrow().get(key) {
            return Ok(k.clone());
        }
        let k = Rc::new(Kernel::compile(self, key, bindings)?);
        self.kernels.borrow_mut().insert(key.clone(), k.clone());
        Ok(k)
    }
}
