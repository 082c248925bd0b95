//! Chat prompts: the OpenAI-shaped request types ([`ChatMessage`], [`ChatRequest`],
//! [`ToolCall`], [`ToolChoice`]) and [`chat_prompt`], which renders a request with the
//! checkpoint's own template ([`ChatTemplate`], the template module) into ids within a token
//! budget, with what the reply parser needs ([`ChatPrompt::prefill`], [`ReplyFormat`]). A
//! conversation that outgrows the budget loses its oldest turns in blocks ([`DROP_BLOCKS`]), so
//! the KV cache stays reusable; a reply that fills the context goes on after the shorter prompt
//! [`continue_prompt`] gives.
//!
//! [`chat_prompt_ids`] is the older ChatML-only builder (the fallback's layout, without the
//! default system prompt, tools or tool messages):
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! Tokens are built as the Qwen v1 reference does (`make_context` in
//! `qwen_generation_utils.py`): the role name, `\n` and the content are encoded separately,
//! content with no special tokens allowed, and the markers are inserted as ids. So message
//! content can never produce `<|im_end|>` or any other control token.

use super::template::{ChatTemplate, Layout, Rendered};
use super::Tokenizer;
use crate::error::{Error, Result};
use std::ops::Range;

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
    /// A tool's result (OpenAI `role: "tool"`, with `tool_call_id`).
    Tool,
}

impl Role {
    /// The role name as written in the prompt.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text; `null` (an assistant message with only tool calls) reads as "".
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// An assistant's reasoning (Qwen3's `<think>` text), given apart from `content`; the
    /// template decides whether the prompt shows it (Qwen3's shows it only after the last
    /// user message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The tool calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// OpenAI's optional participant or tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(<Option<String> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

impl ChatMessage {
    /// A message with only a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
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
    /// A tool's result for the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(tool_call_id.into()), ..Self::new(Role::Tool, content) }
    }
}

/// A tool call an assistant message made (OpenAI's `tool_calls[]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The call's id, which the `tool` message with its result names.
    #[serde(default)]
    pub id: String,
    /// Always "function".
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

/// The function a [`ToolCall`] calls.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionCall {
    /// The function's name (one of the request's tools).
    pub name: String,
    /// The arguments as JSON text, as OpenAI sends them (an object given instead is kept as
    /// its JSON text). Templates get the parsed object when it is one (see the template module).
    #[serde(deserialize_with = "json_text")]
    pub arguments: String,
}

fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Null => Ok(String::new()),
        other => Ok(other.to_string()),
    }
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (OpenAI's default when tools are given).
    #[default]
    Auto,
    /// No tool call: the prompt is the same as `Auto`'s; the generator must forbid the call
    /// syntax (a logit bias on `<tool_call>`).
    None,
    /// Some tool call: the prompt ends with the start of one ([`ChatPrompt::prefill`]).
    Required,
    /// This function: the prompt ends with the start of a call to it.
    Function(String),
}

impl<'de> serde::Deserialize<'de> for ToolChoice {
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name": ..}}`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                other => Err(D::Error::custom(format!(
                    "tool_choice must be \"auto\", \"none\", \"required\" or a function, not {other:?}"
                ))),
            },
            serde_json::Value::Null => Ok(ToolChoice::Auto),
            _ => match v.pointer("/function/name").and_then(|n| n.as_str()) {
                Some(name) => Ok(ToolChoice::Function(name.to_string())),
                None => Err(D::Error::custom(
                    "tool_choice object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )),
            },
        }
    }
}

impl serde::Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}}).serialize(s)
            }
        }
    }
}

/// How the model writes a tool call in its reply, so the reply parser knows what to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyFormat {
    /// No tools in the request: the reply is text (and maybe reasoning).
    #[default]
    Plain,
    /// `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>` (Qwen2, Qwen2.5, Qwen3).
    Hermes,
    /// Qwen v1's ReAct text (`Thought:`, `Action:`, `Action Input:`, stop at `Observation:`).
    #[serde(rename = "react")]
    ReAct,
}

/// What a chat prompt is made of.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest<'a> {
    /// The conversation, oldest first.
    pub messages: &'a [ChatMessage],
    /// OpenAI tool objects `{type: "function", function: {name, description, parameters}}`,
    /// given to the template as they are (key order kept).
    pub tools: &'a [serde_json::Value],
    /// Passed to the template as `enable_thinking` when set (Qwen3's switch).
    pub enable_thinking: Option<bool>,
    /// Whether and which tool the reply must call (see [`chat_prompt`]).
    pub tool_choice: ToolChoice,
}

impl<'a> ChatRequest<'a> {
    /// A request of these messages, without tools.
    pub fn new(messages: &'a [ChatMessage]) -> Self {
        ChatRequest { messages, ..Default::default() }
    }
}

/// A chat prompt as ids, and what the reply parser needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// The prompt as text (what the ids decode to).
    pub text: String,
    /// `text.len()` in bytes.
    pub text_len: usize,
    /// Old messages left out to fit the budget.
    pub dropped_messages: usize,
    /// Tokens the full prompt had beyond the one returned: what the left-out messages took,
    /// as the template renders them (approximate where the template renders the kept messages
    /// differently without them).
    pub dropped_tokens: usize,
    /// Text the prompt ends with that the reply parser must treat as already part of the
    /// reply: `<tool_call>\n` (tool_choice required), the start of a named call, an open
    /// `<think>\n`, ReAct's `Thought:`. Empty when none.
    pub prefill: String,
    /// How to parse the reply: tool calls in the Hermes or ReAct syntax, or plain text.
    pub reply_format: ReplyFormat,
}

/// Builds the ChatML prompt, ending with the generation prompt `<|im_start|>assistant\n`.
///
/// When the prompt would exceed `max_prompt_tokens`, the oldest turns (a user message and the
/// replies that follow it) are dropped, keeping a leading system message and everything from
/// the last user message on. If even that does not fit, an [`Error::ContextFull`] says by how much.
/// No system message is invented: add [`DEFAULT_SYSTEM_PROMPT`] yourself when you want it.
pub fn chat_prompt_ids(tok: &Tokenizer, messages: &[ChatMessage], max_prompt_tokens: usize) -> Result<Vec<u32>> {
    if messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty()) {
        return Err(Error::Request(
            "tool calls and tool messages need the model's chat template (chat_prompt), not plain ChatML".into(),
        ));
    }
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

/// How many blocks a prompt budget splits into when [`chat_prompt`] leaves out old turns:
/// turns go in blocks of about `budget / DROP_BLOCKS` tokens ([`drop_block`]).
///
/// Why blocks: leaving out only as many turns as needed would drop one more turn with nearly
/// every new turn once a conversation overflows, so the prompt's prefix after the system
/// message would change every time and the KV cache could not be reused (every turn would
/// re-prefill almost the whole context). Dropping a block at a time keeps the prefix unchanged
/// for about a block's worth of new turns; each jump re-prefills what is kept (about
/// `budget - block` tokens). A bigger block means fewer jumps but less history kept after one:
/// with a quarter, the prompt holds between about three quarters of the budget (just after a
/// jump) and all of it, and the jumps cost, amortised, about three prefilled tokens per token of
/// new text: a few turns' worth per turn rather than the whole context.
pub const DROP_BLOCKS: usize = 4;

/// The block size, in tokens, in which [`chat_prompt`] leaves out old turns for a budget of
/// `max_prompt_tokens`: `max(max_prompt_tokens / DROP_BLOCKS, 1)`.
pub fn drop_block(max_prompt_tokens: usize) -> usize {
    (max_prompt_tokens / DROP_BLOCKS).max(1)
}

/// The prompt for `req` as `tpl` renders it, as ids, within `max_prompt_tokens`.
///
/// The ids are what transformers' `apply_chat_template(..., tokenize=True)` gives for the same
/// text (special and added tokens such as `<|im_start|>` and `<think>` recognised), except that
/// special-token strings inside caller-given strings (message content, reasoning, tool results
/// and arguments, tool definitions) stay plain text, so a user writing `<|im_end|>` cannot end
/// a message. The ChatML fallback encodes its parts separately, as Qwen v1's `make_context`.
///
/// Over the budget, the oldest turns are left out (a turn starts at a user message; the tool
/// results stay with the assistant message that called them), keeping a leading system
/// message and everything from the last user message on, **in blocks** so that the prompt's
/// prefix stays the same while the conversation grows (and the KV cache stays reusable):
/// with `full` the full prompt's length, `cum(k)` the tokens the first `k` turns take
/// (`full` minus the length with them left out, which does not change as turns are appended),
/// `D = full - budget` and `B =` [`drop_block`]`(budget)`, the fewest turns `k` with
/// `cum(k) >= ceil(D / B) * B` are left out, so `k` only changes when `D` crosses a multiple
/// of `B`, about once per `B` tokens of new turns. When no `k` reaches that but leaving out all
/// of them fits, all are left out. The number is found by a galloping search down from
/// leaving out all (then bisection), so a long chat costs one full render and O(log kept
/// turns) renders of budget-sized prompts. If even the least prompt does not fit:
/// [`Error::ContextFull`] saying by how much. [`ChatPrompt::dropped_messages`] and
/// [`ChatPrompt::dropped_tokens`] say what was left out.
///
/// `tool_choice`: `Required` ends the prompt with the start of a call (`<tool_call>\n`, or
/// ReAct's `Thought:`), `Function(name)` with the call's name (`<tool_call>\n{"name": "NAME",
/// "arguments":`, or ReAct's `Thought: \nAction: NAME\nAction Input:`); that text is also in
/// [`ChatPrompt::prefill`]. A function not among `tools`, or a forced call without tools, is an
/// [`Error::Request`].
pub fn chat_prompt(
    tok: &Tokenizer,
    tpl: &ChatTemplate,
    req: &ChatRequest,
    max_prompt_tokens: usize,
) -> Result<ChatPrompt> {
    let t = Turns::new(tok, tpl, req)?;
    let full = t.build(0)?;
    if full.ids.len() <= max_prompt_tokens {
        return Ok(full);
    }
    let n = t.count();
    let least = t.build(n)?;
    if least.ids.len() > max_prompt_tokens {
        return Err(Error::ContextFull(format!(
            "the prompt needs {} tokens even with only the system message and the last user \
             message (and what follows it), {} over the budget of {max_prompt_tokens}: shorten the message",
            least.ids.len(),
            least.ids.len() - max_prompt_tokens
        )));
    }
    let over = full.ids.len() - max_prompt_tokens;
    let block = drop_block(max_prompt_tokens);
    let target = over.div_ceil(block).saturating_mul(block);
    // cum(k) >= target  <=>  len(prompt with k turns left out) <= full - target.
    let limit = full.ids.len().saturating_sub(target);
    let (k, mut best) = if least.ids.len() <= limit { t.fewest(limit, n, least)? } else { (n, least) };
    best.dropped_messages = t.dropped_messages(k);
    best.dropped_tokens = full.ids.len().saturating_sub(best.ids.len());
    Ok(best)
}

/// The prompt to go on with when a reply to `req` filled the context: the same rendering as
/// [`chat_prompt`]'s with (more) old turns left out, the fewest such that the prompt, the
/// `reply_len` tokens generated so far and room for the reply to go on fit in `context`:
/// `ids.len() + reply_len + room <= context` with `room = min(remaining, max(context / 4, 1))`,
/// `remaining` being how many more tokens the reply may take (`max_new_tokens` minus those
/// generated). Pass the ids to [`crate::generate::Generator::resume`], which appends the
/// generated tokens itself and reuses the cached prefix.
///
/// Why `room`: each continuation re-prefills what follows the prefix it shares with the cache,
/// so it should buy a good stretch of new tokens (a quarter of the context), not one.
///
/// `Ok(None)` when nothing more can be generated (`remaining == 0`) or even the least prompt
/// (the system message and everything from the last user message on) does not leave that
/// room: the reply then ends (OpenAI's finish reason "length"). Errors only for a request
/// [`chat_prompt`] refuses too.
pub fn continue_prompt(
    tok: &Tokenizer,
    tpl: &ChatTemplate,
    req: &ChatRequest,
    reply_len: usize,
    context: usize,
    remaining: usize,
) -> Result<Option<ChatPrompt>> {
    let t = Turns::new(tok, tpl, req)?;
    if remaining == 0 {
        return Ok(None);
    }
    let room = remaining.min((context / 4).max(1));
    let Some(limit) = context.checked_sub(reply_len.saturating_add(room)) else { return Ok(None) };
    let n = t.count();
    let least = t.build(n)?;
    if least.ids.len() > limit {
        return Ok(None);
    }
    let full = t.build(0)?;
    if full.ids.len() <= limit {
        return Ok(Some(full));
    }
    let (k, mut best) = t.fewest(limit, n, least)?;
    best.dropped_messages = t.dropped_messages(k);
    best.dropped_tokens = full.ids.len().saturating_sub(best.ids.len());
    Ok(Some(best))
}

/// A request split into what may be left out: a leading system message, the droppable turns
/// (each starting at a user message; leading non-user messages form their own turn) and what
/// is always kept (everything from the last user message on).
struct Turns<'t, 'r> {
    tok: &'t Tokenizer,
    tpl: &'t ChatTemplate,
    req: &'t ChatRequest<'r>,
    /// Special-token strings, longest first.
    specials: Vec<&'t str>,
    system: Option<&'r ChatMessage>,
    droppable: &'r [ChatMessage],
    kept: &'r [ChatMessage],
    /// Where each droppable turn starts, then `droppable.len()`: leaving out `k` turns keeps
    /// `droppable[starts[k]..]`.
    starts: Vec<usize>,
}

impl<'t, 'r> Turns<'t, 'r> {
    /// Checks the request (messages, tool_choice) and splits it.
    fn new(tok: &'t Tokenizer, tpl: &'t ChatTemplate, req: &'t ChatRequest<'r>) -> Result<Self> {
        if req.messages.is_empty() {
            return Err(Error::Request("messages must not be empty".into()));
        }
        match &req.tool_choice {
            ToolChoice::Required if req.tools.is_empty() => {
                return Err(Error::Request("tool_choice \"required\" needs tools".into()));
            }
            ToolChoice::Function(name) => {
                let known = req.tools.iter().any(|t| {
                    let f = t.get("function").unwrap_or(t);
                    f.get("name").and_then(|n| n.as_str()) == Some(name.as_str())
                });
                if !known {
                    return Err(Error::Request(format!(
                        "tool_choice names the function {name:?}, which is not in tools"
                    )));
                }
            }
            _ => {}
        }
        let mut specials: Vec<&str> = tok.inner.specials.keys().map(String::as_str).collect();
        // Longest first: at one position the longest added token wins (as in transformers).
        specials.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        let messages: &'r [ChatMessage] = req.messages;
        let (system, rest) = match messages.split_first() {
            Some((first, rest)) if first.role == Role::System => (Some(first), rest),
            _ => (None, messages),
        };
        let keep_from = rest.iter().rposition(|m| m.role == Role::User).unwrap_or(rest.len().saturating_sub(1));
        let (droppable, kept) = rest.split_at(keep_from);
        let mut starts: Vec<usize> =
            (0..droppable.len()).filter(|&i| i == 0 || droppable[i].role == Role::User).collect();
        starts.push(droppable.len());
        Ok(Turns { tok, tpl, req, specials, system, droppable, kept, starts })
    }

    /// How many turns may be left out.
    fn count(&self) -> usize {
        self.starts.len() - 1
    }

    /// How many messages leaving out `k` turns leaves out.
    fn dropped_messages(&self, k: usize) -> usize {
        self.starts[k]
    }

    /// The prompt with the first `k` turns left out (`dropped_*` not set).
    fn build(&self, k: usize) -> Result<ChatPrompt> {
        let mut v: Vec<ChatMessage> = self.system.into_iter().cloned().collect();
        v.extend_from_slice(&self.droppable[self.starts[k]..]);
        v.extend_from_slice(self.kept);
        let sub = ChatRequest { messages: &v, ..self.req.clone() };
        let rendered = self.tpl.render_parts(&sub, true, &self.specials)?;
        finish_prompt(self.tok, &self.specials, rendered, &self.req.tool_choice)
    }

    /// The fewest turns to leave out for a prompt of at most `limit` tokens, given that leaving
    /// out none does not fit and leaving out `hi` (whose prompt is `hi_prompt`) does. The
    /// search gallops down from `hi` (1, 2, 4, ... turns fewer) and then bisects: the answer
    /// keeps about a budget's worth of turns, so the prompts rendered are short ones, and a
    /// long chat costs O(log kept turns) short renders besides the full one.
    fn fewest(&self, limit: usize, hi: usize, hi_prompt: ChatPrompt) -> Result<(usize, ChatPrompt)> {
        let (mut lo, mut hi, mut best) = (0, hi, hi_prompt);
        let mut step = 1;
        while hi - lo > 1 {
            let mid = hi.saturating_sub(step).max(lo + 1);
            let p = self.build(mid)?;
            if p.ids.len() <= limit {
                (hi, best) = (mid, p);
                step *= 2;
            } else {
                lo = mid;
                break;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let p = self.build(mid)?;
            if p.ids.len() <= limit {
                (hi, best) = (mid, p);
            } else {
                lo = mid;
            }
        }
        Ok((hi, best))
    }
}

/// Adds what `tool_choice` forces to a rendered prompt, and encodes it.
fn finish_prompt(tok: &Tokenizer, specials: &[&str], r: Rendered, choice: &ToolChoice) -> Result<ChatPrompt> {
    let Rendered { mut text, layout, reply_prefix, reply_format } = r;
    let mut prefill = reply_prefix;
    let mut layout = layout;
    let forced = matches!(choice, ToolChoice::Required | ToolChoice::Function(_));
    if forced && reply_format != ReplyFormat::Plain {
        // (suffix text, byte range of it to keep as plain text: the caller's function name)
        let mut suffix = String::new();
        let mut name_range = None;
        match reply_format {
            ReplyFormat::Hermes => {
                if prefill.starts_with("<think>") {
                    // A generation prompt that opened <think> (QwQ's): close it empty first.
                    suffix.push_str("\n</think>\n\n");
                }
                suffix.push_str("<tool_call>\n");
                if let ToolChoice::Function(name) = choice {
                    suffix.push_str("{\"name\": \"");
                    let at = suffix.len();
                    suffix.push_str(name);
                    name_range = Some(at..suffix.len());
                    // No space after the colon: the model writes ` {` as one token.
                    suffix.push_str("\", \"arguments\":");
                }
            }
            ReplyFormat::ReAct => {
                let after_thought = prefill.ends_with("Thought:");
                match choice {
                    ToolChoice::Function(name) => {
                        suffix.push_str(if after_thought { " \nAction: " } else { "Thought: \nAction: " });
                        let at = suffix.len();
                        suffix.push_str(name);
                        name_range = Some(at..suffix.len());
                        suffix.push_str("\nAction Input:");
                    }
                    _ if !after_thought => suffix.push_str("Thought:"),
                    _ => {}
                }
            }
            ReplyFormat::Plain => {}
        }
        let base = text.len();
        text.push_str(&suffix);
        prefill.push_str(&suffix);
        match &mut layout {
            Layout::Pieces(p) => {
                if !suffix.is_empty() {
                    p.push((base..text.len(), false));
                }
            }
            Layout::Protected(p) => {
                if let Some(r) = name_range {
                    p.push(base + r.start..base + r.end);
                }
            }
        }
    }
    let ids = encode_layout(tok, specials, &text, &layout)?;
    Ok(ChatPrompt { ids, text_len: text.len(), text, dropped_messages: 0, dropped_tokens: 0, prefill, reply_format })
}

/// Encodes a rendered text: ChatML pieces one by one; a Jinja text with its special-token
/// strings as ids (leftmost, longest first, as transformers' added-token split) except those
/// touching a protected range, and the text between them encoded as plain text. The added
/// tokens' `lstrip`/`rstrip`/`single_word` flags are not applied (all false in Qwen's files).
fn encode_layout(tok: &Tokenizer, specials: &[&str], text: &str, layout: &Layout) -> Result<Vec<u32>> {
    let special_id = |s: &str| {
        tok.token_to_id(s)
            .ok_or_else(|| Error::Tokenizer(format!("the vocabulary has no {s} token, cannot build a chat prompt")))
    };
    let mut ids = Vec::new();
    match layout {
        Layout::Pieces(pieces) => {
            for (r, special) in pieces {
                if *special {
                    ids.push(special_id(&text[r.clone()])?);
                } else {
                    ids.extend(tok.encode(&text[r.clone()])?);
                }
            }
        }
        Layout::Protected(protected) => {
            let touches = |r: &Range<usize>| protected.iter().any(|p| p.start < r.end && r.start < p.end);
            let bytes = text.as_bytes();
            let mut first = [false; 256];
            for s in specials.iter().filter(|s| !s.is_empty()) {
                first[s.as_bytes()[0] as usize] = true;
            }
            let mut seg_start = 0;
            let mut i = 0;
            while i < bytes.len() {
                if !first[bytes[i] as usize] {
                    i += 1;
                    continue;
                }
                let hit = specials.iter().find(|s| !s.is_empty() && bytes[i..].starts_with(s.as_bytes()));
                match hit {
                    Some(s) if !touches(&(i..i + s.len())) => {
                        ids.extend(tok.encode(&text[seg_start..i])?);
                        ids.push(special_id(s)?);
                        i += s.len();
                        seg_start = i;
                    }
                    _ => i += 1,
                }
            }
            ids.extend(tok.encode(&text[seg_start..])?);
        }
    }
    Ok(ids)
}
