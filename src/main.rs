//! `qwen-webgpu`: the native command line. Files → GPU → tokens on stdout.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use clap::{Args, Parser, Subcommand};
    use qwen_webgpu::generate::{generate, GenerateOptions};
    use qwen_webgpu::gpu::GpuOptions;
    use qwen_webgpu::model::{self, read_config};
    use qwen_webgpu::sampler::SamplingParams;
    use qwen_webgpu::{Error, ModelOptions, Qwen, Result};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    #[derive(Parser)]
    #[command(name = "qwen-webgpu", version, about = "Run Qwen models on the GPU with our own WGSL kernels")]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Generate a continuation of a prompt, streaming it to stdout.
        Generate(GenerateArgs),
        /// Print a model's family, config, parameter count and the GPU memory it needs.
        Info {
            #[arg(long)]
            model: PathBuf,
            #[command(flatten)]
            load: LoadArgs,
        },
    }

    #[derive(Args)]
    struct LoadArgs {
        /// KV cache length in tokens (default: the model's context, at most 4096).
        #[arg(long)]
        context: Option<usize>,
        /// Most tokens per forward pass; longer prompts are fed in chunks.
        #[arg(long, default_value_t = 128)]
        max_batch: usize,
        /// Cap the storage binding size (bytes) below the adapter's, to test weight splitting.
        #[arg(long, hide = true)]
        max_binding_bytes: Option<u64>,
    }

    impl LoadArgs {
        fn options(&self) -> (GpuOptions, ModelOptions) {
            (
                GpuOptions { max_binding_bytes: self.max_binding_bytes },
                ModelOptions { context: self.context, max_batch: self.max_batch.max(1) },
            )
        }
    }

    #[derive(Args)]
    struct GenerateArgs {
        /// Model folder: config.json + model.safetensors (or shards with an index).
        #[arg(long)]
        model: PathBuf,
        /// Prompt text (needs a tokenizer in the model folder).
        #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
        prompt: Option<String>,
        /// Prompt as token ids: 1,2,3.
        #[arg(long, value_delimiter = ',')]
        prompt_ids: Option<Vec<u32>>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// 0 = off.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the generated ids (prompt excluded) as one comma-separated line on stdout.
        #[arg(long)]
        print_ids: bool,
        /// Extra stop ids (comma-separated), besides the model's eos ids.
        #[arg(long, value_delimiter = ',')]
        stop_ids: Vec<u32>,
        /// Do not stop at the model's eos ids.
        #[arg(long)]
        ignore_eos: bool,
        #[command(flatten)]
        load: LoadArgs,
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        let r = match cli.cmd {
            Cmd::Generate(a) => pollster::block_on(run_generate(a)),
            Cmd::Info { model, load } => run_info(&model, &load),
        };
        match r {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }
    }

    /// eos ids from config.json and generation_config.json (`eos_token_id`: a number or a list).
    fn eos_ids(dir: &Path) -> Vec<u32> {
        let mut ids = Vec::new();
        for f in ["config.json", "generation_config.json"] {
            let Ok(text) = std::fs::read_to_string(dir.join(f)) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => ids.extend(n.as_u64().map(|n| n as u32)),
                Some(serde_json::Value::Array(a)) => ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|n| n as u32)),
                _ => {}
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    async fn run_generate(a: GenerateArgs) -> Result<()> {
        let sampling = SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        };
        sampling.validate()?;
        let prompt: Vec<u32> = match (&a.prompt_ids, &a.prompt) {
            (Some(ids), _) => ids.clone(),
            (None, Some(_)) => {
                return Err(Error::Tokenizer("--prompt needs a tokenizer; use --prompt-ids".into()));
            }
            (None, None) => unreachable!("clap requires one"),
        };
        let (gpu_opts, opts) = a.load.options();
        let t0 = Instant::now();
        let mut model = Qwen::load_dir(&a.model, &gpu_opts, &opts).await?;
        let load_s = t0.elapsed().as_secs_f64();
        let mut stop_ids = a.stop_ids.clone();
        if !a.ignore_eos {
            stop_ids.extend(eos_ids(&a.model));
            if stop_ids.is_empty() {
                stop_ids.push(151643); // <|endoftext|>
            }
        }
        let gen_opts = GenerateOptions { max_new_tokens: a.max_new_tokens, sampling, stop_ids };
        let t1 = Instant::now();
        let mut first: Option<f64> = None;
        let print_ids = a.print_ids;
        let g = generate(&mut model, &prompt, &gen_opts, &mut |tok| {
            first.get_or_insert_with(|| t1.elapsed().as_secs_f64());
            if !print_ids {
                // Without a tokenizer the stream is the ids themselves.
                print!("{tok} ");
                let _ = std::io::stdout().flush();
            }
            true
        })
        .await?;
        let total = t1.elapsed().as_secs_f64();
        if print_ids {
            let s: Vec<String> = g.tokens.iter().map(|t| t.to_string()).collect();
            println!("{}", s.join(","));
        } else {
            println!();
        }
        let ttft = first.unwrap_or(total);
        let decoded = g.tokens.len().saturating_sub(1);
        eprintln!(
            "[{}] load {:.2}s, prompt {} tokens, first token {:.3}s, {} tokens, decode {:.1} ms/token, finish {:?}",
            model.gpu.describe(),
            load_s,
            prompt.len(),
            ttft,
            g.tokens.len(),
            if decoded > 0 { (total - ttft) * 1000.0 / decoded as f64 } else { 0.0 },
            g.finish
        );
        Ok(())
    }

    fn run_info(dir: &Path, load: &LoadArgs) -> Result<()> {
        let cfg = read_config(dir)?;
        let src = qwen_webgpu::weights::FileSource::open_dir(dir)?;
        model::weights::check_tensors(&cfg, qwen_webgpu::weights::TensorSource::tensors(&src))?;
        let (_, opts) = load.options();
        let (w, s) = model::gpu_bytes(&cfg, &opts);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!("family: {}", cfg.family.name());
        println!("config: {cfg:#?}");
        println!("parameters: {} ({:.3} B)", cfg.parameter_count(), cfg.parameter_count() as f64 / 1e9);
        println!("context: {} tokens, batch {}", opts.context_for(&cfg), opts.max_batch);
        println!("gpu memory: weights {} bytes ({:.1} MiB, f16)", w, mib(w));
        println!("gpu memory: activations + KV cache {} bytes ({:.1} MiB)", s, mib(s));
        println!("gpu memory: total {} bytes ({:.1} MiB)", w + s, mib(w + s));
        Ok(())
    }
}
