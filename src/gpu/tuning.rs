//! Kernel tuning: the workgroup geometry each kernel family uses on this adapter, decided once
//! from the adapter's facts and explicit overrides (the CLI maps its environment variables onto
//! [`TuningOverrides`]; nothing below reads the environment).

/// Threads per workgroup for the 1-D kernels (within every adapter's 256 limit).
pub const WG: u32 = 64;
/// Threads of an RMSNorm workgroup on GPUs (2048 values: two 16-byte loads a thread).
pub const NORM_WG: u32 = 256;

/// The kernel that runs long prefill mat-muls (more than [`crate::ops::SMALL_BATCH_TOKENS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillKernel {
    /// Tiled through workgroup memory.
    Tiled,
    /// The mat-vecs, a few tokens a workgroup.
    Block,
}

/// Choices to force instead of the adapter's defaults (benchmarks compare them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningOverrides {
    /// Rows per workgroup of the block mat-vec (1..=32).
    pub rows: Option<u32>,
    pub prefill: Option<PrefillKernel>,
    /// RMSNorm inside the linear layer after it (Some(true)) or as its own kernel (Some(false))
    /// instead of the adapter's default (fused on GPUs only).
    pub fuse_norm: Option<bool>,
    /// silu(gate) * up in the gate/up projection's kernel (Some(true), the default) or a kernel
    /// of its own (Some(false)).
    pub fuse_swiglu: Option<bool>,
}

/// Every geometry choice, as one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// A CPU implementation (lavapipe, SwiftShader): workgroup barriers are costly there.
    pub cpu: bool,
    /// Prefill through the mat-vecs ([`crate::ops::BLOCK_TOKENS`] tokens a workgroup) at every
    /// length, rather than the tiled matmul above [`crate::ops::SMALL_BATCH_TOKENS`].
    pub block_prefill: bool,
    /// Rows per workgroup of the block mat-vec: each block of x is loaded once for this many.
    pub block_rows: u32,
    /// Threads per workgroup of the block mat-vec: the subgroup size on CPU adapters (one
    /// SIMD vector a workgroup, reduced without barriers), else [`WG`].
    pub block_wg: u32,
    /// Threads of an RMSNorm workgroup: [`NORM_WG`] on GPUs (a row in one round of loads),
    /// [`WG`] on CPU adapters (which pay for each barrier of the wider reduction instead).
    pub norm_wg: u32,
    /// Threads of the one sampling workgroup: 256 on GPUs, 64 on CPU adapters.
    pub sample_wg: u32,
    /// RMSNorm inside the linear layer after it (one dispatch fewer each) rather than its own
    /// kernel: GPUs, not CPU adapters.
    pub fused_norm: bool,
    /// The gate/up projection's epilogue computes silu(gate) * up (where the matrix is in one
    /// buffer) rather than a kernel after it.
    pub fused_swiglu: bool,
}

impl Tuning {
    /// The defaults for an adapter of `device_type` with fixed-size subgroups of
    /// `subgroup_size` (None: no subgroup kernels), with `overrides` applied.
    pub fn for_adapter(device_type: wgpu::DeviceType, subgroup_size: Option<u32>, overrides: &TuningOverrides) -> Self {
        let cpu = device_type == wgpu::DeviceType::Cpu;
        // On CPU adapters the tiled matmul's barriers cost more than re-reading weights, so
        // prefill uses the mat-vecs a few tokens at a time (lavapipe's subgroup block mat-vec:
        // 9x faster prefill; without subgroups, as SwiftShader, the barrier-free one-row
        // mat-vec). On an H100 the tiled matmul was faster for long prompts.
        let block_prefill = match overrides.prefill {
            Some(k) => k == PrefillKernel::Block,
            None => cpu,
        };
        // CPU adapters load x one SIMD lane at a time, as they load weights: more rows share
        // each x load there (lavapipe: 8 rows and one subgroup a workgroup run q4 mat-vecs
        // 2-3x faster than 4 rows of 64 threads; the H100 was measured at 4).
        let block_rows = match overrides.rows {
            Some(n @ 1..=32) => n,
            _ if cpu => 8,
            _ => 4,
        };
        let block_wg = match subgroup_size {
            Some(sg) if cpu => sg,
            _ => WG,
        };
        Tuning {
            cpu,
            block_prefill,
            block_rows,
            block_wg,
            norm_wg: if cpu { WG } else { NORM_WG },
            sample_wg: if cpu { 64 } else { 256 },
            // On CPU adapters the fused norm likely costs more than the kernel it saves: every
            // workgroup multiplies its x by the norm weight and sums its squares again, and
            // llvmpipe / SwiftShader pay for each of those loads, while a dispatch costs them
            // little (lavapipe, full shape, q4: decode 599-706 ms/token fused against 544-625
            // unfused, within that machine's noise). GPUs read the weight from cache and are
            // bound by bandwidth.
            fused_norm: overrides.fuse_norm.unwrap_or(!cpu),
            fused_swiglu: overrides.fuse_swiglu.unwrap_or(true),
        }
    }
}
