//! `qwen-webgpu`: the native command line. Files → GPU → tokens on stdout.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    mod perplexity;

    use clap::{Args, Parser, Subcommand};
    use qwen_webgpu::generate::{generate, GenerateOptions, Generator};
    use qwen_webgpu::gpu::GpuOptions;
    use qwen_webgpu::model::weights::Encoder;
    use qwen_webgpu::model::{self, read_config, KvFormat};
    use qwen_webgpu::sampler::SamplingParams;
    use qwen_webgpu::tokenizer::{
        chat_prompt, prompt_budget, ChatMessage, ChatRequest, ChatTemplate, ReplyDelta, ReplyFormat, ReplyOptions,
        ReplyParser, TextStream, Tokenizer,
    };
    use qwen_webgpu::weights::quant::{self, WeightFormat};
    use qwen_webgpu::weights::{FileSource, TensorSource};
    use qwen_webgpu::{Error, ModelOptions, Qwen, Result};
    use std::io::{BufRead, Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    /// `print!` that returns an error (a closed pipe, a full disk) instead of panicking.
    macro_rules! out {
        ($($t:tt)*) => {
            write_stdout(format_args!($($t)*))
        };
    }
    /// `println!` likewise.
    macro_rules! outln {
        () => {
            write_stdout(format_args!("\n"))
        };
        ($($t:tt)*) => {
            write_stdout(format_args!("{}\n", format_args!($($t)*)))
        };
    }
    /// `eprint!` that never panics: a closed stderr only loses the message.
    macro_rules! err {
        ($($t:tt)*) => {{
            let _ = write!(std::io::stderr(), $($t)*);
        }};
    }
    /// `eprintln!` likewise.
    macro_rules! errln {
        () => {{
            let _ = writeln!(std::io::stderr());
        }};
        ($($t:tt)*) => {{
            let _ = writeln!(std::io::stderr(), $($t)*);
        }};
    }

    fn write_stdout(args: std::fmt::Arguments) -> Result<()> {
        let mut o = std::io::stdout().lock();
        o.write_fmt(args).and_then(|_| o.flush()).map_err(|e| Error::write("stdout", e))
    }

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
        /// Interactive multi-turn chat on stdin/stdout (ChatML), streaming each reply.
        Chat(ChatArgs),
        /// Text on stdin → comma-separated ids on stdout (or back with --decode).
        Tokenize {
            /// tokenizer.json or qwen.tiktoken.
            #[arg(long)]
            tokenizer: PathBuf,
            /// Read comma-separated ids, print the text.
            #[arg(long)]
            decode: bool,
        },
        /// Measure prefill/decode speed, memory and the decode roofline fraction.
        Bench(BenchArgs),
        /// Perplexity of a long text at several context lengths, plain and with each
        /// long-context technique (dynamic NTK, logN, window attention): the Qwen report's
        /// table 3 for any checkpoint.
        Perplexity(perplexity::PerplexityArgs),
        /// Print a model's family, config, parameter count and the GPU memory it needs.
        Info {
            #[arg(long)]
            model: PathBuf,
            #[command(flatten)]
            load: LoadArgs,
        },
        /// Write a pre-quantized copy of a model folder (q4: about 3.5x smaller than bf16,
        /// q8: about 1.9x), which loads without re-quantizing.
        Quantize {
            /// Source model folder (config.json + bf16/f16/f32 safetensors).
            #[arg(long)]
            model: PathBuf,
            /// Output folder (created; must not already hold a checkpoint).
            #[arg(long)]
            out: PathBuf,
            /// q4 or q8.
            #[arg(long)]
            format: String,
            /// Largest shard in bytes of tensor data (larger outputs are sharded with an index).
            #[arg(long, default_value_t = qwen_webgpu::weights::quantize::DEFAULT_MAX_SHARD_BYTES, hide = true)]
            max_shard_bytes: u64,
        },
    }

    #[derive(Args)]
    struct LoadArgs {
        /// KV cache length in tokens (default: the model's context, at most 4096; Qwen v1,
        /// whose dynamic NTK and logN run past its trained length, the longest of 32768,
        /// 16384 and 8192 that fits --max-gpu-bytes).
        #[arg(long)]
        context: Option<usize>,
        /// GPU memory (bytes) the default --context of a long-context model may fill: weights,
        /// KV cache and activations (default 4 GiB).
        #[arg(long)]
        max_gpu_bytes: Option<u64>,
        /// Layer-wise window attention: W (every layer sees its last W keys), W0,W1,... (one
        /// per layer, 0 = the whole cache), or pow2:MIN:K (layer i gets MIN*2^(i*K)). Off by
        /// default, as the released checkpoints run.
        #[arg(long)]
        window: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    }

    /// How a loaded model runs: batch, formats, encoder, GPU switches (the load options that
    /// `perplexity` shares; it chooses its own context and windows).
    #[derive(Args)]
    struct RunArgs {
        /// Most tokens per forward pass; longer prompts are fed in chunks.
        #[arg(long, default_value_t = 128)]
        max_batch: usize,
        /// How weights are stored on the GPU: auto (f16 for a plain checkpoint, the folder's
        /// own format for a pre-quantized one), f16, q8 or q4 (quantized while loading).
        #[arg(long, default_value = "auto")]
        weights: String,
        /// KV cache format: f32 (as the reference keeps it), f16 (half the memory) or q8 (a quarter).
        #[arg(long, default_value = "f32")]
        kv_cache: String,
        /// Where a plain checkpoint's matrices are encoded into --weights: gpu, cpu, or auto
        /// (the GPU, unless the adapter is a CPU implementation). Both give the same bytes.
        #[arg(long, default_value = "auto")]
        encoder: String,
        /// Cap the storage binding size (bytes) below the adapter's, to test weight splitting.
        #[arg(long, hide = true)]
        max_binding_bytes: Option<u64>,
        /// Do not use subgroup kernels even where the adapter has subgroups.
        #[arg(long)]
        no_subgroups: bool,
    }

    impl RunArgs {
        /// The GPU options and the model options these settle (context and windows left at
        /// their defaults), for the model at `model` (None: a synthesised checkpoint).
        fn options(&self, model: Option<&Path>) -> Result<(GpuOptions, ModelOptions)> {
            if self.max_batch == 0 || self.max_batch > MAX_CONTEXT {
                return Err(Error::Request(format!(
                    "--max-batch {}: want a whole number from 1 to {MAX_CONTEXT}",
                    self.max_batch
                )));
            }
            Ok((
                GpuOptions {
                    max_binding_bytes: self.max_binding_bytes,
                    no_subgroups: self.no_subgroups,
                    ..gpu_options_from_env()?
                },
                ModelOptions {
                    max_batch: self.max_batch,
                    weights: weight_format(&self.weights, model)?,
                    kv: KvFormat::parse(&self.kv_cache)?,
                    encoder: Encoder::parse(&self.encoder)?,
                    ..Default::default()
                },
            ))
        }
    }

    /// The largest `--context` / `--max-batch` (the browser's limit too: 2^20 tokens).
    const MAX_CONTEXT: usize = 1 << 20;

    /// The weight format for a model folder: `requested` (`auto`, f16, q8, q4) against the
    /// folder's own (a pre-quantized folder loads only in its format). Reads headers only.
    fn weight_format(requested: &str, dir: Option<&Path>) -> Result<WeightFormat> {
        let requested = WeightFormat::parse_request(requested)?;
        let stored = match dir {
            Some(dir) => stored_format(dir)?,
            None => None,
        };
        quant::resolve_format(requested, stored)
    }

    /// The format a model folder is pre-quantized to (None: a plain checkpoint).
    fn stored_format(dir: &Path) -> Result<Option<WeightFormat>> {
        if model::is_gguf(dir) {
            return Ok(None);
        }
        let src = FileSource::open_dir(dir)?;
        quant::stored_format(src.metadata())
    }

    /// The environment's say in how the GPU runs, read here at the CLI's edge and nowhere deeper:
    /// `QWEN_WEBGPU_ROWS=N` (rows per workgroup of the block mat-vec, 1..=32),
    /// `QWEN_WEBGPU_PREFILL=block|tiled` (the prefill kernel), `QWEN_WEBGPU_FUSE=norm,swiglu` and
    /// `QWEN_WEBGPU_UNFUSE=norm,swiglu` (force RMSNorm, or silu(gate) * up, into the linear
    /// kernel or out of it, for before/after comparisons), `QWEN_WEBGPU_DUMP_WGSL=DIR`
    /// (write every final shader to DIR).
    fn gpu_options_from_env() -> Result<GpuOptions> {
        use qwen_webgpu::gpu::{PrefillKernel, TuningOverrides};
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let rows = match var("QWEN_WEBGPU_ROWS") {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n @ 1..=32) => Some(n),
                _ => return Err(Error::Request(format!("QWEN_WEBGPU_ROWS={v}: want a whole number from 1 to 32"))),
            },
        };
        let prefill = match var("QWEN_WEBGPU_PREFILL").as_deref() {
            None => None,
            Some("block") => Some(PrefillKernel::Block),
            Some("tiled") => Some(PrefillKernel::Tiled),
            Some(v) => return Err(Error::Request(format!("QWEN_WEBGPU_PREFILL={v}: want block or tiled"))),
        };
        // QWEN_WEBGPU_FUSE / QWEN_WEBGPU_UNFUSE: fusions to force on / off (norm, swiglu).
        let (mut fuse_norm, mut fuse_swiglu) = (None, None);
        for (name, on) in [("QWEN_WEBGPU_FUSE", true), ("QWEN_WEBGPU_UNFUSE", false)] {
            for part in var(name).iter().flat_map(|v| v.split(',')) {
                match part.trim() {
                    "norm" => fuse_norm = Some(on),
                    "swiglu" => fuse_swiglu = Some(on),
                    v => return Err(Error::Request(format!("{name}: unknown fusion {v:?} (want norm and/or swiglu)"))),
                }
            }
        }
        Ok(GpuOptions {
            tuning: TuningOverrides { rows, prefill, fuse_norm, fuse_swiglu },
            dump_wgsl: var("QWEN_WEBGPU_DUMP_WGSL").map(Into::into),
            ..Default::default()
        })
    }

    impl LoadArgs {
        fn options(&self, dir: &Path) -> Result<(GpuOptions, ModelOptions)> {
            // As the browser's loader: sizes that no GPU holds are refused here, not wrapped later.
            if let Some(c) = self.context.filter(|&c| c == 0 || c > MAX_CONTEXT) {
                return Err(Error::Request(format!("--context {c}: want a whole number from 1 to {MAX_CONTEXT}")));
            }
            let (gpu, run) = self.run.options(Some(dir))?;
            let model = ModelOptions {
                context: self.context,
                window: model::WindowSpec::parse(self.window.as_deref().unwrap_or(""))?,
                max_gpu_bytes: self.max_gpu_bytes.filter(|&b| b > 0),
                ..run
            };
            Ok((gpu, model))
        }
    }

    #[derive(Args)]
    struct SamplingArgs {
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
    }

    impl SamplingArgs {
        fn params(&self) -> Result<SamplingParams> {
            let p = SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Default::default()
            };
            p.validate()?;
            Ok(p)
        }
    }

    #[derive(Args)]
    struct BenchArgs {
        /// Model folder; without it, a Qwen-1.8B-shaped checkpoint with random weights.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Layers of the synthesised model (default 24, as Qwen-1.8B).
        #[arg(long)]
        layers: Option<usize>,
        /// Vocabulary of the synthesised model (default 151936; smaller for quick runs).
        #[arg(long)]
        vocab: Option<usize>,
        /// Prompt lengths to time prefill on.
        #[arg(long, value_delimiter = ',', default_value = "128,1024")]
        prefill: Vec<usize>,
        /// Cache lengths to time decoding at.
        #[arg(long, value_delimiter = ',', default_value = "128,2048")]
        decode_at: Vec<usize>,
        /// Tokens decoded per measurement.
        #[arg(long, default_value_t = 16)]
        decode_tokens: usize,
        /// KV cache length to allocate (default: just what the measurements need).
        #[arg(long)]
        context: Option<usize>,
        /// How weights are stored on the GPU: auto (f16, or a pre-quantized --model's own), f16, q8 or q4.
        #[arg(long, default_value = "auto")]
        weights: String,
        /// KV cache format: f32, f16 or q8.
        #[arg(long, default_value = "f32")]
        kv_cache: String,
        /// Write the report as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 128)]
        max_batch: usize,
        #[arg(long, hide = true)]
        max_binding_bytes: Option<u64>,
        /// Do not use subgroup kernels even where the adapter has subgroups.
        #[arg(long)]
        no_subgroups: bool,
        /// Also time every kernel of the decode at the first --decode-at context (GPU
        /// timestamps between dispatches; native adapters that offer them).
        #[arg(long)]
        profile: bool,
        /// Decode by sampling on the GPU at this temperature (0: the argmax), as generation does.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// With --temperature: keep the k most likely tokens (0: off).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// With --temperature: nucleus sampling (1: off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Layer-wise window attention, as the load option --window (default off).
        #[arg(long, default_value = "")]
        window: String,
    }

    #[derive(Args)]
    struct ChatArgs {
        #[arg(long)]
        model: PathBuf,
        /// System prompt (default: the chat template's own; Qwen v1's ChatML adds "You are a
        /// helpful assistant.").
        #[arg(long)]
        system: Option<String>,
        /// OpenAI tool definitions (a JSON array of {type: "function", function: {name,
        /// description, parameters}}): the model may call them; you type each call's result.
        #[arg(long)]
        tools: Option<PathBuf>,
        #[arg(long, default_value_t = 512)]
        max_new_tokens: usize,
        /// After each reply, one line on stderr: `[usage] prompt_tokens=N cached_tokens=N
        /// prefilled_tokens=N dropped_tokens=N completion_tokens=N continuations=N
        /// finish_reason=stop|length|tool_calls` (cached: prompt tokens reused from the KV cache;
        /// prefilled: tokens fed before decoding, re-prefills after the reply filled the context
        /// included; dropped: tokens of older messages left out of the last prompt).
        #[arg(long)]
        usage: bool,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        load: LoadArgs,
    }

    #[derive(Args)]
    struct GenerateArgs {
        /// Model folder (config.json + model.safetensors, or shards with an index) or a .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// Prompt text (needs a tokenizer in the model folder).
        #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
        prompt: Option<String>,
        /// Prompt as token ids: 1,2,3.
        #[arg(long, value_delimiter = ',')]
        prompt_ids: Option<Vec<u32>>,
        /// Wrap --prompt in the model's chat template (with --system).
        #[arg(long, requires = "prompt")]
        chat: bool,
        /// System prompt for --chat (default: the template's own).
        #[arg(long)]
        system: Option<String>,
        /// End the text at this string (not printed; repeat for several), matched across
        /// tokens. Needs a tokenizer.
        #[arg(long)]
        stop: Vec<String>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
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
            Cmd::Chat(a) => pollster::block_on(run_chat(a)),
            Cmd::Bench(a) => pollster::block_on(run_bench(a)),
            Cmd::Perplexity(a) => pollster::block_on(perplexity::run(a)),
            Cmd::Tokenize { tokenizer, decode } => run_tokenize(&tokenizer, decode),
            Cmd::Info { model, load } => run_info(&model, &load),
            Cmd::Quantize { model, out, format, max_shard_bytes } => {
                run_quantize(&model, &out, &format, max_shard_bytes)
            }
        };
        match r {
            Ok(()) => 0,
            Err(e) => {
                errln!("error: {e}");
                1
            }
        }
    }

    /// eos ids from config.json and generation_config.json (`eos_token_id`: a number or a
    /// list; one above u32 is an error, not truncated), or a GGUF file's
    /// `tokenizer.ggml.eos_token_id`.
    fn eos_ids(dir: &Path) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if model::is_gguf(dir) {
            // A GGUF's eos is in its metadata, where llama.cpp's converter writes
            // generation_config.json's and the tokenizer's.
            let f = qwen_webgpu::weights::gguf_model::GgufFile::open(dir)?;
            let eos = f.model.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.as_u64());
            ids.extend(eos.and_then(|e| u32::try_from(e).ok()));
            return Ok(ids);
        }
        for f in ["config.json", "generation_config.json"] {
            let path = dir.join(f);
            if !path.exists() {
                continue;
            }
            let text = qwen_webgpu::files::read_text_capped(&path, qwen_webgpu::files::CONFIG_CAP)?;
            ids.extend(qwen_webgpu::generate::eos_ids_in(&text).map_err(|e| Error::Config(format!("{f}: {e}")))?);
        }
        Ok(ids)
    }

    /// The model folder's tokenizer, checked against the model's vocabulary.
    fn model_tokenizer(dir: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let tok = find_tokenizer(dir)?
            .ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer.json or qwen.tiktoken", dir.display())))?;
        tok.check_fits(vocab_size)?;
        Ok(tok)
    }

    /// A model folder's tokenizer file, or a GGUF file's vocabulary (None: the folder has none).
    fn find_tokenizer(path: &Path) -> Result<Option<Tokenizer>> {
        if model::is_gguf(path) {
            let f = qwen_webgpu::weights::gguf_model::GgufFile::open(path)?;
            return Tokenizer::from_gguf(&f.model.metadata).map(Some);
        }
        Tokenizer::from_model_dir(path)
    }

    /// Streams text to stdout as tokens arrive, skipping control tokens.
    /// With a reply parser: content to stdout, reasoning to stderr, tool calls kept.
    struct Printer {
        tok: Option<Tokenizer>,
        stream: Option<TextStream>,
        reply: Option<ReplyParser>,
        /// Parse but print nothing (--print-ids prints the ids instead).
        quiet: bool,
    }

    impl Printer {
        fn new(tok: Option<&Tokenizer>) -> Self {
            Printer { tok: tok.cloned(), stream: tok.map(TextStream::new), reply: None, quiet: false }
        }
        fn with_reply(tok: &Tokenizer, opts: ReplyOptions) -> Result<Self> {
            Ok(Printer { reply: Some(ReplyParser::new(tok, opts)?), ..Printer::new(Some(tok)) })
        }
        /// Whether a stop string has ended the text.
        fn stopped(&self) -> bool {
            self.reply.as_ref().is_some_and(|r| r.stopped())
        }
        fn show(d: ReplyDelta) -> Result<()> {
            if let Some(r) = d.reasoning_content {
                err!("{r}");
            }
            if let Some(c) = d.content {
                out!("{c}")?;
                std::io::stdout().flush().map_err(|e| Error::write("stdout", e))?;
            }
            Ok(())
        }
        fn push(&mut self, id: u32) -> Result<()> {
            if let Some(r) = self.reply.as_mut() {
                let d = r.push(id)?;
                return if self.quiet { Ok(()) } else { Self::show(d) };
            }
            if self.quiet {
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            match (&self.tok, &mut self.stream) {
                (Some(tok), Some(stream)) => {
                    if !tok.is_special(id) {
                        if let Some(text) = stream.push(id)? {
                            out.write_all(text.as_bytes()).map_err(|e| Error::write("stdout", e))?;
                        }
                    }
                }
                // Without a tokenizer the stream is the ids themselves.
                _ => write!(out, "{id} ").map_err(|e| Error::write("stdout", e))?,
            }
            out.flush().map_err(|e| Error::write("stdout", e))
        }
        fn finish(&mut self) -> Result<()> {
            if let Some(r) = self.reply.as_mut() {
                Self::show(r.finish())?;
            } else if let Some(text) = self.stream.as_mut().and_then(|s| s.finish()) {
                out!("{text}")?;
            }
            outln!()
        }
    }

    /// The model's chat template: a GGUF file's `tokenizer.chat_template`, a folder's
    /// chat_template.jinja or tokenizer_config.json, else Qwen v1's ChatML.
    fn find_template(path: &Path) -> Result<ChatTemplate> {
        if model::is_gguf(path) {
            let f = qwen_webgpu::weights::gguf_model::GgufFile::open(path)?;
            return match Tokenizer::gguf_chat_template(&f.model.metadata) {
                Some(src) => ChatTemplate::jinja(&src, None, None),
                None => Ok(ChatTemplate::chatml()),
            };
        }
        ChatTemplate::from_model_dir(path)
    }

    async fn run_generate(a: GenerateArgs) -> Result<()> {
        let sampling = a.sampling.params()?;
        let cfg = read_config(&a.model)?;
        let (gpu_opts, opts) = a.load.options(&a.model)?;
        if a.chat && a.prompt_ids.is_some() {
            return Err(Error::Request(
                "--chat builds the prompt from --prompt text; it cannot take --prompt-ids".into(),
            ));
        }
        let tok = match (&a.prompt, &a.prompt_ids) {
            (Some(_), _) => Some(model_tokenizer(&a.model, cfg.vocab_size)?),
            _ => find_tokenizer(&a.model).ok().flatten().filter(|t| t.check_fits(cfg.vocab_size).is_ok()),
        };
        let prompt: Vec<u32> = match (&a.prompt_ids, &a.prompt, &tok) {
            (Some(ids), _, _) => ids.clone(),
            (None, Some(text), Some(tok)) if a.chat => {
                let mut messages: Vec<ChatMessage> = a.system.iter().map(ChatMessage::system).collect();
                messages.push(ChatMessage::user(text.clone()));
                let template = find_template(&a.model)?;
                let budget = prompt_budget(opts.context_for(&cfg), a.max_new_tokens);
                chat_prompt(tok, &template, &ChatRequest::new(&messages), budget)?.ids
            }
            (None, Some(text), Some(tok)) => tok.encode(text)?,
            _ => return Err(Error::Request("give --prompt or --prompt-ids".into())),
        };
        let t0 = Instant::now();
        let mut model = Qwen::load_dir(&a.model, &gpu_opts, &opts).await?;
        // Text output never picks an id the tokenizer cannot decode (a padding row of the
        // embedding); --print-ids keeps the whole vocabulary, as a reference model would.
        model.set_token_limit(tok.as_ref().filter(|_| !a.print_ids).map(|t| t.vocab_size()))?;
        let load_s = t0.elapsed().as_secs_f64();
        let chat_stops = match (&tok, a.chat) {
            (Some(t), true) => t.stop_ids(),
            _ => Vec::new(),
        };
        let stop_ids = qwen_webgpu::generate::stop_ids(&a.stop_ids, &eos_ids(&a.model)?, &chat_stops, a.ignore_eos);
        let gen_opts = GenerateOptions { max_new_tokens: a.max_new_tokens, sampling, stop_ids, logprobs: None };
        let t1 = Instant::now();
        let mut first: Option<f64> = None;
        let mut printer = match (&tok, a.stop.is_empty()) {
            (_, true) => Printer::new(tok.as_ref()),
            (Some(t), false) => Printer::with_reply(t, ReplyOptions { stop: a.stop.clone(), ..Default::default() })?,
            (None, false) => return Err(Error::Request("--stop needs a tokenizer in the model folder".into())),
        };
        printer.quiet = a.print_ids;
        let mut failed = None;
        let print_ids = a.print_ids;
        let g = generate(&mut model, &prompt, &gen_opts, &mut |id| {
            first.get_or_insert_with(|| t1.elapsed().as_secs_f64());
            if let Err(e) = printer.push(id) {
                failed = Some(e);
                return false;
            }
            // --print-ids prints the ids up to the one that completed a stop string.
            !printer.stopped()
        })
        .await?;
        let stopped = printer.stopped();
        if let Some(e) = failed {
            return Err(e);
        }
        let total = t1.elapsed().as_secs_f64();
        if print_ids {
            let s: Vec<String> = g.tokens.iter().map(|t| t.to_string()).collect();
            outln!("{}", s.join(","))?;
        } else {
            printer.finish()?;
        }
        let finish = if stopped { "Stop (a --stop string)".to_string() } else { format!("{:?}", g.finish) };
        let ttft = first.unwrap_or(total);
        let decoded = g.tokens.len().saturating_sub(1);
        errln!(
            "[{}] load {:.2}s, prompt {} tokens, first token {:.3}s, {} tokens, decode {:.1} ms/token, finish {}",
            model.gpu.describe(),
            load_s,
            prompt.len(),
            ttft,
            g.tokens.len(),
            if decoded > 0 { (total - ttft) * 1000.0 / decoded as f64 } else { 0.0 },
            finish
        );
        Ok(())
    }

    async fn run_chat(a: ChatArgs) -> Result<()> {
        use qwen_webgpu::generate::FinishReason;
        use qwen_webgpu::tokenizer::{continue_prompt, ChatPrompt};
        let sampling = a.sampling.params()?;
        let cfg = read_config(&a.model)?;
        let (gpu_opts, opts) = a.load.options(&a.model)?;
        let tok = model_tokenizer(&a.model, cfg.vocab_size)?;
        let template = find_template(&a.model)?;
        let tools: Vec<serde_json::Value> = match &a.tools {
            None => Vec::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e))?;
                serde_json::from_str(&text).map_err(|e| {
                    Error::Request(format!("{}: not a JSON array of OpenAI tool objects: {e}", p.display()))
                })?
            }
        };
        let mut model = Qwen::load_dir(&a.model, &gpu_opts, &opts).await?;
        // Never pick an id the tokenizer cannot decode (a padding row of the embedding).
        model.set_token_limit(Some(tok.vocab_size()))?;
        let stop_ids = qwen_webgpu::generate::stop_ids(&[], &eos_ids(&a.model)?, &tok.stop_ids(), false);
        let system: Vec<ChatMessage> = a.system.iter().map(ChatMessage::system).collect();
        let mut messages = system.clone();
        errln!("[{}] chatting with {}; /reset starts over, Ctrl-D quits", model.gpu.describe(), a.model.display());
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        // What the KV cache holds: each turn prefills only what follows it (the new turn).
        let mut cached: Vec<u32> = Vec::new();
        let mut raw = Vec::new();
        let mut read_line = |prompt: &str| -> Result<Option<String>> {
            loop {
                err!("{prompt}");
                raw.clear();
                if input.read_until(b'\n', &mut raw).map_err(|e| Error::io("stdin", e))? == 0 {
                    return Ok(None);
                }
                // A line that is not UTF-8 is refused, and the chat goes on.
                match std::str::from_utf8(&raw) {
                    Ok(line) => return Ok(Some(line.trim_end().to_string())),
                    Err(_) => errln!("error: that line is not valid UTF-8 text; nothing was sent"),
                }
            }
        };
        let mut turn = 0u64;
        // How many messages the last note said were left out.
        let mut noted_dropped = 0;
        'chat: while let Some(line) = read_line("> ")? {
            if line == "/reset" {
                messages = system.clone();
                model.reset();
                cached.clear();
                noted_dropped = 0;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            messages.push(ChatMessage::user(line));
            let user_at = messages.len() - 1;
            // One reply, then as long as it calls tools: their results (typed by the user),
            // and the model's next reply.
            loop {
                turn += 1;
                let gen_opts = GenerateOptions {
                    max_new_tokens: a.max_new_tokens,
                    sampling: sampling.clone(),
                    stop_ids: stop_ids.clone(),
                    logprobs: None,
                };
                let req = ChatRequest { messages: &messages, tools: &tools, ..Default::default() };
                // A message too long for the context is refused, and the chat goes on without it.
                // Older turns are left out in blocks (chat_prompt), so the cache stays reusable.
                let prompt = chat_prompt(&tok, &template, &req, prompt_budget(model.context(), a.max_new_tokens));
                let (started, reply) = match prompt {
                    Ok(p) => {
                        let format = if tools.is_empty() { ReplyFormat::Plain } else { p.reply_format };
                        let mut stop = Vec::new();
                        if format == ReplyFormat::ReAct {
                            stop.push("Observation:".to_string());
                        }
                        let ropts = ReplyOptions {
                            stop,
                            format,
                            prefill: p.prefill.clone(),
                            reasoning: !template.is_fallback(),
                            id_prefix: format!("call_{turn}_"),
                        };
                        let started = Generator::start_reusing(&mut model, &cached, &p.ids, gen_opts).await;
                        (started.map(|(g, reused)| (g, reused, p)), Some(ropts))
                    }
                    Err(e) => (Err(e), None),
                };
                let (mut g, reused, p) = match started {
                    Ok(r) => r,
                    Err(e @ (Error::ContextFull(_) | Error::Request(_))) => {
                        errln!("error: {e}; nothing was sent");
                        messages.truncate(user_at);
                        cached.truncate(model.pos());
                        continue 'chat;
                    }
                    Err(e) => return Err(e),
                };
                let mut note = |p: &ChatPrompt| {
                    // Once per change of what is left out, not every turn.
                    if p.dropped_messages != noted_dropped {
                        noted_dropped = p.dropped_messages;
                        if p.dropped_messages > 0 {
                            errln!("[older messages left out to fit the context: {} tokens]", p.dropped_tokens);
                        }
                    }
                };
                note(&p);
                let (prompt_tokens, mut dropped) = (p.ids.len(), p.dropped_tokens);
                let mut prefilled = p.ids.len() - reused;
                let mut continuations = 0;
                let mut printer = Printer::with_reply(&tok, reply.unwrap_or_default())?;
                let mut later_note = None;
                loop {
                    while let Some(id) = g.next(&mut model).await? {
                        printer.push(id)?;
                        if printer.stopped() {
                            g.abort();
                        }
                    }
                    // A reply that filled the context goes on after a shorter prompt (more old
                    // turns left out), reusing the cache up to where the two differ.
                    if g.finish_reason() != Some(FinishReason::ContextFull) {
                        break;
                    }
                    let done = g.tokens().len();
                    let remaining = a.max_new_tokens.saturating_sub(done);
                    let Some(q) = continue_prompt(&tok, &template, &req, done, model.context(), remaining)? else {
                        break;
                    };
                    let kept = g.resume(&mut model, &q.ids).await?;
                    prefilled += q.ids.len() + done - kept;
                    continuations += 1;
                    dropped = q.dropped_tokens;
                    later_note = Some(q);
                }
                printer.finish()?;
                if let Some(q) = later_note {
                    note(&q);
                }
                cached = g.sequence()[..model.pos()].to_vec();
                let m = printer.reply.as_ref().map(|r| r.message()).unwrap_or_default();
                let calls = m.tool_calls.clone();
                if a.usage {
                    let finish = match g.finish_reason() {
                        _ if !calls.is_empty() => "tool_calls",
                        Some(FinishReason::Length | FinishReason::ContextFull) => "length",
                        _ => "stop",
                    };
                    errln!(
                        "[usage] prompt_tokens={prompt_tokens} cached_tokens={reused} prefilled_tokens={prefilled} \
                         dropped_tokens={dropped} completion_tokens={} continuations={continuations} \
                         finish_reason={finish}",
                        g.tokens().len()
                    );
                }
                messages.push(ChatMessage {
                    reasoning_content: m.reasoning_content,
                    tool_calls: m.tool_calls,
                    ..ChatMessage::assistant(m.content.unwrap_or_default())
                });
                if calls.is_empty() {
                    break;
                }
                for c in calls {
                    errln!("[tool call {}] {}({})", c.id, c.function.name, c.function.arguments);
                    let Some(result) = read_line(&format!("result of {}> ", c.function.name))? else { break 'chat };
                    messages.push(ChatMessage::tool(c.id, result));
                }
            }
        }
        Ok(())
    }

    async fn run_bench(a: BenchArgs) -> Result<()> {
        use qwen_webgpu::bench;
        // The same options, defaults and sizing as the browser's benchmark().
        let spec = bench::SynthBench {
            layers: a.layers,
            vocab: a.vocab,
            weights: a.weights,
            kv_cache: a.kv_cache,
            context: a.context,
            prefill: a.prefill,
            decode_at: a.decode_at,
            decode_tokens: a.decode_tokens,
            max_batch: a.max_batch,
            max_binding_bytes: a.max_binding_bytes,
            profile: a.profile,
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            window: a.window.clone(),
        };
        spec.check()?;
        let stored = match &a.model {
            Some(dir) => stored_format(dir)?,
            None => None,
        };
        let opts = spec.model_options(stored)?;
        let gpu = qwen_webgpu::gpu::Gpu::new(&GpuOptions {
            max_binding_bytes: spec.max_binding_bytes,
            no_subgroups: a.no_subgroups,
            profile: a.profile,
            ..gpu_options_from_env()?
        })
        .await?;
        let t0 = Instant::now();
        let (mut model, name) = match &a.model {
            Some(dir) => {
                let (cfg, mut src) = model::open_source(dir)?;
                (Qwen::load(gpu, cfg, src.as_mut(), &opts, &mut |_, _| {})?, dir.display().to_string())
            }
            None => {
                let cfg = spec.config();
                let name = bench::SynthBench::model_name(&cfg);
                let mut src = bench::RandomSource::new(&cfg, 1);
                (Qwen::load(gpu, cfg, &mut src, &opts, &mut |_, _| {})?, name)
            }
        };
        errln!("loaded in {:.1}s", t0.elapsed().as_secs_f64());
        let report = bench::run(&mut model, &name, &spec.bench_options()).await?;
        out!("{}", report.table())?;
        if let Some(path) = a.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Request(e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| Error::io(path.display(), e))?;
        }
        Ok(())
    }

    fn run_tokenize(path: &Path, decode: bool) -> Result<()> {
        let tok = Tokenizer::from_file(path)?;
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).map_err(|e| Error::io("stdin", e))?;
        if decode {
            let text = String::from_utf8_lossy(&input);
            let ids = text
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().map_err(|_| Error::Request(format!("not a token id: {s:?}"))))
                .collect::<Result<Vec<u32>>>()?;
            let bytes = tok.decode_bytes(&ids)?;
            std::io::stdout().write_all(&bytes).map_err(|e| Error::write("stdout", e))?;
        } else {
            let text = String::from_utf8(input).map_err(|e| {
                Error::Request(format!("stdin is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
            })?;
            let ids: Vec<String> = tok.encode(&text)?.iter().map(|i| i.to_string()).collect();
            outln!("{}", ids.join(","))?;
        }
        Ok(())
    }

    fn run_info(dir: &Path, load: &LoadArgs) -> Result<()> {
        let (cfg, src) = model::open_source(dir)?;
        let stored = qwen_webgpu::weights::checkpoint::check_checkpoint(&cfg, src.tensors(), src.metadata())?;
        let (_, opts) = load.options(dir)?;
        let (w, s) = model::gpu_bytes_of(&cfg, src.tensors(), &opts);
        let gguf = model::is_gguf(dir);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let file_bytes: u64 = src.tensors().values().map(|t| t.byte_len() as u64).sum();
        outln!("family: {}", cfg.family.name())?;
        outln!("config: {cfg:#?}")?;
        outln!("parameters: {} ({:.3} B)", cfg.parameter_count(), cfg.parameter_count() as f64 / 1e9)?;
        let mut types = std::collections::BTreeMap::<&str, usize>::new();
        for t in src.tensors().values() {
            *types.entry(t.dtype.name()).or_default() += 1;
        }
        let types: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
        match stored {
            Some(f) => outln!("stored: pre-quantized {} ({file_bytes} bytes of tensors)", f.name())?,
            None if gguf => outln!("stored: GGUF, tensors {} ({file_bytes} bytes)", types.join(", "))?,
            None => outln!("stored: plain checkpoint ({file_bytes} bytes of tensors)")?,
        }
        let how = match (stored, opts.weights) {
            (Some(_), f) => format!("{} (as stored)", f.name()),
            (None, WeightFormat::F16) if gguf => {
                "each tensor in its GGUF type (Q8_0/Q4_0 as q8/q4, float types as f16)".to_string()
            }
            (None, WeightFormat::F16) => "f16".to_string(),
            (None, f) => format!("{} (quantized while loading)", f.name()),
        };
        outln!("weights: {how}")?;
        outln!("context: {} tokens, batch {}", opts.context_for(&cfg), opts.max_batch)?;
        outln!("gpu memory: weights {} bytes ({:.1} MiB)", w, mib(w))?;
        outln!("gpu memory: activations + KV cache {} bytes ({:.1} MiB)", s, mib(s))?;
        outln!("gpu memory: total {} bytes ({:.1} MiB)", w + s, mib(w + s))?;
        Ok(())
    }

    fn run_quantize(model: &Path, out: &Path, format: &str, max_shard_bytes: u64) -> Result<()> {
        use qwen_webgpu::weights::quantize::{quantize_dir, QuantizeOptions};
        let format = match WeightFormat::parse(format)? {
            WeightFormat::F16 => return Err(Error::Request("--format must be q4 or q8".into())),
            f => f,
        };
        let t0 = Instant::now();
        let opts = QuantizeOptions { format, max_shard_bytes: max_shard_bytes.max(1) };
        // Per-tensor progress on a terminal only (it redraws one line).
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let r = quantize_dir(model, out, &opts, &mut |name, i, n| {
            if tty {
                err!("\r[{}/{n}] {name}\x1b[K", i + 1);
            }
        })?;
        if tty {
            errln!();
        }
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        for (f, b) in &r.files {
            outln!("wrote {} ({b} bytes, {:.1} MiB)", out.join(f).display(), mib(*b))?;
        }
        if !r.copied.is_empty() {
            outln!("copied {}", r.copied.join(", "))?;
        }
        outln!(
            "{}: {} matrices quantized, {} kept f16 (width not a multiple of 64), {} vectors as stored",
            format.name(),
            r.quantized,
            r.kept_f16,
            r.vectors
        )?;
        outln!(
            "tensor data: {} -> {} bytes ({:.1} -> {:.1} MiB, {:.2}x smaller) in {:.1}s",
            r.source_bytes,
            r.output_bytes,
            mib(r.source_bytes),
            mib(r.output_bytes),
            r.source_bytes as f64 / r.output_bytes.max(1) as f64,
            t0.elapsed().as_secs_f64()
        )?;
        Ok(())
    }
}
