//! Prefill, then decode with the KV cache, one token at a time, handing each token to a
//! callback as soon as it exists.

use crate::error::{Error, Result};
use crate::model::{Output, Qwen, Want};
use crate::sampler::SamplingParams;
pub use crate::sampler::TokenLogprobs;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends after any of these (the stop token is returned, as HF `generate` does).
    pub stop_ids: Vec<u32>,
    /// `Some(k)`, k in `0..=20`: each token comes with its log-probability and those of the
    /// `k` most likely tokens ([`Generator::logprobs`]; OpenAI's `logprobs` + `top_logprobs`).
    /// Computed on the GPU from the model's raw logits (see [`crate::sampler`] for the
    /// definition); `None` (off) costs nothing.
    pub logprobs: Option<usize>,
}

/// `eos_token_id` of a `config.json` or `generation_config.json` text (a number or a list);
/// ids outside u32 are an error, not truncated. A file that is not JSON or has no such field
/// gives none.
pub fn eos_ids_in(json: &str) -> Result<Vec<u32>> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return Ok(Vec::new()) };
    let one = |x: &serde_json::Value| -> Result<u32> {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::Config(format!("eos_token_id {x} is not a token id (a whole number below 2^32)")))
    };
    match v.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
        Some(x) => Ok(vec![one(x)?]),
    }
}

/// The ids a generation stops at, the same rule for the CLI and the JS API: the caller's own
/// `extra` ids, then unless `ignore_eos` the model's `eos` ids (config and generation config)
/// and, for chat, the tokenizer's stop tokens (`<|im_end|>`, ...); when that leaves none,
/// `<|endoftext|>`. Sorted, without repeats.
pub fn stop_ids(extra: &[u32], eos: &[u32], chat_stops: &[u32], ignore_eos: bool) -> Vec<u32> {
    let mut ids = extra.to_vec();
    if !ignore_eos {
        ids.extend_from_slice(eos);
        ids.extend_from_slice(chat_stops);
        if ids.is_empty() {
            ids.push(crate::tokenizer::CHATML.end_of_text_id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop id was generated.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The KV cache is full.
    ContextFull,
    /// The callback asked to stop.
    Aborted,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
}

/// Step-by-step generation: [`Generator::start`] prefills, each [`Generator::next`] yields
/// one token. The CLI and the browser engine both drive this; [`generate`] wraps it.
///
/// Every token is chosen on the GPU (argmax, or a draw by [`crate::sampler`]'s definition,
/// the same tokens as [`crate::sampler::Sampler`] on the CPU would pick from the same
/// logits), so each decoded token costs one submission and a 4-byte readback (with
/// [`GenerateOptions::logprobs`], one more dispatch and `16 + 8 k` bytes).
pub struct Generator {
    opts: GenerateOptions,
    /// Prompt and output so far (the repetition penalty looks at both, as HF does).
    history: Vec<u32>,
    prompt_len: usize,
    /// The forward output the next token is chosen from.
    pending: Option<Output>,
    /// The log-probabilities of `pending`'s token (read with it).
    pending_logprobs: Option<TokenLogprobs>,
    /// Those of the token the last [`Generator::next`] returned.
    logprobs: Option<TokenLogprobs>,
    finish: Option<FinishReason>,
}

impl Generator {
    /// Check the request and prefill `prompt`, continuing the model's current KV cache (call
    /// [`Qwen::reset`] first for a fresh sequence).
    pub async fn start(model: &mut Qwen, prompt: &[u32], opts: GenerateOptions) -> Result<Generator> {
        Generator::start_at(model, prompt, 0, opts).await
    }

    /// [`Generator::start`] for a whole sequence `prompt` of which the model's KV cache holds
    /// `cached`, the ids of positions `0..model.pos()` (the last generation's
    /// [`Generator::sequence`], cut to `model.pos()`): their longest common prefix is kept
    /// ([`Qwen::rewind`]) and only the rest is fed, always at least one token. Multi-turn chat
    /// prefills only the new turn; an edited or regenerated turn, only what follows the edit.
    /// Returns the generator and how many prompt tokens were reused.
    pub async fn start_reusing(
        model: &mut Qwen,
        cached: &[u32],
        prompt: &[u32],
        opts: GenerateOptions,
    ) -> Result<(Generator, usize)> {
        if cached.len() != model.pos() {
            return Err(Error::Request(format!(
                "{} cached ids given for a cache holding {} tokens",
                cached.len(),
                model.pos()
            )));
        }
        opts.sampling.validate()?;
        let keep = reuse_point(model, cached, prompt);
        model.rewind(keep)?;
        let g = Generator::start_at(model, prompt, keep, opts).await?;
        Ok((g, keep))
    }

    /// Go on after the context filled up ([`FinishReason::ContextFull`]) with a shorter
    /// `prompt` for the same request (a conversation with older turns left out): the tokens
    /// generated so far follow it, the cache keeps the longest prefix it shares with what it
    /// holds, the rest is fed, and decoding continues; [`Generator::tokens`] still lists every
    /// token generated, and `max_new_tokens` still counts them all. Returns how many tokens
    /// were reused. `prompt` plus the tokens so far must leave room in the context.
    pub async fn resume(&mut self, model: &mut Qwen, prompt: &[u32]) -> Result<usize> {
        if self.finish != Some(FinishReason::ContextFull) {
            return Err(Error::Request("only a generation that filled the context can be resumed".into()));
        }
        let mut seq = prompt.to_vec();
        seq.extend_from_slice(self.tokens());
        if seq.len() >= model.context() {
            return Err(Error::ContextFull(format!(
                "{} prompt tokens and {} generated leave no room in the context of {}",
                prompt.len(),
                self.tokens().len(),
                model.context()
            )));
        }
        let held = model.pos().min(self.history.len());
        let keep = reuse_point(model, &self.history[..held], &seq);
        model.rewind(keep)?;
        model.set_sampling(Some(&self.opts.sampling), &seq)?;
        model.set_logprobs(self.opts.logprobs)?;
        self.pending = Some(model.feed(&seq[keep..], Want::Token).await?);
        self.pending_logprobs = model.last_logprobs().cloned();
        self.prompt_len = prompt.len();
        self.history = seq;
        self.finish = None;
        Ok(keep)
    }

    /// Prefill `prompt[skip..]` after a cache holding `prompt[..skip]` (the repetition
    /// penalty sees all of `prompt`).
    async fn start_at(model: &mut Qwen, prompt: &[u32], skip: usize, opts: GenerateOptions) -> Result<Generator> {
        opts.sampling.validate()?;
        if let Some(k) = opts.logprobs.filter(|&k| k > crate::sampler::MAX_TOP_LOGPROBS) {
            return Err(Error::Request(format!(
                "logprobs must be at most {} top tokens, got {k}",
                crate::sampler::MAX_TOP_LOGPROBS
            )));
        }
        let new = &prompt[skip..];
        if model.pos() + new.len() > model.context() {
            return Err(Error::ContextFull(format!(
                "the prompt has {} tokens, but only {} of the context of {} are free",
                new.len(),
                model.context() - model.pos(),
                model.context()
            )));
        }
        model.set_sampling(Some(&opts.sampling), prompt)?;
        model.set_logprobs(opts.logprobs)?;
        let mut g = Generator {
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            pending: None,
            pending_logprobs: None,
            logprobs: None,
            finish: None,
            opts,
        };
        if g.opts.max_new_tokens == 0 {
            g.finish = Some(FinishReason::Length);
        } else {
            g.pending = Some(model.feed(new, Want::Token).await?);
            g.pending_logprobs = model.last_logprobs().cloned();
        }
        Ok(g)
    }

    /// The next token, or `None` once generation has finished.
    ///
    /// Decoding keeps one pass queued ahead ([`Qwen::queue_next`]): the pass for the
    /// token after this one is submitted before this one is read back, fed with this token's
    /// id on the GPU, so the GPU does not wait for the readback or for the CPU to record the
    /// next pass. If this token ends generation (a stop id), that pass is dropped at the
    /// model's next use and its position freed.
    pub async fn next(&mut self, model: &mut Qwen) -> Result<Option<u32>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        // This call returns token number `returned + 1`; queue the one after it when the
        // length limit and the context allow it.
        let returned = self.history.len() - self.prompt_len;
        let queued = usize::from(self.pending.is_none());
        if returned + 2 <= self.opts.max_new_tokens && model.pos() + queued < model.context() {
            model.queue_next().await?;
        }
        let out = match self.pending.take() {
            Some(o) => {
                self.logprobs = self.pending_logprobs.take();
                o
            }
            None => {
                let t = model.take_token().await?;
                self.logprobs = model.last_logprobs().cloned();
                Output::Token(t)
            }
        };
        let tok = match out {
            Output::Token(t) => t,
            _ => return Err(Error::Gpu("forward pass returned no token".into())),
        };
        self.history.push(tok);
        let n = self.history.len() - self.prompt_len;
        self.finish = if self.opts.stop_ids.contains(&tok) {
            Some(FinishReason::Stop)
        } else if n >= self.opts.max_new_tokens {
            Some(FinishReason::Length)
        } else if model.pos() >= model.context() {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        Ok(Some(tok))
    }

    /// The log-probabilities of the token the last [`Generator::next`] returned, when
    /// [`GenerateOptions::logprobs`] asked for them.
    pub fn logprobs(&self) -> Option<&TokenLogprobs> {
        self.logprobs.as_ref()
    }

    /// Stop early; [`Generator::finish_reason`] then says `Aborted`.
    pub fn abort(&mut self) {
        self.finish.get_or_insert(FinishReason::Aborted);
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// The whole prompt followed by the tokens generated so far: its first `model.pos()` ids
    /// are what the KV cache holds (for the next [`Generator::start_reusing`]).
    pub fn sequence(&self) -> &[u32] {
        &self.history
    }
}

/// How many leading tokens of a cache holding `cached` (positions `0..model.pos()`) a new
/// sequence `seq` can keep: their common prefix, leaving at least one token to feed. Qwen v1's
/// dynamic NTK fixes its alpha at the prefill from the prompt's length: a sequence that would
/// get another alpha than the cache was written with starts afresh.
fn reuse_point(model: &Qwen, cached: &[u32], seq: &[u32]) -> usize {
    let common = cached.iter().zip(seq).take_while(|(a, b)| a == b).count();
    let cfg = &model.config;
    if cfg.use_dynamic_ntk && crate::model::rope::ntk_alpha(seq.len(), cfg.seq_length) != model.ntk_alpha() {
        return 0;
    }
    common.min(seq.len().saturating_sub(1))
}

/// Generate after `prompt` (see [`Generator::start`]). `on_token` sees each new token;
/// returning false stops generation.
pub async fn generate(
    model: &mut Qwen,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut g = Generator::start(model, prompt, opts.clone()).await?;
    while let Some(tok) = g.next(model).await? {
        if !on_token(tok) {
            g.abort();
            return Ok(Generation { tokens: g.tokens().to_vec(), finish: FinishReason::Aborted });
        }
    }
    Ok(Generation { tokens: g.tokens().to_vec(), finish: g.finish_reason().unwrap_or(FinishReason::Length) })
}
