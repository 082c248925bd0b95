//! Perplexity against context length, plain and with each of Qwen's long-context techniques
//! (dynamic NTK, logN attention scaling, layer-wise window attention): the Qwen report's
//! table 3, for any checkpoint. `qwen-webgpu perplexity` prints it; this module computes it.
//!
//! One loaded model serves every column: a [`Mode`] switches the config's `use_dynamic_ntk` /
//! `use_logn_attn` flags and the layers' windows, and each cell scores the text's first `L`
//! tokens as one fresh sequence ([`Qwen::feed_scoring`]), so dynamic NTK's alpha comes from
//! `L` as in the reference's single forward pass. The negative log-likelihood of each position
//! is computed on the CPU in f64 from each chunk's logits, which are dropped before the next
//! chunk: a 16K-token text never holds more than one chunk of `[rows, vocab]` logits.

use crate::clock::Stopwatch;
use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::model::{Qwen, WindowSpec};
use serde::Serialize;

/// The columns `qwen-webgpu perplexity` shows by default (the report's table 3).
pub const DEFAULT_MODES: &str = "plain,ntk,ntk+logn,ntk+logn+window";

/// The lengths `qwen-webgpu perplexity` scores by default (the report's table 3).
pub const DEFAULT_LENGTHS: [usize; 5] = [1024, 2048, 4096, 8192, 16384];

/// One column of the table: which long-context techniques are on. Each is forced on or off
/// whatever the checkpoint's config says (Qwen v1's config turns NTK and logN on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mode {
    /// Dynamic NTK-aware RoPE interpolation (`use_dynamic_ntk`).
    pub ntk: bool,
    /// LogN scaling of queries past the trained length (`use_logn_attn`).
    pub logn: bool,
    /// The layer-wise windows given to [`perplexity_table`] (off: every layer sees all keys).
    pub window: bool,
}

impl Mode {
    /// `plain`, or techniques joined by `+`: `ntk`, `logn`, `window` (e.g. `ntk+logn+window`).
    pub fn parse(text: &str) -> Result<Mode> {
        let t = text.trim();
        let mut m = Mode { ntk: false, logn: false, window: false };
        if t.eq_ignore_ascii_case("plain") {
            return Ok(m);
        }
        for part in t.split('+') {
            let flag = match part.trim().to_ascii_lowercase().as_str() {
                "ntk" => &mut m.ntk,
                "logn" => &mut m.logn,
                "window" => &mut m.window,
                other => {
                    return Err(Error::Request(format!(
                        "mode {text:?}: unknown technique {other:?} (want plain, or ntk, logn and window joined by +)"
                    )))
                }
            };
            if *flag {
                return Err(Error::Request(format!("mode {text:?} names a technique twice")));
            }
            *flag = true;
        }
        Ok(m)
    }

    /// A comma-separated list of modes (see [`Mode::parse`]), each at most once.
    pub fn parse_list(text: &str) -> Result<Vec<Mode>> {
        let mut out: Vec<Mode> = Vec::new();
        for s in text.split(',') {
            let m = Mode::parse(s)?;
            if out.contains(&m) {
                return Err(Error::Request(format!("modes {text:?}: {} is listed twice", m.name())));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// The text form [`Mode::parse`] reads back (`plain`, `ntk`, `ntk+logn`, ...).
    pub fn name(&self) -> String {
        let parts: Vec<&str> = [(self.ntk, "ntk"), (self.logn, "logn"), (self.window, "window")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        if parts.is_empty() {
            "plain".into()
        } else {
            parts.join("+")
        }
    }

    /// Set `model` up for this mode: its NTK and logN flags, and `windows` (one per layer)
    /// or none. The following [`Qwen::feed_scoring`] starts a fresh sequence with them.
    pub fn apply(&self, model: &mut Qwen, windows: &[usize]) -> Result<()> {
        model.config.use_dynamic_ntk = self.ntk;
        model.config.use_logn_attn = self.logn;
        let w = if self.window { windows.to_vec() } else { vec![0; model.config.num_hidden_layers] };
        model.set_windows(w)
    }
}

/// The windows of the `window` columns when none are given: `pow2:S/4:4/N` for a model
/// trained on `S` tokens with `N` layers, i.e. layer `i` sees its last `S/4 · 2^(4i/N)` keys.
/// The report gives no numbers, only the rule "short windows low, long ones high"; this one
/// keeps the lowest layers well inside the trained length (S/4), doubles the window every
/// N/4 layers and lets the top layer see about 4·S keys (8192 → 2048 … 29K for Qwen-1.8B's
/// 24 layers, so at 16K the top quarter of the layers sees everything).
pub fn default_window(cfg: &QwenConfig) -> WindowSpec {
    let layers = cfg.num_hidden_layers.max(1);
    WindowSpec::Pow2 { min: (cfg.seq_length / 4).max(1), k: 4.0 / layers as f64 }
}

/// Negative log-likelihoods summed over some predicted positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Nll {
    /// Positions scored (a sequence of `L` tokens predicts `L - 1`).
    pub predicted: usize,
    /// Sum of `-ln p(token | prefix)`, in nats.
    pub sum: f64,
}

impl Nll {
    /// Mean NLL per predicted token (nats).
    pub fn mean(&self) -> f64 {
        self.sum / self.predicted as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }

    /// Add the rows of one chunk of logits: row `r` (of `[targets.len(), vocab]`) predicts
    /// `targets[r]`, by its log-softmax over the whole row, computed in f64. Non-finite
    /// logits are an error (a broken model must not print a perplexity).
    pub fn add_rows(&mut self, logits: &[f32], vocab: usize, targets: &[u32]) -> Result<()> {
        if vocab == 0 || logits.len() < targets.len() * vocab {
            return Err(Error::Request(format!(
                "{} logits cannot hold {} rows of {vocab}",
                logits.len(),
                targets.len()
            )));
        }
        for (r, &t) in targets.iter().enumerate() {
            let row = &logits[r * vocab..(r + 1) * vocab];
            let t = t as usize;
            if t >= vocab {
                return Err(Error::Request(format!("token id {t} is out of range (vocab_size {vocab})")));
            }
            let mut max = f64::NEG_INFINITY;
            for &l in row {
                if !l.is_finite() {
                    return Err(Error::Gpu(format!("non-finite logit {l} while scoring")));
                }
                max = max.max(l as f64);
            }
            let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
            self.sum += max + sum.ln() - row[t] as f64;
            self.predicted += 1;
        }
        Ok(())
    }
}

/// The NLL of `tokens` under `model` as it is set up now (see [`Mode::apply`]): one fresh
/// sequence, every position but the last predicting the next token.
pub async fn score(model: &mut Qwen, tokens: &[u32]) -> Result<Nll> {
    if tokens.len() < 2 {
        return Err(Error::Request("scoring needs at least 2 tokens".into()));
    }
    let vocab = model.config.vocab_size;
    let mut nll = Nll::default();
    let n = tokens.len();
    model
        .feed_scoring(tokens, &mut |first, logits| {
            let rows = logits.len() / vocab;
            // Rows first..first+rows predict the tokens after them; the last position none.
            let last = (first + rows).min(n - 1);
            if first < last {
                nll.add_rows(logits, vocab, &tokens[first + 1..last + 1])?;
            }
            Ok(())
        })
        .await?;
    if nll.predicted != n - 1 {
        return Err(Error::Gpu(format!("scored {} positions of {}", nll.predicted, n - 1)));
    }
    Ok(nll)
}

/// One cell: a mode at a length.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub mode: String,
    pub length: usize,
    pub perplexity: f64,
    /// Mean NLL per predicted token (nats).
    pub mean_nll: f64,
    pub predicted: usize,
    /// Wall time of the cell: the forward passes over `length` tokens, the logits' readback
    /// and the CPU log-softmax.
    pub seconds: f64,
}

/// Perplexity at each length for each mode.
#[derive(Debug, Clone, Serialize)]
pub struct PerplexityTable {
    pub lengths: Vec<usize>,
    pub modes: Vec<String>,
    /// The windows of the `window` modes, per layer (0: the whole cache).
    pub windows: Vec<usize>,
    /// Row-major: `cells[i * modes.len() + j]` is `lengths[i]` under `modes[j]`.
    pub cells: Vec<Cell>,
}

/// Score the first `L` tokens of `tokens` for each `L` of `lengths` under each of `modes`
/// (`windows`: one per layer, for the modes with `window`), calling `progress` with a label
/// (`"ntk+logn @4096"`) before each cell. The model's flags and windows are put back
/// afterwards, even on an error.
pub async fn perplexity_table(
    model: &mut Qwen,
    tokens: &[u32],
    lengths: &[usize],
    modes: &[Mode],
    windows: &[usize],
    progress: &mut dyn FnMut(&str),
) -> Result<PerplexityTable> {
    let layers = model.config.num_hidden_layers;
    if windows.len() != layers {
        return Err(Error::Request(format!("{} windows for a model of {layers} layers", windows.len())));
    }
    if modes.is_empty() || lengths.is_empty() {
        return Err(Error::Request("no modes or no lengths to score".into()));
    }
    for &l in lengths {
        if l < 2 || l > tokens.len() || l > model.context() {
            return Err(Error::Request(format!(
                "length {l}: want 2 to min({} tokens of text, context {})",
                tokens.len(),
                model.context()
            )));
        }
    }
    let saved = (model.config.use_dynamic_ntk, model.config.use_logn_attn, model.windows().to_vec());
    let result = cells(model, tokens, lengths, modes, windows, progress).await;
    model.config.use_dynamic_ntk = saved.0;
    model.config.use_logn_attn = saved.1;
    model.set_windows(saved.2)?;
    model.reset();
    Ok(PerplexityTable {
        lengths: lengths.to_vec(),
        modes: modes.iter().map(Mode::name).collect(),
        windows: windows.to_vec(),
        cells: result?,
    })
}

async fn cells(
    model: &mut Qwen,
    tokens: &[u32],
    lengths: &[usize],
    modes: &[Mode],
    windows: &[usize],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Cell>> {
    let mut out = Vec::new();
    for &l in lengths {
        for m in modes {
            progress(&format!("{} @{l}", m.name()));
            m.apply(model, windows)?;
            let t = Stopwatch::start();
            let nll = score(model, &tokens[..l]).await?;
            out.push(Cell {
                mode: m.name(),
                length: l,
                perplexity: nll.perplexity(),
                mean_nll: nll.mean(),
                predicted: nll.predicted,
                seconds: t.seconds(),
            });
        }
    }
    Ok(out)
}

impl PerplexityTable {
    /// The cell of `lengths[i]` under `modes[j]`.
    pub fn cell(&self, i: usize, j: usize) -> &Cell {
        &self.cells[i * self.modes.len() + j]
    }

    /// Markdown: one row per length, each mode's perplexity, then each mode's seconds.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| tokens |");
        for m in &self.modes {
            s += &format!(" {m} |");
        }
        for m in &self.modes {
            s += &format!(" {m} (s) |");
        }
        s += "\n|---:|";
        s += &"---:|".repeat(2 * self.modes.len());
        s += "\n";
        for (i, l) in self.lengths.iter().enumerate() {
            s += &format!("| {l} |");
            for j in 0..self.modes.len() {
                s += &format!(" {:.4} |", self.cell(i, j).perplexity);
            }
            for j in 0..self.modes.len() {
                s += &format!(" {:.1} |", self.cell(i, j).seconds);
            }
            s += "\n";
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_name() {
        let all = Mode::parse_list(DEFAULT_MODES).unwrap();
        let names: Vec<String> = all.iter().map(Mode::name).collect();
        assert_eq!(names, ["plain", "ntk", "ntk+logn", "ntk+logn+window"]);
        assert_eq!(Mode::parse("window+NTK").unwrap(), Mode { ntk: true, logn: false, window: true });
        for bad in ["", "ntk+", "rope", "ntk+ntk", "plain+ntk"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        assert!(Mode::parse_list("ntk,plain,ntk").is_err());
    }

    #[test]
    fn nll_is_the_log_softmax_of_the_target() {
        // Two rows of 3: uniform (ln 3 each), and one with a known softmax.
        let logits = [0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let mut n = Nll::default();
        n.add_rows(&logits, 3, &[2, 0]).unwrap();
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let want = 3f64.ln() + (z.ln() - 1.0);
        assert!((n.sum - want).abs() < 1e-12, "{} vs {want}", n.sum);
        assert_eq!(n.predicted, 2);
        assert!((n.perplexity() - (want / 2.0).exp()).abs() < 1e-12);
        assert!(n.add_rows(&[0.0, f32::NAN], 2, &[0]).is_err());
        assert!(n.add_rows(&[0.0, 1.0], 2, &[2]).is_err());
        assert!(n.add_rows(&[0.0], 2, &[0]).is_err());
    }

    #[test]
    fn default_window_spans_a_quarter_to_four_times_the_trained_length() {
        let cfg = crate::bench::qwen_1_8b(None);
        let w = default_window(&cfg).resolve(24).unwrap();
        assert_eq!(w[0], 2048);
        assert!((4095..=4096).contains(&w[6]), "{w:?}");
        assert!(w[23] > 8192 * 3 && w[23] < 8192 * 4, "{w:?}");
        assert!(w.windows(2).all(|p| p[0] <= p[1]));
    }
}
