//! One error type for the whole crate. Every failure a user can cause (bad files, bad
//! parameters, a GPU that is too small) comes back as one of these, never as a panic:
//! in wasm a panic kills the module.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read (missing, unreadable) or written (a closed pipe, a full disk).
    #[error("{}{path}: {source}", if *.writing { "" } else { "cannot read " })]
    Io {
        path: String,
        /// Writing (`stdout: Broken pipe`), not reading (`cannot read config.json: ...`).
        writing: bool,
        #[source]
        source: std::io::Error,
    },
    /// config.json is missing fields, malformed, or describes a model we do not run.
    #[error("config: {0}")]
    Config(String),
    /// The checkpoint bytes are bad: truncated, corrupt header, wrong shapes, missing tensors.
    #[error("weights: {0}")]
    Weights(String),
    /// A tokenizer file is missing, corrupt, or does not fit the model.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The GPU (adapter, device, limits, a kernel) failed or is too small.
    #[error("gpu: {0}")]
    Gpu(String),
    /// The GPU ran out of memory (an allocation or upload failed): a smaller weight format or a
    /// shorter context may fit.
    #[error("gpu out of memory: {0}")]
    GpuOutOfMemory(String),
    /// The GPU device was lost (driver reset, the browser reclaimed it, `destroy()`): nothing on
    /// it survives; load the model again.
    #[error("gpu device lost: {0}")]
    GpuLost(String),
    /// A WGSL kernel failed to compile or validate.
    #[error("shader {name}: {message}")]
    Shader { name: String, message: String },
    /// A request the engine cannot serve: prompt longer than the context, bad token ids,
    /// bad sampling parameters.
    #[error("invalid request: {0}")]
    Request(String),
    /// The KV cache is full.
    #[error("context full: {0}")]
    ContextFull(String),
}

impl Error {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), writing: false, source }
    }

    /// An error writing `path` (stdout, an output file).
    pub fn write(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), writing: true, source }
    }
}
