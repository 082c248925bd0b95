//! `qwen-webgpu perplexity`: the Qwen report's table 3 (perplexity against context length,
//! plain and with each long-context technique) for any checkpoint.
//!
//! One load of the model serves every cell: the modes switch dynamic NTK, logN and the layers'
//! windows on the loaded model (see [`qwen_webgpu::eval`]). Without `--model` it runs on a
//! Qwen-1.8B-shaped checkpoint with random weights over random token ids: the perplexities
//! are then meaningless, but the timing columns are real.

use super::{model_tokenizer, RunArgs, MAX_CONTEXT};
use clap::Args;
use qwen_webgpu::bench::{RandomSource, SynthBench};
use qwen_webgpu::eval::{self, Mode, PerplexityTable};
use qwen_webgpu::gpu::Gpu;
use qwen_webgpu::model::{read_config, WindowSpec};
use qwen_webgpu::tokenizer::Tokenizer;
use qwen_webgpu::{Error, ModelOptions, Qwen, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The largest text file read (far above any table's 16K tokens).
const TEXT_CAP: u64 = 256 << 20;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model folder or GGUF file; without it, a Qwen-1.8B-shaped checkpoint with random
    /// weights scored on random token ids (timings only: its perplexities mean nothing).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The long text to score (UTF-8), tokenized with the model's tokenizer. Needs --model.
    #[arg(long)]
    text: Option<PathBuf>,
    /// tokenizer.json or qwen.tiktoken (default: the model's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The prefix lengths (tokens) to score, each as one fresh sequence.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096,8192,16384")]
    lengths: Vec<usize>,
    /// Columns: plain, or ntk / logn / window joined by + (each forced on or off whatever
    /// the config says).
    #[arg(long, default_value = eval::DEFAULT_MODES)]
    modes: String,
    /// The windows of the +window modes: W, W0,W1,... or pow2:MIN:K, as the load option
    /// (default pow2:S/4:4/N for a model trained on S tokens with N layers: S/4 keys for the
    /// lowest layer, doubling every N/4 layers, about 4S for the top one).
    #[arg(long)]
    window: Option<String>,
    /// Write the table as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Layers of the synthesised model (default 24, as Qwen-1.8B).
    #[arg(long)]
    layers: Option<usize>,
    /// Vocabulary of the synthesised model (default 151936).
    #[arg(long)]
    vocab: Option<usize>,
    /// KV cache length (default: the longest of --lengths, plus one).
    #[arg(long)]
    context: Option<usize>,
    /// --max-batch (also the rows of logits read back at once), --weights, --kv-cache, ...
    #[command(flatten)]
    run: RunArgs,
}

/// What `--json` writes: the run's settings and the table.
#[derive(Serialize)]
struct Report<'a> {
    model: String,
    /// The text file, or `"random token ids"`.
    text: String,
    /// Whether the perplexities mean anything (false for random weights).
    meaningful: bool,
    weight_format: String,
    kv_cache_format: String,
    context: usize,
    seq_length: usize,
    /// The `--window` setting of the +window modes.
    window: String,
    #[serde(flatten)]
    table: &'a PerplexityTable,
}

pub async fn run(a: PerplexityArgs) -> Result<()> {
    let modes = Mode::parse_list(&a.modes)?;
    let max_len = a.lengths.iter().copied().max().ok_or_else(|| Error::Request("--lengths is empty".into()))?;
    if let Some(&l) = a.lengths.iter().find(|&&l| !(2..=MAX_CONTEXT).contains(&l)) {
        return Err(Error::Request(format!("--lengths {l}: want a whole number from 2 to {MAX_CONTEXT}")));
    }
    let context = a.context.unwrap_or(max_len + 1);
    if context < max_len || context > MAX_CONTEXT {
        return Err(Error::Request(format!(
            "--context {context}: want from the longest length ({max_len}) to {MAX_CONTEXT}"
        )));
    }
    if a.model.is_some() && (a.layers.is_some() || a.vocab.is_some()) {
        return Err(Error::Request("--layers and --vocab shape the synthesised model: not with --model".into()));
    }
    let (gpu_opts, run) = a.run.options(a.model.as_deref())?;
    let opts = ModelOptions { context: Some(context), ..run };

    // The config first: bad windows are refused before anything loads.
    let synth = SynthBench { layers: a.layers, vocab: a.vocab, ..Default::default() };
    let cfg = match &a.model {
        Some(dir) => read_config(dir)?,
        None => {
            synth.check()?;
            synth.config()
        }
    };
    let spec = match &a.window {
        Some(w) => WindowSpec::parse(w)?,
        None => eval::default_window(&cfg),
    };
    let windows = spec.resolve(cfg.num_hidden_layers)?;

    let t0 = Instant::now();
    let (mut model, name, text_name, tokens) = match &a.model {
        Some(dir) => {
            let path = a.text.as_ref().ok_or_else(|| Error::Request("--model needs --text FILE to score".into()))?;
            let tok = match &a.tokenizer {
                Some(t) => {
                    let tok = Tokenizer::from_file(t)?;
                    tok.check_fits(cfg.vocab_size)?;
                    tok
                }
                None => model_tokenizer(dir, cfg.vocab_size)?,
            };
            let tokens = read_tokens(&tok, path, max_len)?;
            if tokens.len() < max_len {
                return Err(Error::Request(format!(
                    "{} has {} tokens; --lengths asks for {max_len}",
                    path.display(),
                    tokens.len()
                )));
            }
            let model = Qwen::load_dir(dir, &gpu_opts, &opts).await?;
            (model, dir.display().to_string(), path.display().to_string(), tokens)
        }
        None => {
            if a.text.is_some() || a.tokenizer.is_some() {
                return Err(Error::Request("--text and --tokenizer need --model".into()));
            }
            let gpu = Gpu::new(&gpu_opts).await?;
            let mut src = RandomSource::new(&cfg, 1);
            let model = Qwen::load(gpu, cfg.clone(), &mut src, &opts, &mut |_, _| {})?;
            let tokens = random_ids(max_len, cfg.vocab_size, 7);
            (model, SynthBench::model_name(&cfg), "random token ids".to_string(), tokens)
        }
    };
    err(format_args!("loaded in {:.1}s\n", t0.elapsed().as_secs_f64()));

    if cfg.family != qwen_webgpu::Family::QwenV1 && modes.iter().any(|m| m.ntk || m.logn) {
        err(format_args!(
            "note: dynamic NTK and logN are Qwen v1's techniques; on this {:?} model they use seq_length {}\n",
            cfg.family, cfg.seq_length
        ));
    }
    let table = eval::perplexity_table(&mut model, &tokens, &a.lengths, &modes, &windows, &mut |label| {
        err(format_args!("scoring {label}\n"))
    })
    .await?;

    let meaningful = a.model.is_some();
    let mut s = String::new();
    s += &format!("model       {name}\n");
    s += &format!("text        {text_name} ({} tokens scored at most)\n", max_len);
    s += &format!(
        "settings    {} weights, {} KV cache, context {}, trained length {}\n",
        model.weights.formats().join("+"),
        model.kv_format().name(),
        model.context(),
        cfg.seq_length
    );
    s += &format!("window      {} → {}\n", spec.describe(), describe_windows(&windows));
    if !meaningful {
        s += "NOTE        random weights on random ids: the perplexities are meaningless; only the seconds are.\n";
    }
    s += "\n";
    s += &table.markdown();
    super::write_stdout(format_args!("{s}"))?;

    if let Some(path) = &a.json {
        let report = Report {
            model: name,
            text: text_name,
            meaningful,
            weight_format: model.weights.formats().join("+"),
            kv_cache_format: model.kv_format().name().into(),
            context: model.context(),
            seq_length: cfg.seq_length,
            window: spec.describe(),
            table: &table,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Request(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

/// A message on stderr (a closed stderr only loses it).
fn err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().write_fmt(args);
}

/// The layers' windows, compactly: `off`, or each layer's (`all` for a whole-cache layer).
fn describe_windows(w: &[usize]) -> String {
    if w.iter().all(|&x| x == 0) {
        return "off".into();
    }
    w.iter().map(|&x| if x == 0 { "all".to_string() } else { x.to_string() }).collect::<Vec<_>>().join(",")
}

/// The text's tokens, at least `need` of them when it has that many. A long file is
/// tokenized from a prefix (cut at a line end, 32 bytes per needed token, its last token
/// dropped as the cut may split it), and whole only when that prefix falls short.
fn read_tokens(tok: &Tokenizer, path: &Path, need: usize) -> Result<Vec<u32>> {
    let text = qwen_webgpu::files::read_text_capped(path, TEXT_CAP)?;
    let want_bytes = need.saturating_mul(32);
    if text.len() > want_bytes {
        let mut cut = want_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(nl) = text[..cut].rfind('\n') {
            cut = nl + 1;
        }
        let mut ids = tok.encode(&text[..cut])?;
        ids.pop();
        if ids.len() >= need {
            return Ok(ids);
        }
    }
    tok.encode(&text)
}

/// `n` ids from a fixed-seed LCG, uniform over the vocabulary.
fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}
