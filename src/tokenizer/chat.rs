//! The ChatML prompt of Qwen chat models.
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! Tokens are built as the Qwen v1 reference does (`make_context` in
//! `qwen_generation_utils.py`): the role name, `\n` and the content are encoded separately,
//! content with no special tokens allowed, and the markers are inserted as ids. So message
//! content can never produce `<|im_end|>` or any other control token.

use super::Tokenizer;
use crate::error::{Error, Result};

/// A chat template as data: the markers around each message, the system prompt the model
/// was trained with, and the id that ends a document. Every Qwen family uses [`CHATML`]; a
/// family with another template (Llama-3's headers, say) would add its own value here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChatFormat {
    /// Opens a message; the role name and a newline follow.
    pub start: &'static str,
    /// Closes a message; a newline follows.
    pub end: &'static str,
    /// Used when the caller gives no system message (the CLI and the JS API both add it).
    pub default_system: &'static str,
    /// `<|endoftext|>`'s id: the stop id when neither the model's files nor the tokenizer name one.
    pub end_of_text_id: u32,
}

/// Qwen's ChatML (v1, Qwen1.5, Qwen2, Qwen2.5, Qwen3 alike).
pub const CHATML: ChatFormat = ChatFormat {
    start: super::IM_START,
    end: super::IM_END,
    default_system: "You are a helpful assistant.",
    end_of_text_id: 151643,
};

/// The system prompt Qwen chat models were trained with. [`chat_prompt_ids`] does not add it:
/// the caller puts it in the messages when the user gave none.
pub const DEFAULT_SYSTEM_PROMPT: &str = CHATML.default_system;

/// Tokens a chat prompt may take in a `context`-token KV cache when the reply may take
/// `max_new_tokens`: the reply's room is kept free, but never more than half the context (so a
/// long conversation keeps at least half of it as history). At least 1. The CLI and the JS API
/// both budget with this.
pub fn prompt_budget(context: usize, max_new_tokens: usize) -> usize {
    context.saturating_sub(max_new_tokens.min(context / 2)).max(1)
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role name as written in the prompt.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// Builds the ChatML prompt, ending with the generation prompt `<|im_start|>assistant\n`.
///
/// When the prompt would exceed `max_prompt_tokens`, the oldest turns (a user message and the
/// replies that follow it) are dropped, keeping a leading system message and everything from
/// the last user message on. If even that does not fit, an [`Error::ContextFull`] says by how much.
/// No system message is invented: add [`DEFAULT_SYSTEM_PROMPT`] yourself when you want it.
pub fn chat_prompt_ids(tok: &Tokenizer, messages: &[ChatMessage], max_prompt_tokens: usize) -> Result<Vec<u32>> {
    let missing = |s: &str| Error::Tokenizer(format!("the vocabulary has no {s} token, cannot build a chat prompt"));
    let (start, end) = (CHATML.start, CHATML.end);
    let im_start = tok.token_to_id(start).ok_or_else(|| missing(start))?;
    let im_end = tok.token_to_id(end).ok_or_else(|| missing(end))?;
    let nl = tok.encode("\n")?;

    // Each message becomes `<|im_start|>role\ncontent<|im_end|>\n`.
    let block = |m: &ChatMessage| -> Result<Vec<u32>> {
        let mut ids = vec![im_start];
        ids.extend(tok.encode(m.role.as_str())?);
        ids.extend_from_slice(&nl);
        ids.extend(tok.encode(&m.content)?);
        ids.push(im_end);
        ids.extend_from_slice(&nl);
        Ok(ids)
    };
    let mut generation = vec![im_start];
    generation.extend(tok.encode(Role::Assistant.as_str())?);
    generation.extend_from_slice(&nl);

    let (system, rest) = match messages.split_first() {
        Some((first, rest)) if first.role == Role::System => (Some(first), rest),
        _ => (None, messages),
    };
    // Everything from the last user message on is kept; without a user message, the last one.
    let keep_from = rest.iter().rposition(|m| m.role == Role::User).unwrap_or(rest.len().saturating_sub(1));
    let (droppable, kept) = rest.split_at(keep_from);

    let system_ids = system.map(block).transpose()?.unwrap_or_default();
    let mut kept_ids = Vec::new();
    for m in kept {
        kept_ids.extend(block(m)?);
    }
    let fixed = system_ids.len() + kept_ids.len() + generation.len();
    if fixed > max_prompt_tokens {
        return Err(Error::ContextFull(format!(
            "the prompt needs {fixed} tokens (system message, last user message and the \
             assistant header) but the budget is {max_prompt_tokens}: shorten the message"
        )));
    }

    // Turns: each starts at a user message (leading non-user messages form their own turn).
    let mut turns: Vec<Vec<u32>> = Vec::new();
    for (i, m) in droppable.iter().enumerate() {
        if i == 0 || m.role == Role::User {
            turns.push(Vec::new());
        }
        if let Some(t) = turns.last_mut() {
            t.extend(block(m)?);
        }
    }
    // Keep the newest turns that fit.
    let mut budget = max_prompt_tokens - fixed;
    let mut first_kept = turns.len();
    while first_kept > 0 && turns[first_kept - 1].len() <= budget {
        budget -= turns[first_kept - 1].len();
        first_kept -= 1;
    }

    let mut ids = system_ids;
    for t in &turns[first_kept..] {
        ids.extend_from_slice(t);
    }
    ids.extend(kept_ids);
    ids.extend(generation);
    Ok(ids)
}
