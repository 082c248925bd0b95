//! The GPU: adapter, device and queue with the adapter's own limits, plus buffer helpers.
//!
//! Everything is asynchronous so the same code runs in the browser; the native CLI drives it
//! with `pollster::block_on`.

pub mod interface;
pub mod matrix;
pub mod memory;
pub mod profile;
pub mod recorder;
pub mod shaders;
pub mod tuning;

use crate::error::{Error, Result};
pub use matrix::GpuMatrix;
pub use memory::{GpuBuffer, Ledger};
pub use recorder::{Binding, PassEncoding, Recorder};
pub use shaders::{Kernel, ShaderKey};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
pub use tuning::{PrefillKernel, Tuning, TuningOverrides};

/// The bytes [`Gpu::storage`] and [`Gpu::readback_buffer`] allocate for `size`: whole 16-byte
/// units (every byte reachable through a vec4 view), at least one.
pub fn buffer_size(size: u64) -> u64 {
    size.max(16).div_ceil(16) * 16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Lost,
    OutOfMemory,
    Other,
}

/// The first error the device reported outside an error scope.
#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    message: String,
}

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
    /// Kernel geometry to force instead of the adapter's defaults.
    pub tuning: TuningOverrides,
    /// Write every final WGSL source to this folder as it is compiled (debugging).
    pub dump_wgsl: Option<std::path::PathBuf>,
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
    /// Kernel geometry for this adapter (see [`Tuning`]).
    pub tuning: Tuning,
    /// Largest storage buffer binding we use, in bytes: a multiple of 4, at most the
    /// device's `max_storage_buffer_binding_size` and `max_buffer_size`.
    pub max_binding: u64,
    kernels: RefCell<HashMap<ShaderKey, Rc<Kernel>>>,
    /// Every live buffer created through [`Gpu::storage`] / [`Gpu::readback_buffer`].
    ledger: Rc<Ledger>,
    dump_wgsl: Option<std::path::PathBuf>,
    /// First error the device reported outside an error scope (validation, out of memory, loss).
    fault: Arc<Mutex<Option<Fault>>>,
    /// Error scopes (out of memory, validation) popped but not yet read, with what each
    /// covered (see [`Gpu::scoped`]).
    scopes: RefCell<Vec<(String, ScopeResult)>>,
}

type ScopeResult = std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

/// The error scopes [`Gpu::begin_scope`] opened (out of memory, and validation inside it).
pub struct ErrorScope {
    oom: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
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
        let fault = Arc::new(Mutex::new(None::<Fault>));
        {
            let fault = fault.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    let kind = match e {
                        wgpu::Error::OutOfMemory { .. } => FaultKind::OutOfMemory,
                        _ => FaultKind::Other,
                    };
                    *f = Some(Fault { kind, message: e.to_string() });
                }
            }));
        }
        {
            let fault = fault.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
                // A loss overrides an earlier error: nothing on the device survives it.
                if !f.as_ref().is_some_and(|f| f.kind == FaultKind::Lost) {
                    *f = Some(Fault { kind: FaultKind::Lost, message: format!("{reason:?}: {msg}") });
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
        let tuning = Tuning::for_adapter(info.device_type, subgroup_size, &opts.tuning);
        Ok(Gpu {
            tuning,
            device,
            queue,
            info,
            features,
            subgroup_size,
            limits,
            max_binding,
            kernels: RefCell::new(HashMap::new()),
            ledger: Rc::default(),
            dump_wgsl: opts.dump_wgsl.clone(),
            fault,
            scopes: RefCell::new(Vec::new()),
        })
    }

    /// A CPU implementation (lavapipe, SwiftShader): workgroup barriers are costly there.
    pub fn is_cpu(&self) -> bool {
        self.tuning.cpu
    }

    /// One line naming the adapter, for logs and benchmark tables.
    pub fn describe(&self) -> String {
        let sg = match self.subgroup_size {
            Some(n) => format!(", subgroups of {n}"),
            None => String::new(),
        };
        let sg = if self.tuning.block_prefill { format!("{sg}, mat-vec prefill") } else { sg };
        format!(
            "{} ({:?}, {:?}), max storage binding {} MiB{sg}",
            self.info.name,
            self.info.device_type,
            self.info.backend,
            self.max_binding >> 20
        )
    }

    /// Fail if the device reported an error: [`Error::GpuLost`], [`Error::GpuOutOfMemory`], or
    /// [`Error::Gpu`] (validation and the rest).
    pub fn check(&self) -> Result<()> {
        let f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match &*f {
            Some(Fault { kind: FaultKind::Lost, message }) => Err(Error::GpuLost(message.clone())),
            Some(Fault { kind: FaultKind::OutOfMemory, message }) => Err(Error::GpuOutOfMemory(message.clone())),
            Some(Fault { message, .. }) => Err(Error::Gpu(message.clone())),
            None => Ok(()),
        }
    }

    /// Run `f` (allocations, uploads) inside error scopes for out-of-memory and validation
    /// errors: an error it causes is kept with `what()` (e.g. "uploading tensor X") instead of
    /// surfacing later, unattributed. [`Gpu::settle`] reads the scopes back.
    pub fn scoped<T>(&self, what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        let scope = self.begin_scope();
        let out = f();
        self.end_scope(scope, what());
        out
    }

    /// Open the scopes of [`Gpu::scoped`] (in two halves, for callers that need `&mut` access
    /// in between). Scopes nest; close them in reverse order.
    pub fn begin_scope(&self) -> ErrorScope {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        ErrorScope { oom, validation }
    }

    /// Close a scope from [`Gpu::begin_scope`]; its errors are read by [`Gpu::settle`].
    pub fn end_scope(&self, scope: ErrorScope, what: String) {
        let validation = scope.validation.pop();
        let oom = scope.oom.pop();
        let mut scopes = self.scopes.borrow_mut();
        scopes.push((what.clone(), Box::pin(validation)));
        scopes.push((what, Box::pin(oom)));
    }

    /// Wait for every [`Gpu::scoped`] scope so far: the first error is
    /// [`Error::GpuOutOfMemory`] or [`Error::Gpu`] naming what it was doing; then [`Gpu::check`].
    pub async fn settle(&self) -> Result<()> {
        let scopes = std::mem::take(&mut *self.scopes.borrow_mut());
        let mut first = None;
        for (what, result) in scopes {
            if let Some(e) = result.await {
                first.get_or_insert_with(|| match e {
                    wgpu::Error::OutOfMemory { .. } => Error::GpuOutOfMemory(format!("out of GPU memory {what}: {e}")),
                    e => Error::Gpu(format!("{what}: {e}")),
                });
            }
        }
        match first {
            Some(e) => Err(e),
            None => self.check(),
        }
    }

    /// Whether the device was lost (every later call fails; load again on a new device).
    pub fn is_lost(&self) -> bool {
        let f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        f.as_ref().is_some_and(|f| f.kind == FaultKind::Lost)
    }

    /// A storage buffer of `size` bytes (rounded up to 16), refusing sizes over the binding
    /// limit. Counted in [`Gpu::allocated_bytes`] until dropped.
    pub fn storage(&self, label: &str, size: u64) -> Result<GpuBuffer> {
        let size = buffer_size(size);
        if size > self.max_binding {
            return Err(Error::Gpu(format!(
                "buffer {label} needs {size} bytes, above this adapter's storage binding limit of {} bytes",
                self.max_binding
            )));
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        Ok(self.ledger.track(self.raw_buffer(label, size, usage)))
    }

    /// A long-lived MAP_READ buffer for reading results back (counted like [`Gpu::storage`]).
    pub fn readback_buffer(&self, label: &str, size: u64) -> GpuBuffer {
        let size = buffer_size(size);
        self.ledger.track(self.raw_buffer(label, size, Self::READBACK))
    }

    /// A MAP_READ buffer for one readback, not counted (it lives for one call).
    pub fn transient_readback(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.raw_buffer(label, size.div_ceil(4) * 4, Self::READBACK)
    }

    const READBACK: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

    fn raw_buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        })
    }

    /// Exact bytes of the live long-lived buffers (weights, activations, KV cache, readback
    /// buffers): each counted from its creation until it is dropped. Per-submission uniform
    /// arenas and one-off readbacks are not included.
    pub fn allocated_bytes(&self) -> u64 {
        self.ledger.bytes()
    }

    /// How many long-lived buffers are live.
    pub fn allocated_buffers(&self) -> usize {
        self.ledger.buffers()
    }

    /// A storage buffer filled with `data`.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<GpuBuffer> {
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
        let staging = self.transient_readback("readback", size);
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
        let mapped = rx.await;
        self.check()?;
        let mapped = mapped.map_err(|_| Error::GpuLost("a readback was cancelled".into()))?;
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
        let k = Rc::new(Kernel::compile(self, key, bindings, self.dump_wgsl.as_deref())?);
        self.kernels.borrow_mut().insert(key.clone(), k.clone());
        Ok(k)
    }
}
