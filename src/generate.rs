//! Prefill, then decode with the KV cache, one token at a time, handing each token to a
//! callback as soon as it exists.

use crate::error::{Error, Result};
use crate::model::{Output, Qwen, Want};
use crate::sampler::{Sampler, SamplingParams};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends after any of these (the stop token is returned, as HF `generate` does).
    pub stop_ids: Vec<u32>,
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

/// Generate after `prompt`, continuing the model's current KV cache (call
/// [`Qwen::reset`] first for a fresh sequence). `on_token` sees each new token; returning
/// false stops generation.
pub async fn generate(
    model: &mut Qwen,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    if model.pos() + prompt.len() > model.context() {
        return Err(Error::Request(format!(
            "the prompt has {} tokens, but only {} of the context of {} are free",
            prompt.len(),
            model.context() - model.pos(),
            model.context()
        )));
    }
    let want =
        if opts.sampling.is_greedy() && opts.sampling.repetition_penalty == 1.0 { Want::Argmax } else { Want::Logits };
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    if opts.max_new_tokens == 0 {
        return Ok(Generation { tokens, finish: FinishReason::Length });
    }
    let mut out = model.feed(prompt, want).await?;
    loop {
        let tok = match out {
            Output::Token(t) => t,
            Output::Logits(mut l) => sampler.sample(&mut l, &history)?,
            Output::Nothing => return Err(Error::Gpu("forward pass returned no output".into())),
        };
        tokens.push(tok);
        history.push(tok);
        let finish = if opts.stop_ids.contains(&tok) {
            Some(FinishReason::Stop)
        } else if tokens.len() >= opts.max_new_tokens {
            Some(FinishReason::Length)
        } else if model.pos() >= model.context() {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        if !on_token(tok) {
            return Ok(Generation { tokens, finish: FinishReason::Aborted });
        }
        if let Some(finish) = finish {
            return Ok(Generation { tokens, finish });
        }
        out = model.feed(&[tok], want).await?;
    }
}
