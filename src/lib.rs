//! qwen-webgpu: Qwen chat models on WebGPU, with our own WGSL kernels driven through wgpu.
//!
//! Data flows one way:
//! bytes (safetensors, config, tokenizer) → [`weights`] (host tensors, one at a time)
//! → [`model::weights`] (f16 matrices on the GPU) → [`model::Qwen::feed`] (the forward pass,
//! kernels in [`ops`]) → logits → [`sampler`] → token ids → text.

pub mod bench;
pub mod clock;
pub mod config;
pub mod error;
pub mod eval;
pub mod files;
pub mod generate;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod sampler;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;

pub use config::{Family, QwenConfig};
pub use error::{Error, Result};
pub use model::{KvFormat, ModelOptions, Output, Qwen, Want};
