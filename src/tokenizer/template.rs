//! The checkpoint's own chat template: `tokenizer_config.json`'s Jinja `chat_template`, rendered
//! as Hugging Face transformers renders it, or today's ChatML when a checkpoint has none (Qwen v1).
//!
//! transformers' `apply_chat_template` runs jinja2 with `trim_blocks` and `lstrip_blocks`, a
//! `tojson` of its own (`json.dumps(x, ensure_ascii=False, ...)`: `", "` and `": "`
//! separators, no HTML escaping, the caller's key order), `raise_exception(msg)` and
//! `strftime_now(fmt)`, and the variables `messages`, `tools` (none without tools),
//! `documents` (none), `add_generation_prompt`, the special tokens (`bos_token`, `eos_token`)
//! and extra keyword arguments (`enable_thinking`). We run the same template with minijinja,
//! set up to match: the same whitespace control, Python's string methods (`.startswith`,
//! `.split`, `.strip`, ... from minijinja-contrib's pycompat), that `tojson`, and Python's
//! spelling of `None`/`True`/`False` when a value is printed. tests/template.rs compares text
//! and ids with transformers on the real Qwen3, Qwen2.5 and QwQ templates.
//!
//! Tool calls in the prompt: OpenAI clients send a call's `arguments` as JSON text, while Qwen's
//! templates expect an object (Qwen2.5's writes `arguments | tojson`; Qwen3's writes a string
//! as it is and an object with `tojson`). Like vLLM, we hand the template the parsed object
//! when the text is a JSON object, so a history of calls renders as the model wrote them
//! (`{"city": "Paris"}`, json.dumps' spacing); other text is passed as the string it is.
//!
//! Checkpoints whose template does not know tools (Qwen v1's ChatML fallback, Qwen1.5's
//! template) get the ReAct prompt of Qwen's own `openai_api.py` (QwenLM/Qwen, `parse_messages`)
//! when a request has tools or a history of tool calls: see [`react_messages`].

use super::chat::{ChatMessage, ChatRequest, ReplyFormat, Role};
use crate::error::{Error, Result};
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, State, Value};
use std::ops::Range;

/// The system prompt Qwen v1's `make_context` (and openai_api.py) use when the first message
/// is not a system one.
pub const CHATML_DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// A chat template: a compiled Jinja template (compiled once, rendered per request) or the
/// ChatML fallback for checkpoints without one.
#[derive(Clone)]
pub struct ChatTemplate {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    ChatMl,
    Jinja(Box<Jinja>),
}

#[derive(Clone)]
struct Jinja {
    env: Environment<'static>,
    /// A separate "tool_use" template (a tokenizer_config.json with a list of templates).
    has_tool_use: bool,
    /// Whether each template (default, tool_use) mentions `tools` at all; one that does not
    /// gets the ReAct prompt when a request has tools.
    default_knows_tools: bool,
    tool_use_knows_tools: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::ChatMl => f.write_str("ChatTemplate::ChatMl"),
            Kind::Jinja(j) => f
                .debug_struct("ChatTemplate::Jinja")
                .field("tool_use", &j.has_tool_use)
                .field("bos_token", &j.bos_token)
                .field("eos_token", &j.eos_token)
                .finish(),
        }
    }
}

/// Marks the errors `raise_exception` makes, so they come back as request errors (the template
/// refuses these messages) rather than as a broken template.
const RAISED: &str = "raise_exception: ";

impl ChatTemplate {
    /// Compiles a Jinja chat template. `bos_token`/`eos_token` are the template variables of
    /// the same name (from tokenizer_config.json; a GGUF file names them too). A template that
    /// does not compile is an [`Error::Tokenizer`] with minijinja's message and line.
    pub fn jinja(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<ChatTemplate> {
        Self::jinja_with_tool_use(source, None, bos_token, eos_token)
    }

    fn jinja_with_tool_use(
        source: &str,
        tool_use: Option<&str>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<ChatTemplate> {
        let mut env = environment();
        env.add_template_owned("default", source.to_string())
            .map_err(|e| Error::Tokenizer(format!("the chat template does not compile: {e}")))?;
        if let Some(t) = tool_use {
            env.add_template_owned("tool_use", t.to_string())
                .map_err(|e| Error::Tokenizer(format!("the tool_use chat template does not compile: {e}")))?;
        }
        Ok(ChatTemplate {
            kind: Kind::Jinja(Box::new(Jinja {
                env,
                has_tool_use: tool_use.is_some(),
                default_knows_tools: source.contains("tools"),
                tool_use_knows_tools: tool_use.is_some_and(|t| t.contains("tools")),
                bos_token: bos_token.map(str::to_string),
                eos_token: eos_token.map(str::to_string),
            })),
        })
    }

    /// The fallback for checkpoints without a template (Qwen v1): ChatML as Qwen v1's
    /// `make_context` builds it, with the system prompt "You are a helpful assistant." when the
    /// first message is not a system one; with tools (or tool messages) the ReAct prompt of
    /// Qwen's openai_api.py.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate { kind: Kind::ChatMl }
    }

    /// Reads tokenizer_config.json's text: `chat_template` as a string, or a list of
    /// `{name, template}` (the "default" one, and "tool_use" for requests with tools when it
    /// exists); `bos_token`/`eos_token` as strings or `{content: ..}` objects. `Ok(None)` when
    /// the config has no template (use [`ChatTemplate::chatml`]); an error when the JSON or the
    /// template is bad.
    pub fn from_tokenizer_config(json: &str) -> Result<Option<ChatTemplate>> {
        let bad = |m: String| Error::Tokenizer(format!("tokenizer_config.json: {m}"));
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let token = |key: &str| -> Result<Option<String>> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(o) => match o.get("content").and_then(|c| c.as_str()) {
                    Some(s) => Ok(Some(s.to_string())),
                    None => Err(bad(format!("{key} is neither a string nor an object with a content string"))),
                },
            }
        };
        let (bos, eos) = (token("bos_token")?, token("eos_token")?);
        let (default, tool_use) = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => (s.clone(), None),
            Some(serde_json::Value::Array(list)) => {
                let mut named = Vec::new();
                for item in list {
                    let name = item.get("name").and_then(|n| n.as_str());
                    let text = item.get("template").and_then(|t| t.as_str());
                    match (name, text) {
                        (Some(n), Some(t)) => named.push((n, t)),
                        _ => return Err(bad("chat_template list items must be {name, template} strings".into())),
                    }
                }
                let find = |n: &str| named.iter().find(|(name, _)| *name == n).map(|(_, t)| t.to_string());
                let default = find("default").ok_or_else(|| {
                    let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
                    bad(format!("chat_template list has no \"default\" template (it has {names:?})"))
                })?;
                (default, find("tool_use"))
            }
            Some(_) => return Err(bad("chat_template is neither a string nor a list".into())),
        };
        Self::jinja_with_tool_use(&default, tool_use.as_deref(), bos.as_deref(), eos.as_deref()).map(Some)
    }

    /// The template of a model folder: `chat_template.jinja` (newer transformers save it
    /// there), else tokenizer_config.json's `chat_template`, else [`ChatTemplate::chatml`].
    /// Missing files are not errors; unreadable or bad ones are.
    pub fn from_model_dir(dir: &std::path::Path) -> Result<ChatTemplate> {
        let read = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let bytes = crate::files::read_capped(&path, crate::files::TOKENIZER_CAP)?;
            String::from_utf8(bytes).map(Some).map_err(|_| Error::Tokenizer(format!("{}: not UTF-8", path.display())))
        };
        let config = read("tokenizer_config.json")?;
        if let Some(source) = read("chat_template.jinja")? {
            let (mut bos, mut eos) = (None, None);
            if let Some(c) = &config {
                // The tokens only: the config's own chat_template (if any) is overridden.
                let v: serde_json::Value =
                    serde_json::from_str(c).map_err(|e| Error::Tokenizer(format!("tokenizer_config.json: {e}")))?;
                let tok = |k: &str| {
                    v.get(k)
                        .and_then(|t| t.as_str().or_else(|| t.get("content").and_then(|c| c.as_str())))
                        .map(str::to_string)
                };
                (bos, eos) = (tok("bos_token"), tok("eos_token"));
            }
            return Self::jinja(&source, bos.as_deref(), eos.as_deref());
        }
        match config {
            Some(c) => Ok(Self::from_tokenizer_config(&c)?.unwrap_or_else(Self::chatml)),
            None => Ok(Self::chatml()),
        }
    }

    /// Whether this is the ChatML fallback (no template in the checkpoint).
    pub fn is_fallback(&self) -> bool {
        matches!(self.kind, Kind::ChatMl)
    }

    /// The prompt text for `req`, as transformers' `apply_chat_template(messages, tools=...,
    /// add_generation_prompt=..., enable_thinking=...)` renders it (`tool_choice` is not part
    /// of it: [`super::chat_prompt`] adds what a forced tool call needs).
    pub fn render(&self, req: &ChatRequest, add_generation_prompt: bool) -> Result<String> {
        Ok(self.render_parts(req, add_generation_prompt, &[])?.text)
    }

    /// Renders `req` and says how its text becomes ids (see [`Rendered`]). `specials` are the
    /// tokenizer's special/added token strings: special-token strings inside caller-given
    /// strings are found so they can stay text.
    pub(crate) fn render_parts(
        &self,
        req: &ChatRequest,
        add_generation_prompt: bool,
        specials: &[&str],
    ) -> Result<Rendered> {
        let with_tools = !req.tools.is_empty();
        let has_tool_history = req.messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        match &self.kind {
            Kind::ChatMl => {
                if with_tools || has_tool_history {
                    let r = react_messages(req.messages, req.tools)?;
                    let mut out = chatml_pieces(&r.messages, add_generation_prompt && !r.open, r.open);
                    if r.open {
                        out.reply_prefix = r.reply_prefix;
                    }
                    out.reply_format = if with_tools { ReplyFormat::ReAct } else { ReplyFormat::Plain };
                    Ok(out)
                } else {
                    let mut msgs;
                    let messages = if req.messages.first().map(|m| m.role) != Some(Role::System) {
                        msgs = vec![ChatMessage::system(CHATML_DEFAULT_SYSTEM)];
                        msgs.extend_from_slice(req.messages);
                        &msgs[..]
                    } else {
                        req.messages
                    };
                    Ok(chatml_pieces(messages, add_generation_prompt, false))
                }
            }
            Kind::Jinja(j) => {
                let use_tool_use = with_tools && j.has_tool_use;
                let (name, knows_tools) = if use_tool_use {
                    ("tool_use", j.tool_use_knows_tools)
                } else {
                    ("default", j.default_knows_tools)
                };
                if !knows_tools && (with_tools || has_tool_history) {
                    // A template without tools (Qwen1.5's): ReAct, written into the messages.
                    let r = react_messages(req.messages, req.tools)?;
                    let sub = ChatRequest { messages: &r.messages, tools: &[], ..req.clone() };
                    let mut out = j.render(name, &sub, add_generation_prompt && !r.open, specials)?;
                    if r.open {
                        // As transformers' continue_final_message: cut after the last message.
                        let last = r.messages.last().map(|m| m.content.as_str()).unwrap_or("");
                        if let Some(at) = out.text.rfind(last) {
                            out.text.truncate(at + last.len());
                        }
                        out.reply_prefix = r.reply_prefix;
                    }
                    out.reply_format = if with_tools { ReplyFormat::ReAct } else { ReplyFormat::Plain };
                    return Ok(out);
                }
                let mut out = j.render(name, req, add_generation_prompt, specials)?;
                out.reply_format = if with_tools { ReplyFormat::Hermes } else { ReplyFormat::Plain };
                // A generation prompt that opens `<think>` (QwQ's): the reply starts in reasoning.
                let trimmed = out.text.trim_end();
                if add_generation_prompt && trimmed.ends_with("<think>") {
                    let at = trimmed.len() - "<think>".len();
                    let protected =
                        matches!(&out.layout, Layout::Protected(p) if p.iter().any(|r| r.start < at + 7 && at < r.end));
                    if !protected {
                        out.reply_prefix = out.text[at..].to_string();
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A rendered prompt and how its text becomes ids.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub text: String,
    pub layout: Layout,
    /// Text the prompt ends with that belongs to the reply (an open `<think>\n`, ReAct's
    /// `Thought:` after a tool result).
    pub reply_prefix: String,
    pub reply_format: ReplyFormat,
}

/// How a rendered text becomes ids.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// The ChatML fallback: the text in pieces, each a special token (one id) or text encoded
    /// on its own with specials as plain text (as Qwen v1's make_context encodes).
    Pieces(Vec<(Range<usize>, bool)>),
    /// A Jinja template: special-token strings are recognised in the whole text, as
    /// transformers does, except those overlapping these byte ranges (they came from
    /// caller-given strings and stay text).
    Protected(Vec<Range<usize>>),
}

/// ChatML as Qwen v1's make_context builds it; `open_last`: the last (assistant) message is
/// left open, without its `<|im_end|>\n` (ReAct's text completion, openai_api.py's
/// `text_complete_last_message`).
fn chatml_pieces(messages: &[ChatMessage], add_generation_prompt: bool, open_last: bool) -> Rendered {
    let mut text = String::new();
    let mut pieces = Vec::new();
    let mut push = |text: &mut String, s: &str, special: bool| {
        let start = text.len();
        text.push_str(s);
        pieces.push((start..text.len(), special));
    };
    for m in messages {
        push(&mut text, super::IM_START, true);
        push(&mut text, m.role.as_str(), false);
        push(&mut text, "\n", false);
        push(&mut text, &m.content, false);
        push(&mut text, super::IM_END, true);
        push(&mut text, "\n", false);
    }
    if add_generation_prompt {
        push(&mut text, super::IM_START, true);
        push(&mut text, Role::Assistant.as_str(), false);
        push(&mut text, "\n", false);
    } else if open_last && !messages.is_empty() {
        pieces.truncate(pieces.len() - 2);
        text.truncate(pieces.last().map(|p| p.0.end).unwrap_or(0));
    }
    Rendered { text, layout: Layout::Pieces(pieces), reply_prefix: String::new(), reply_format: ReplyFormat::Plain }
}

impl Jinja {
    fn render(
        &self,
        name: &str,
        req: &ChatRequest,
        add_generation_prompt: bool,
        specials: &[&str],
    ) -> Result<Rendered> {
        let tmpl = self.env.get_template(name).map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let messages: Vec<serde_json::Value> = req.messages.iter().map(message_json).collect();
        let text = self.render_values(&tmpl, &messages, req.tools, req.enable_thinking, add_generation_prompt)?;

        // Which special-token strings in the text came from the caller? Render again with each
        // such string's first byte replaced by \x01 in every caller-given string: when the two
        // texts differ only there, those are exactly the caller's. When the template treats
        // the strings differently (it tests for `</think>`, say), fall back to finding the
        // caller's strings in the text, in order.
        let needs = |s: &str| specials.iter().any(|t| s.contains(t));
        let mut any = false;
        for m in &messages {
            visit_strings(m, &mut |s| any |= needs(s));
        }
        for t in req.tools {
            visit_strings(t, &mut |s| any |= needs(s));
        }
        let mut protected = Vec::new();
        if any {
            let twin = |v: &serde_json::Value| map_strings(v, &|s| twin_specials(s, specials));
            let messages2: Vec<serde_json::Value> = messages.iter().map(twin).collect();
            let tools2: Vec<serde_json::Value> = req.tools.iter().map(twin).collect();
            let text2 = self.render_values(&tmpl, &messages2, &tools2, req.enable_thinking, add_generation_prompt);
            let aligned = match &text2 {
                Ok(t2) if t2.len() == text.len() => {
                    let (a, b) = (text.as_bytes(), t2.as_bytes());
                    let mut marks = Vec::new();
                    let mut ok = true;
                    for i in 0..a.len() {
                        if a[i] != b[i] {
                            if b[i] == 0x01 && specials.iter().any(|t| a[i..].starts_with(t.as_bytes())) {
                                marks.push(i..i + 1);
                            } else {
                                ok = false;
                                break;
                            }
                        }
                    }
                    ok.then_some(marks)
                }
                _ => None,
            };
            protected = match aligned {
                Some(marks) => marks,
                None => find_in_order(&text, &messages, req.tools, &needs),
            };
        }
        Ok(Rendered {
            text,
            layout: Layout::Protected(protected),
            reply_prefix: String::new(),
            reply_format: ReplyFormat::Plain,
        })
    }

    fn render_values(
        &self,
        tmpl: &minijinja::Template,
        messages: &[serde_json::Value],
        tools: &[serde_json::Value],
        enable_thinking: Option<bool>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from_serialize(messages)),
            ("tools", if tools.is_empty() { Value::from(()) } else { Value::from_serialize(tools) }),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        if let Some(b) = &self.bos_token {
            ctx.push(("bos_token", Value::from(b.as_str())));
        }
        if let Some(e) = &self.eos_token {
            ctx.push(("eos_token", Value::from(e.as_str())));
        }
        if let Some(t) = enable_thinking {
            ctx.push(("enable_thinking", Value::from(t)));
        }
        let ctx: Value = ctx.into_iter().collect();
        tmpl.render(ctx).map_err(template_error)
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let detail = e.detail().unwrap_or("");
    if let Some(msg) = detail.strip_prefix(RAISED) {
        return Error::Request(format!("the chat template refuses these messages: {msg}"));
    }
    // The whole chain: a filter's error is wrapped in the call that made it.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Tokenizer(format!("the chat template failed: {msg}"))
}

/// A message as transformers' templates see it (a Python dict): `role`, `content`, then the
/// optional fields only when present. Tool-call arguments that are a JSON object are parsed.
fn message_json(m: &ChatMessage) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("role".into(), m.role.as_str().into());
    o.insert("content".into(), m.content.clone().into());
    if let Some(r) = &m.reasoning_content {
        o.insert("reasoning_content".into(), r.clone().into());
    }
    if !m.tool_calls.is_empty() {
        let calls: Vec<serde_json::Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let args = match serde_json::from_str::<serde_json::Value>(&c.function.arguments) {
                    Ok(v @ serde_json::Value::Object(_)) => v,
                    _ => c.function.arguments.clone().into(),
                };
                serde_json::json!({
                    "id": c.id,
                    "type": c.kind,
                    "function": { "name": c.function.name, "arguments": args },
                })
            })
            .collect();
        o.insert("tool_calls".into(), calls.into());
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), id.clone().into());
    }
    if let Some(n) = &m.name {
        o.insert("name".into(), n.clone().into());
    }
    serde_json::Value::Object(o)
}

fn visit_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            f(k);
            visit_strings(x, f)
        }),
        _ => {}
    }
}

fn map_strings(v: &serde_json::Value, f: &dyn Fn(&str) -> String) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(f(s)),
        serde_json::Value::Array(a) => a.iter().map(|x| map_strings(x, f)).collect(),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, x)| (k.clone(), map_strings(x, f))).collect())
        }
        other => other.clone(),
    }
}

/// `s` with the first byte of every special-token string in it replaced by \x01 (same length).
fn twin_specials(s: &str, specials: &[&str]) -> String {
    let mut b = s.as_bytes().to_vec();
    for t in specials {
        if t.is_empty() || !t.as_bytes()[0].is_ascii() {
            continue;
        }
        let mut from = 0;
        while let Some(p) = s[from..].find(t) {
            b[from + p] = 0x01;
            from += p + t.len();
        }
    }
    // Only ASCII bytes were replaced by ASCII: still UTF-8.
    String::from_utf8(b).unwrap_or_else(|_| s.to_string())
}

/// The fallback protection: the caller's strings, looked for in the text in message order
/// (tools separately, from the start); those holding a special-token string are protected.
/// Message contents also serve as anchors that move the search on. A string the template
/// changed is looked for as Qwen's templates change it (trimmed of newlines or whitespace, cut
/// at `<think>`/`</think>` into parts); one that still is not found is not protected.
fn find_in_order(
    text: &str,
    messages: &[serde_json::Value],
    tools: &[serde_json::Value],
    needs: &dyn Fn(&str) -> bool,
) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    // Finds `s` (or a changed form of it) from `cursor` on; true when found.
    let seek = |s: &str, cursor: &mut usize, spans: &mut Vec<Range<usize>>| -> bool {
        let mut candidates = vec![s, s.trim_matches('\n'), s.trim()];
        candidates.dedup();
        for c in candidates {
            if c.is_empty() {
                continue;
            }
            if let Some(p) = text[*cursor..].find(c) {
                let at = *cursor + p;
                if needs(c) {
                    spans.push(at..at + c.len());
                }
                *cursor = at + c.len();
                return true;
            }
        }
        false
    };
    let seek_parts = |s: &str, cursor: &mut usize, spans: &mut Vec<Range<usize>>| {
        if !seek(s, cursor, spans) && needs(s) {
            for part in s.split("</think>").flat_map(|p| p.split("<think>")) {
                if needs(part) {
                    seek(part, cursor, spans);
                }
            }
        }
    };
    let mut cursor = 0;
    for m in messages {
        if let Some(r) = m.get("reasoning_content").and_then(|v| v.as_str()).filter(|r| needs(r)) {
            // Only when it needs protection: a template may leave earlier reasoning out, and a
            // string not rendered must not move the search on.
            seek_parts(r, &mut cursor, &mut spans);
        }
        if let Some(c) = m.get("content").and_then(|v| v.as_str()) {
            seek_parts(c, &mut cursor, &mut spans);
        }
        for c in m.get("tool_calls").and_then(|v| v.as_array()).into_iter().flatten() {
            let args = &c["function"]["arguments"];
            let s = match args.as_str() {
                Some(s) => s.to_string(),
                None => py_json_string(args),
            };
            if needs(&s) {
                seek(&s, &mut cursor, &mut spans);
            }
        }
    }
    let mut cursor = 0;
    for t in tools {
        let s = py_json_string(t);
        if needs(&s) {
            seek(&s, &mut cursor, &mut spans);
        }
    }
    spans
}

fn py_json_string(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = py_json(&Value::from_serialize(v), &mut out, &JsonStyle::default(), 0);
    out
}

// ---------------------------------------------------------------------------------------------
// The environment: transformers' jinja2 set-up in minijinja.

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// Prints values as Python's `str()` does where jinja2 differs from minijinja: `None`,
/// `True`/`False`, and lists/dicts as Python's repr.
fn python_formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Seq | ValueKind::Map if !value.is_undefined() => {
            let mut s = String::new();
            py_repr(value, &mut s, true);
            out.write_str(&s).map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python's `repr` (`str` at the top level for strings) of a value.
fn py_repr(v: &Value, out: &mut String, top: bool) {
    match v.kind() {
        ValueKind::None | ValueKind::Undefined => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::String if top => out.push_str(v.as_str().unwrap_or("")),
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            let q = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c)
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push(q);
        }
        ValueKind::Number if is_float(v) => {
            out.push_str(&py_float(f64::try_from(v.clone()).unwrap_or(f64::NAN), false))
        }
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, x) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&x, out, false);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, k) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&k, out, false);
                out.push_str(": ");
                py_repr(&v.get_item(&k).unwrap_or_default(), out, false);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

fn is_float(v: &Value) -> bool {
    // An integer-valued float still prints as `1.0` in Python.
    v.is_number() && !v.is_integer()
}

/// `raise_exception(msg)`: the template refuses the request.
fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{msg}")))
}

/// `strftime_now(fmt)`: the current time, formatted as Python's `strftime` (the common
/// directives; others are written as they are). Local time in the browser; UTC natively (the
/// crate carries no time-zone database).
fn strftime_now(fmt: String) -> Result<Value, minijinja::Error> {
    let (secs, offset_min) = now_unix();
    Ok(Value::from(strftime(&fmt, secs + offset_min * 60)))
}

#[cfg(target_arch = "wasm32")]
fn now_unix() -> (i64, i64) {
    let d = js_sys::Date::new_0();
    ((d.get_time() / 1000.0).floor() as i64, -(d.get_timezone_offset() as i64))
}

#[cfg(not(target_arch = "wasm32"))]
fn now_unix() -> (i64, i64) {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    (s, 0)
}

/// Python's `time.strftime` for a time given as seconds since 1970 (already in the wanted
/// zone). Directives: %Y %y %m %d %e %H %I %M %S %p %A %a %B %b %j %%, and glibc's `%-d`-style
/// no-padding flag.
pub(crate) fn strftime(fmt: &str, t: i64) -> String {
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (h, mi, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = doy_mar - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let wday = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday (Monday = 0)

    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let nopad = it.peek() == Some(&'-');
        if nopad {
            it.next();
        }
        let num = |v: i64, w: usize| if nopad { v.to_string() } else { format!("{v:0w$}") };
        match it.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&num(y.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(m, 2)),
            Some('d') => out.push_str(&num(d, 2)),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&num(h, 2)),
            Some('I') => out.push_str(&num(if h % 12 == 0 { 12 } else { h % 12 }, 2)),
            Some('M') => out.push_str(&num(mi, 2)),
            Some('S') => out.push_str(&num(s, 2)),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('A') => out.push_str(DAYS[wday as usize]),
            Some('a') => out.push_str(&DAYS[wday as usize][..3]),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('j') => out.push_str(&num(yday, 3)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if nopad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// tojson: Python's json.dumps.

/// json.dumps' formatting options.
pub(crate) struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl Default for JsonStyle {
    fn default() -> Self {
        JsonStyle { indent: None, item_sep: ", ".into(), key_sep: ": ".into(), sort_keys: false, ensure_ascii: false }
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(minijinja::Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let mut given: Vec<(&str, Value)> = names.iter().zip(args.iter()).map(|(n, v)| (*n, v.clone())).collect();
    for n in names {
        if let Some(v) = kwargs.get::<Option<Value>>(n)? {
            given.push((n, v));
        }
    }
    kwargs.assert_all_used()?;
    let mut style = JsonStyle::default();
    let mut separators = None;
    for (n, v) in given {
        match n {
            "ensure_ascii" => style.ensure_ascii = v.is_true(),
            "sort_keys" => style.sort_keys = v.is_true(),
            "indent" if v.is_none() || v.is_undefined() => style.indent = None,
            "indent" => {
                style.indent = Some(match v.as_str() {
                    Some(s) => s.to_string(),
                    None => {
                        let n = v.as_i64().ok_or_else(|| {
                            minijinja::Error::new(
                                ErrorKind::InvalidOperation,
                                "tojson: indent must be a number or a string",
                            )
                        })?;
                        " ".repeat(n.clamp(0, 64) as usize)
                    }
                })
            }
            "separators" if v.is_none() || v.is_undefined() => separators = None,
            _ => {
                let pair: Vec<Value> = v.try_iter()?.collect();
                match (pair.first().and_then(|x| x.as_str()), pair.get(1).and_then(|x| x.as_str()), pair.len()) {
                    (Some(a), Some(b), 2) => separators = Some((a.to_string(), b.to_string())),
                    _ => {
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson: separators must be two strings",
                        ))
                    }
                }
            }
        }
    }
    match separators {
        Some((a, b)) => (style.item_sep, style.key_sep) = (a, b),
        None if style.indent.is_some() => style.item_sep = ",".into(),
        None => {}
    }
    let mut out = String::new();
    py_json(value, &mut out, &style, 0)?;
    Ok(Value::from(out))
}

/// Writes `v` as Python's `json.dumps` does with `style`.
pub(crate) fn py_json(v: &Value, out: &mut String, style: &JsonStyle, level: usize) -> Result<(), minijinja::Error> {
    if level > 512 {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: nested too deeply"));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::Undefined => {
            return Err(minijinja::Error::new(ErrorKind::UndefinedError, "tojson: the value is undefined"))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if is_float(v) {
                out.push_str(&py_float(f64::try_from(v.clone()).unwrap_or(f64::NAN), true));
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or(""), out, style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, level + 1);
                py_json(x, out, style, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<(String, Value)> = Vec::new();
            for k in v.try_iter()? {
                let name = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or("").to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
                    ValueKind::Number if is_float(&k) => py_float(f64::try_from(k.clone()).unwrap_or(f64::NAN), true),
                    ValueKind::Number => k.to_string(),
                    _ => {
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson: keys must be str, int, float, bool or None",
                        ))
                    }
                };
                keys.push((name, k));
            }
            if style.sort_keys {
                keys.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (name, k)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, level + 1);
                json_str(name, out, style.ensure_ascii);
                out.push_str(&style.key_sep);
                py_json(&v.get_item(k)?, out, style, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a {} is not JSON serializable", v.kind()),
            ))
        }
    }
    Ok(())
}

fn json_str(s: &str, out: &mut String, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (`json` spells the non-finite ones `NaN`, `Infinity`).
pub(crate) fn py_float(x: f64, json: bool) -> String {
    if x.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if x.is_infinite() {
        let s = if json { "Infinity" } else { "inf" };
        return if x < 0.0 { format!("-{s}") } else { s.into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Python's repr does.
    let e = format!("{:e}", x.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let s = if exp >= 0 {
            let int_len = (exp + 1) as usize;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

// ---------------------------------------------------------------------------------------------
// ReAct (Qwen v1's function calling, from QwenLM/Qwen openai_api.py).

/// openai_api.py's `TOOL_DESC`.
const TOOL_DESC: &str = "{name_for_model}: Call this tool to interact with the {name_for_human} API. What is the {name_for_human} API useful for? {description_for_model} Parameters: {parameters}";

/// openai_api.py's `REACT_INSTRUCTION`.
const REACT_INSTRUCTION: &str = "Answer the following questions as best you can. You have access to the following APIs:

{tools_text}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tools_name_text}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!";

/// Messages rewritten for ReAct prompting.
pub(crate) struct React {
    /// system, then user/assistant pairs, then the query (a user message) unless `open`.
    pub messages: Vec<ChatMessage>,
    /// No query: the last assistant message is continued (text completion).
    pub open: bool,
    /// When `open`: the text the open message ends with that belongs to the reply
    /// (`Thought:` after a tool result).
    pub reply_prefix: String,
}

/// Python's `s.lstrip('\n').rstrip()`.
fn py_clean(s: &str) -> &str {
    s.trim_start_matches('\n').trim_end()
}

/// The ReAct messages of Qwen's openai_api.py (`parse_messages`): a system prompt ("You are a
/// helpful assistant." unless given); the tool descriptions (`TOOL_DESC`) in
/// `REACT_INSTRUCTION`, put before the latest question of the last user/assistant pair (or the
/// query) as `{instruction}\n\nQuestion: {query}`; earlier assistant replies as
/// `Thought: I now know the final answer.\nFinal Answer: ...` when there are tools; a tool call
/// as `Thought: {content}\nAction: {name}\nAction Input: {arguments}` and its result appended
/// as `\nObservation: {result}`; a request ending with a tool result continues that assistant
/// message after `\nThought:`. OpenAI tools (`{type, function: {name, description,
/// parameters}}`) and the old `functions` shape are both read; `name_for_model`,
/// `name_for_human` and `description_for_model` override as in the source. Several calls in
/// one message are written one after another, each followed by its result.
pub(crate) fn react_messages(messages: &[ChatMessage], tools: &[serde_json::Value]) -> Result<React> {
    let req = |m: &str| Error::Request(m.to_string());
    if messages.iter().all(|m| m.role != Role::User) {
        return Err(req("expecting at least one user message"));
    }
    let (system, rest) = match messages.split_first() {
        Some((first, rest)) if first.role == Role::System => (py_clean(&first.content).to_string(), rest),
        _ => (CHATML_DEFAULT_SYSTEM.to_string(), messages),
    };

    let mut instruction = String::new();
    if !tools.is_empty() {
        let (mut texts, mut names) = (Vec::new(), Vec::new());
        for t in tools {
            let f = t.get("function").filter(|f| f.is_object()).unwrap_or(t);
            let field = |k: &str| -> Option<String> {
                f.get(k).map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => py_json_string(other),
                })
            };
            let name = field("name").unwrap_or_default();
            let name_m = field("name_for_model").unwrap_or_else(|| name.clone());
            let name_h = field("name_for_human").unwrap_or_else(|| name.clone());
            let desc = field("description").unwrap_or_default();
            let desc_m = field("description_for_model").unwrap_or(desc);
            // The source requires `parameters`; a tool without any gets `{}`.
            let params = f.get("parameters").map(py_json_string).unwrap_or_else(|| "{}".into());
            texts.push(
                TOOL_DESC
                    .replace("{name_for_model}", &name_m)
                    .replace("{name_for_human}", &name_h)
                    .replace("{description_for_model}", &desc_m)
                    .replace("{parameters}", &params),
            );
            names.push(name_m);
        }
        instruction = py_clean(
            &REACT_INSTRUCTION
                .replace("{tools_text}", &texts.join("\n\n"))
                .replace("{tools_name_text}", &names.join(", ")),
        )
        .to_string();
    }

    let action = |content: &str, call: &super::chat::ToolCall| {
        let mut c = content.to_string();
        if !c.starts_with("Thought:") {
            c = format!("Thought: {c}");
        }
        format!("{c}\nAction: {}\nAction Input: {}", call.function.name, call.function.arguments)
    };
    let mut out: Vec<ChatMessage> = Vec::new();
    let mut pending: std::collections::VecDeque<&super::chat::ToolCall> = Default::default();
    let mut open_thought = false;
    for (i, m) in rest.iter().enumerate() {
        let content = py_clean(&m.content);
        let last = i + 1 == rest.len();
        match m.role {
            Role::Tool => match out.last_mut() {
                Some(a) if a.role == Role::Assistant => {
                    a.content.push_str(&format!("\nObservation: {content}"));
                    if let Some(call) = pending.pop_front() {
                        a.content.push('\n');
                        a.content.push_str(&action("", call));
                    } else if last {
                        a.content.push_str("\nThought:");
                        open_thought = true;
                    }
                }
                _ => return Err(req("a tool message must follow an assistant message (ReAct prompt)")),
            },
            Role::Assistant => {
                if out.is_empty() {
                    return Err(req("expecting a user message before the first assistant message"));
                }
                pending.clear();
                let text = if m.tool_calls.is_empty() {
                    if tools.is_empty() {
                        content.to_string()
                    } else {
                        format!("Thought: I now know the final answer.\nFinal Answer: {content}")
                    }
                } else {
                    pending.extend(m.tool_calls[1..].iter());
                    action(content, &m.tool_calls[0])
                };
                match out.last_mut() {
                    Some(prev) if prev.role != Role::User => {
                        prev.content.push('\n');
                        prev.content.push_str(&text);
                    }
                    _ => out.push(ChatMessage::assistant(py_clean(&text))),
                }
            }
            Role::User => {
                pending.clear();
                out.push(ChatMessage::user(content));
            }
            Role::System => return Err(req("a system message is only allowed first (ReAct prompt)")),
        }
    }

    let mut query = None;
    if out.last().map(|m| m.role) == Some(Role::User) {
        query = out.pop().map(|m| m.content);
    }
    if !out.len().is_multiple_of(2) {
        return Err(req("invalid message order for the ReAct prompt"));
    }
    let n = out.len();
    for i in (0..n).step_by(2) {
        if out[i].role != Role::User || out[i + 1].role != Role::Assistant {
            return Err(req("expecting exactly one user (or tool) message before every assistant message"));
        }
        let usr = py_clean(&out[i].content).to_string();
        let bot = py_clean(&out[i + 1].content).to_string();
        out[i].content = if !instruction.is_empty() && i + 2 == n {
            format!("{}\n\nQuestion: {usr}", std::mem::take(&mut instruction))
        } else {
            usr
        };
        out[i + 1].content = bot;
    }
    if !instruction.is_empty() {
        if let Some(q) = &mut query {
            *q = format!("{instruction}\n\nQuestion: {q}");
        }
    }
    let mut result = vec![ChatMessage::system(system)];
    result.extend(out);
    let open = query.is_none();
    if let Some(q) = query {
        result.push(ChatMessage::user(q));
    }
    // The cleaning above strips a trailing "\nThought:"? No: rstrip() keeps it (no whitespace
    // at its end), so the open message still ends with it.
    let reply_prefix = if open && open_thought { "Thought:".to_string() } else { String::new() };
    Ok(React { messages: result, open, reply_prefix })
}

#[cfg(test)]
mod tests {
    use super::{py_float, strftime};

    #[test]
    fn strftime_matches_python_gmtime() {
        // Python: time.strftime(FMT, time.gmtime(t)).
        let fmt = "%Y-%m-%d %H:%M:%S %A %a %B %b %j %I %p %y";
        for (t, want) in [
            (0, "1970-01-01 00:00:00 Thursday Thu January Jan 001 12 AM 70"),
            (951782400, "2000-02-29 00:00:00 Tuesday Tue February Feb 060 12 AM 00"),
            (1700000000, "2023-11-14 22:13:20 Tuesday Tue November Nov 318 10 PM 23"),
            (-86400, "1969-12-31 00:00:00 Wednesday Wed December Dec 365 12 AM 69"),
            (4102448461, "2100-01-01 01:01:01 Friday Fri January Jan 001 01 AM 00"),
        ] {
            assert_eq!(strftime(fmt, t), want, "{t}");
        }
        assert_eq!(strftime("%-d %b %Y, 100%% %Q", 951782400), "29 Feb 2000, 100% %Q");
    }

    #[test]
    fn py_float_matches_python_repr() {
        for (x, want) in [
            (5e-324, "5e-324"),
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (1e-4, "0.0001"),
            (123.456, "123.456"),
            (2.0, "2.0"),
        ] {
            assert_eq!(py_float(x, true), want);
        }
        assert_eq!((py_float(f64::NAN, true), py_float(f64::NEG_INFINITY, true)), ("NaN".into(), "-Infinity".into()));
    }
}
