//! `qwen-webgpu perplexity`: the Qwen report's table 3 (perplexity against context length,
//! plain and with each long-context technique) for any checkpoint. (Being written.)

use clap::Args;
use qwen_webgpu::{Error, Result};
use std::path::PathBuf;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model folder or GGUF file.
    #[arg(long)]
    model: Option<PathBuf>,
}

pub async fn run(a: PerplexityArgs) -> Result<()> {
    let _ = a.model;
    Err(Error::Request("perplexity is not built yet".into()))
}
