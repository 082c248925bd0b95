//! The reply parser: generated token ids -> OpenAI-shaped streamed deltas (`content`,
//! `reasoning_content`, `tool_calls`), with `stop` strings matched across token boundaries.
//!
//! One implementation serves the CLI and the browser engine, so both stream the same deltas and
//! end on the same `finish_reason`. The pipeline, per generated id:
//!
//! 1. **Text.** A [`TextStream`] turns ids into UTF-8-safe text. Control tokens (added tokens
//!    spelled `<|…|>`: `<|im_end|>`, `<|endoftext|>`, `<|im_start|>`, Qwen v1's `<|extra_N|>`,
//!    the FIM markers) are dropped: generation stops at the first three anyway, and none of them
//!    is text a user should see. Other added tokens (`<think>`, `</think>`, `<tool_call>`,
//!    `</tool_call>`, `<tool_response>`) reach the parser as their text. Parsing is on text
//!    only, so a marker spelled with ordinary tokens (`<`, `tool`, `_call`, `>`) and the prefill
//!    (plain text) are read exactly like the added token.
//! 2. **Stop strings** are matched on the generated text as the tokenizer decodes it, markers
//!    such as `<think>` included and reasoning included (vLLM matches the same detokenized text;
//!    OpenAI matches "the generated text"), before any parsing; not on the prefill, which is
//!    prompt. The earliest occurrence of any stop string ends the reply: it and everything after
//!    it are never emitted and [`ReplyParser::stopped`] turns true. Between tokens only the
//!    longest suffix of the text that is a proper prefix of some stop string is held back, never
//!    more, so ordinary text is not delayed. Matching works on whole characters (the text stream
//!    holds back incomplete UTF-8 first), so a stop string inside a Chinese character or emoji
//!    split across byte-level tokens is found.
//! 3. **Structure** ([`ReplyFormat`]), on the text the stop matcher releases:
//!    - *Reasoning* (`reasoning: true`): a reply whose first non-blank text is `<think>` streams
//!      what follows as `reasoning_content` up to `</think>`; the reasoning is cut of its leading
//!      and trailing `\n`s and the content of the `\n`s after `</think>`, which is what Qwen3's
//!      chat template does when it renders the message back (`reasoning_content.strip('\n')`,
//!      `content.lstrip('\n')`), so a reply re-rendered into the next prompt is the text the
//!      model wrote. (vLLM's `qwen3` reasoning parser leaves them in: its reasoning starts and
//!      ends with `\n` and its content starts with `\n\n`.) A reply that does not open with
//!      `<think>` is plain content (a later `<think>` is text); an unclosed `<think>` at the end
//!      is reasoning. Tool calls are never parsed inside reasoning.
//!    - *Hermes* (Qwen2/2.5/3): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, any
//!      number of them. A call is held back until its `</tool_call>` arrives and its body is
//!      valid: a JSON object with a non-empty string `name` and an object `arguments` (or a
//!      string holding a JSON object, which some fine-tunes write). Then it streams as one delta,
//!      as OpenAI's first delta of a call: index, id, type `function`, name and the whole
//!      arguments, which are the model's own JSON text of `arguments` (valid JSON, key order and
//!      spacing as written). Holding the call means no tool-call delta is ever sent that later
//!      turns out malformed. Whitespace right before `<tool_call>` and right after
//!      `</tool_call>` is dropped (so whitespace-only text between or after calls disappears);
//!      other text before, between or after calls is content. A malformed body, or a call still
//!      open at the end (cut by `length` or a stop string), becomes content as the raw text,
//!      `<tool_call>` included, and [`ReplyParser::finish_reason`] says `invalid_tool_call`.
//!    - *ReAct* (Qwen v1, the format of `openai_api.py` in QwenLM/Qwen): the reply is held until
//!      its shape is known. `\nAction:` then `\nAction Input:` make a tool call: its name is the
//!      Action line, its arguments the Action Input text (trimmed) up to `\nObservation:` or the
//!      end (the generator usually stops at `Observation:`; when it arrives here it ends the call
//!      and [`ReplyParser::stopped`] turns true), and the content is the text before `\nAction:`
//!      from after its first `Thought: `, trimmed, as `parse_response` does. Unlike that file, the
//!      arguments must be a JSON object (else everything is content and the finish reason
//!      `invalid_tool_call`), and `Action:` / `Final Answer: ` also count at the very start of
//!      the reply. `\nFinal Answer: ` makes the text after it content, streamed (the file takes
//!      the text after the *last* such line; streaming takes the first). A reply with neither
//!      is content as it stands, `Thought:` included, as in the file. One call per reply.
//!    - *Plain*: everything is content.
//!
//!    The prefill (text the prompt already ended with that belongs to the reply, such as
//!    `<think>\n` or `<tool_call>\n`) is parsed as if generated but never emitted: whatever part
//!    of an emitted piece lies in the prefill is cut off.
//!
//! Invariant: the content deltas joined equal [`ReplyMessage::content`], the reasoning deltas
//! joined equal `reasoning_content`, and the tool-call deltas give `tool_calls`.

/// The chat module's types: the format the prompt chose, and the tool calls an assistant message
/// carries (so a parsed reply goes back into the next request's history as it is).
pub use super::chat::{FunctionCall, ReplyFormat, ToolCall};
use super::{TextStream, Tokenizer};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::ops::Range;

/// Most stop strings a request may give (OpenAI allows 4; vLLM any number).
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in UTF-8 bytes: it bounds what the stream holds back and the work per
/// token.
pub const MAX_STOP_BYTES: usize = 1024;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";
const REACT_ACTION: &str = "\nAction:";
const REACT_INPUT: &str = "\nAction Input:";
const REACT_OBSERVATION: &str = "\nObservation:";
const REACT_FINAL: &str = "\nFinal Answer: ";
const REACT_THOUGHT: &str = "Thought: ";

/// What a [`ReplyParser`] needs to know about one request.
#[derive(Debug, Clone, Default)]
pub struct ReplyOptions {
    /// OpenAI `stop`: up to [`MAX_STOP_STRINGS`] non-empty strings of at most
    /// [`MAX_STOP_BYTES`] bytes.
    pub stop: Vec<String>,
    /// The tool-call syntax to parse.
    pub format: ReplyFormat,
    /// Text the prompt already ended with that belongs to the reply (e.g. `"<think>\n"`,
    /// `"<tool_call>\n"`): parsed as if generated, never emitted, never matched against `stop`.
    pub prefill: String,
    /// Split `<think>…</think>` into `reasoning_content` (Qwen3 and other thinking checkpoints).
    pub reasoning: bool,
    /// Tool call ids are `{id_prefix}{n}` (n = 0, 1, … within the reply), e.g. `"call_3f2a_0"`:
    /// the caller makes the prefix unique per reply.
    pub id_prefix: String,
}

/// What one step of the stream adds, in OpenAI's `choices[].delta` shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyDelta {
    /// Visible reply text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text (inside `<think>…</think>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls completed in this step (each whole: see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

impl ReplyDelta {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.content.is_none() && self.reasoning_content.is_none() && self.tool_calls.is_empty()
    }

    /// Appends `other` after this delta (content to content, reasoning to reasoning, calls
    /// after calls): for a caller that sends several steps at once.
    pub fn append(&mut self, other: ReplyDelta) {
        if let Some(c) = other.content {
            self.content.get_or_insert_with(String::new).push_str(&c);
        }
        if let Some(r) = other.reasoning_content {
            self.reasoning_content.get_or_insert_with(String::new).push_str(&r);
        }
        self.tool_calls.extend(other.tool_calls);
    }
}

/// One tool call in a delta, as OpenAI streams it: the first delta of a call carries `id`,
/// `type` and `function.name`; the `function.arguments` pieces of all deltas with the same
/// `index`, joined, are the arguments' JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position of the call in the reply's `tool_calls` (0, 1, …).
    pub index: usize,
    /// The call's id (first delta of a call only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `"function"` (first delta of a call only).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and a piece of the arguments.
    pub function: FunctionDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// The function's name (first delta of a call only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the arguments' JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// The assistant message so far, in OpenAI's `choices[].message` shape (without `role`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyMessage {
    /// The visible text; `null` when there is none (e.g. a reply that is only tool calls).
    #[serde(default)]
    pub content: Option<String>,
    /// The reasoning text, when the reply had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The parsed tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// Turns generated ids into [`ReplyDelta`]s; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct ReplyParser {
    tok: Tokenizer,
    stream: TextStream,
    stop: StopMatcher,
    shape: Shaper,
    finished: bool,
}

impl ReplyParser {
    /// A parser for one reply. Errors (`Error::Request` naming the field) on bad `stop` strings.
    pub fn new(tok: &Tokenizer, opts: ReplyOptions) -> Result<ReplyParser> {
        if opts.stop.len() > MAX_STOP_STRINGS {
            return Err(Error::Request(format!(
                "stop: at most {MAX_STOP_STRINGS} strings are supported (got {})",
                opts.stop.len()
            )));
        }
        for (i, s) in opts.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(Error::Request(format!("stop[{i}]: a stop string must not be empty")));
            }
            if s.len() > MAX_STOP_BYTES {
                return Err(Error::Request(format!(
                    "stop[{i}]: a stop string may have at most {MAX_STOP_BYTES} bytes (got {})",
                    s.len()
                )));
            }
        }
        let mut shape = Shaper::new(&opts);
        // The prefill goes through the structure now; anything it completes (a call entirely in
        // the prefill) waits in the shaper's delta for the first push or finish.
        shape.advance(false);
        Ok(ReplyParser {
            tok: tok.clone(),
            stream: TextStream::new(tok),
            stop: StopMatcher { stops: opts.stop, held: String::new(), hit: false },
            shape,
            finished: false,
        })
    }

    /// One generated id. Returns what can be emitted now (text that could still become a stop
    /// string, or an unfinished tool call, is held back). An id outside the vocabulary is an
    /// error and changes nothing; after a stop or [`ReplyParser::finish`] ids are ignored.
    pub fn push(&mut self, id: u32) -> Result<ReplyDelta> {
        if self.finished || self.stopped() {
            return Ok(ReplyDelta::default());
        }
        if !self.is_control(id) {
            if let Some(text) = self.stream.push(id)? {
                let released = self.stop.push(&text);
                self.shape.feed(&released);
                self.shape.advance(false);
            }
        }
        Ok(self.shape.take_delta())
    }

    /// True once a stop string has been seen (or, in ReAct, `\nObservation:` ended the call):
    /// the caller ends generation (finish_reason `"stop"`); later pushes are ignored.
    pub fn stopped(&self) -> bool {
        self.stop.hit || self.shape.observation_end
    }

    /// Generation ended (for any reason): flushes what is held back. An unterminated or
    /// malformed tool call comes back as plain content; an incomplete UTF-8 character as U+FFFD.
    /// A second call returns nothing.
    pub fn finish(&mut self) -> ReplyDelta {
        if self.finished {
            return ReplyDelta::default();
        }
        self.finished = true;
        if !self.stopped() {
            if let Some(text) = self.stream.finish() {
                let released = self.stop.push(&text);
                self.shape.feed(&released);
            }
            let rest = std::mem::take(&mut self.stop.held);
            self.shape.feed(&rest);
        }
        self.shape.advance(true);
        self.shape.take_delta()
    }

    /// The finish_reason to report given the generator's (`"stop"`, `"length"`,
    /// `"context_full"`, `"abort"`): `"tool_calls"` when at least one tool call parsed,
    /// `"invalid_tool_call"` when tool-call text was malformed (it is in the content instead),
    /// otherwise the given one.
    pub fn finish_reason(&self, generator_reason: &str) -> String {
        if !self.shape.msg.tool_calls.is_empty() {
            "tool_calls".into()
        } else if self.shape.invalid {
            "invalid_tool_call".into()
        } else {
            generator_reason.into()
        }
    }

    /// The whole assistant message so far: content, reasoning_content, tool calls.
    pub fn message(&self) -> ReplyMessage {
        self.shape.msg.clone()
    }

    /// A control token: an added token spelled `<|…|>` (see the module docs).
    fn is_control(&self, id: u32) -> bool {
        self.tok.is_special(id)
            && self.tok.token_bytes(id).is_ok_and(|b| b.len() > 4 && b.starts_with(b"<|") && b.ends_with(b"|>"))
    }
}

/// Finds stop strings in the generated text, holding back only what could still become one.
#[derive(Debug, Clone)]
struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released: the longest suffix that is a proper prefix of a stop string.
    held: String,
    hit: bool,
}

impl StopMatcher {
    /// Adds text; returns the text now known not to belong to a stop string (all text before
    /// the first stop string once one is complete).
    fn push(&mut self, text: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.held.push_str(text);
        // `held` had no complete stop string before, and its start could begin one, so the
        // earliest occurrence in `held` is the earliest in the whole text.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.hit = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = partial_suffix(&self.held, self.stops.iter().map(String::as_str));
        let rest = self.held.split_off(self.held.len() - keep);
        std::mem::replace(&mut self.held, rest)
    }
}

/// Length of the longest suffix of `s` (starting at a character boundary) that is a proper,
/// non-empty prefix of one of `pats`.
fn partial_suffix<'a>(s: &str, pats: impl Iterator<Item = &'a str> + Clone) -> usize {
    let longest = pats.clone().map(str::len).max().unwrap_or(0);
    let bytes = s.as_bytes();
    for k in (1..longest.min(s.len() + 1)).rev() {
        let start = s.len() - k;
        if s.is_char_boundary(start) && pats.clone().any(|p| p.len() > k && p.as_bytes().starts_with(&bytes[start..])) {
            return k;
        }
    }
    0
}

/// `text[from..].find(pat)` as an absolute position, with `from` moved back onto a character
/// boundary.
fn find_from(text: &str, from: usize, pat: &str) -> Option<usize> {
    let from = floor_boundary(text, from);
    text[from..].find(pat).map(|i| from + i)
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Where the next search for `pat` must start so that no occurrence ending after `text` is
/// missed: `pat.len() - 1` bytes back from the end, but not before `floor`.
fn rescan_from(text: &str, floor: usize, pat: &str) -> usize {
    floor_boundary(text, text.len().saturating_sub(pat.len() - 1)).max(floor)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reasoning on: waiting to see whether the reply opens with `<think>`.
    Start,
    /// Inside `<think>`; `started` once some reasoning was emitted (leading `\n`s are dropped).
    Think { started: bool },
    /// After `</think>`: dropping the `\n`s before the content.
    AfterThink,
    /// Content (Plain or Hermes).
    Body,
    /// Hermes: inside a call whose raw text (the whitespace before `<tool_call>` included)
    /// starts at `open`, its body at `body`; no `</tool_call>` starts before `scan`.
    Call { open: usize, body: usize, scan: usize },
    /// Hermes: after a call, dropping whitespace.
    AfterCall,
    /// ReAct: the reply from `start` is held; no `\nAction:` / `\nFinal Answer: ` before `scan`.
    ReAct { start: usize, scan: usize },
    /// ReAct: `\nAction:` at `action`; `\nAction Input:` at `input` once seen.
    ReActCall { start: usize, action: usize, input: Option<usize>, scan: usize },
    /// ReAct: after `Final Answer: `, everything is content.
    Final,
    /// Nothing more to parse; later text is ignored.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Content,
    Reasoning,
}

/// The structure pass (reasoning, tool calls) over the text the stop matcher releases.
#[derive(Debug, Clone)]
struct Shaper {
    format: ReplyFormat,
    id_prefix: String,
    /// Prefill + released generated text (the whole reply, kept for the positions).
    text: String,
    prefill_len: usize,
    /// Everything before `pos` is consumed (emitted or dropped).
    pos: usize,
    state: State,
    out: ReplyDelta,
    msg: ReplyMessage,
    /// Tool-call text was malformed and went to content.
    invalid: bool,
    /// ReAct: `\nObservation:` ended the call.
    observation_end: bool,
}

impl Shaper {
    fn new(opts: &ReplyOptions) -> Shaper {
        let mut s = Shaper {
            format: opts.format,
            id_prefix: opts.id_prefix.clone(),
            text: opts.prefill.clone(),
            prefill_len: opts.prefill.len(),
            pos: 0,
            state: State::Start,
            out: ReplyDelta::default(),
            msg: ReplyMessage::default(),
            invalid: false,
            observation_end: false,
        };
        if !opts.reasoning {
            s.state = s.body_state();
        }
        s
    }

    fn body_state(&self) -> State {
        match self.format {
            ReplyFormat::Plain | ReplyFormat::Hermes => State::Body,
            ReplyFormat::ReAct => State::ReAct { start: self.pos, scan: self.pos },
        }
    }

    fn feed(&mut self, text: &str) {
        if self.state != State::Done {
            self.text.push_str(text);
        }
    }

    fn take_delta(&mut self) -> ReplyDelta {
        std::mem::take(&mut self.out)
    }

    /// Emits `text[range]` (minus any part inside the prefill).
    fn emit(&mut self, kind: Kind, range: Range<usize>) {
        let start = range.start.max(self.prefill_len);
        if start >= range.end {
            return;
        }
        let piece = &self.text[start..range.end];
        let (delta, whole) = match kind {
            Kind::Content => (&mut self.out.content, &mut self.msg.content),
            Kind::Reasoning => (&mut self.out.reasoning_content, &mut self.msg.reasoning_content),
        };
        delta.get_or_insert_with(String::new).push_str(piece);
        whole.get_or_insert_with(String::new).push_str(piece);
    }

    fn push_call(&mut self, name: String, arguments: String) {
        let index = self.msg.tool_calls.len();
        let id = format!("{}{index}", self.id_prefix);
        self.out.tool_calls.push(ToolCallDelta {
            index,
            id: Some(id.clone()),
            kind: Some("function".into()),
            function: FunctionDelta { name: Some(name.clone()), arguments: Some(arguments.clone()) },
        });
        self.msg.tool_calls.push(ToolCall { id, kind: "function".into(), function: FunctionCall { name, arguments } });
    }

    /// Runs the state machine over the text so far; `last` once no more text will come.
    fn advance(&mut self, last: bool) {
        while self.step(last) {}
        if last {
            self.state = State::Done;
        }
    }

    /// One transition; false when it has to wait for more text (or is done).
    fn step(&mut self, last: bool) -> bool {
        let len = self.text.len();
        match self.state {
            State::Done => false,
            State::Start => {
                let rest = &self.text[self.pos..];
                let word = rest.trim_start();
                if word.starts_with(THINK_OPEN) {
                    self.pos = len - word.len() + THINK_OPEN.len();
                    self.state = State::Think { started: false };
                    true
                } else if !last && THINK_OPEN.starts_with(word) {
                    false
                } else {
                    self.state = self.body_state();
                    true
                }
            }
            State::Think { started } => {
                let close = find_from(&self.text, self.pos, THINK_CLOSE);
                let (end, complete) = match close {
                    Some(at) => (at, true),
                    None if last => (len, true),
                    None => (len - partial_suffix(&self.text[self.pos..], [THINK_CLOSE].into_iter()), false),
                };
                let mut start = self.pos;
                if !started {
                    start += self.text[start..end].len() - self.text[start..end].trim_start_matches('\n').len();
                }
                let piece_end = start + self.text[start..end].trim_end_matches('\n').len();
                if piece_end > start {
                    self.emit(Kind::Reasoning, start..piece_end);
                }
                let started = started || piece_end > start;
                match close {
                    Some(at) => {
                        self.pos = at + THINK_CLOSE.len();
                        self.state = State::AfterThink;
                        true
                    }
                    None => {
                        // Trailing `\n`s wait: they are dropped if `</think>` follows.
                        self.pos = if complete { len } else { piece_end };
                        self.state = State::Think { started };
                        false
                    }
                }
            }
            State::AfterThink => {
                let rest = &self.text[self.pos..];
                self.pos = len - rest.trim_start_matches('\n').len();
                if self.pos < len || last {
                    self.state = self.body_state();
                    true
                } else {
                    false
                }
            }
            State::Body if self.format != ReplyFormat::Hermes => {
                self.emit(Kind::Content, self.pos..len);
                self.pos = len;
                false
            }
            State::Body => {
                let rest = &self.text[self.pos..];
                if let Some(i) = rest.find(CALL_OPEN) {
                    // The whitespace before the tag is dropped; kept as `open` for the raw
                    // text of a malformed call.
                    let keep = rest[..i].trim_end().len();
                    let open = self.pos + keep;
                    self.emit(Kind::Content, self.pos..open);
                    let body = self.pos + i + CALL_OPEN.len();
                    self.state = State::Call { open, body, scan: body };
                    self.pos = body;
                    true
                } else if last {
                    self.emit(Kind::Content, self.pos..len);
                    self.pos = len;
                    false
                } else {
                    // Whitespace waits: it is dropped if a call follows.
                    let safe = rest.len() - partial_suffix(rest, [CALL_OPEN].into_iter());
                    let keep = rest[..safe].trim_end().len();
                    self.emit(Kind::Content, self.pos..self.pos + keep);
                    self.pos += keep;
                    false
                }
            }
            State::AfterCall => {
                let rest = &self.text[self.pos..];
                self.pos = len - rest.trim_start().len();
                if self.pos < len {
                    self.state = State::Body;
                    true
                } else {
                    false
                }
            }
            State::Call { open, body, scan } => {
                if let Some(close) = find_from(&self.text, scan, CALL_CLOSE) {
                    let end = close + CALL_CLOSE.len();
                    match parse_hermes(&self.text[body..close]) {
                        Some((name, args)) => {
                            self.push_call(name, args);
                            self.state = State::AfterCall;
                        }
                        None => {
                            self.emit(Kind::Content, open..end);
                            self.invalid = true;
                            self.state = State::Body;
                        }
                    }
                    self.pos = end;
                    true
                } else if last {
                    self.emit(Kind::Content, open..len);
                    self.invalid = true;
                    self.pos = len;
                    false
                } else {
                    self.state = State::Call { open, body, scan: rescan_from(&self.text, body, CALL_CLOSE) };
                    false
                }
            }
            State::ReAct { start, scan } => {
                let action = find_line(&self.text, start, scan, REACT_ACTION);
                let fin = find_line(&self.text, start, scan, REACT_FINAL);
                match (action, fin) {
                    (Some(a), f) if f.as_ref().is_none_or(|f| a.start < f.start) => {
                        self.state = State::ReActCall { start, action: a.end, input: None, scan: a.end };
                        true
                    }
                    (_, Some(f)) => {
                        self.pos = f.end;
                        self.state = State::Final;
                        true
                    }
                    _ if last => {
                        self.emit(Kind::Content, start..len);
                        self.pos = len;
                        false
                    }
                    _ => {
                        let scan = rescan_from(&self.text, start, REACT_FINAL).min(rescan_from(
                            &self.text,
                            start,
                            REACT_ACTION,
                        ));
                        self.state = State::ReAct { start, scan };
                        false
                    }
                }
            }
            State::ReActCall { start, action, input, scan } => {
                let Some(input_at) = input else {
                    if let Some(j) = find_from(&self.text, scan, REACT_INPUT) {
                        let after = j + REACT_INPUT.len();
                        self.state = State::ReActCall { start, action, input: Some(j), scan: after };
                        return true;
                    }
                    if last {
                        // An Action without an Action Input: no call.
                        self.emit(Kind::Content, start..len);
                        self.invalid = true;
                        self.pos = len;
                    } else {
                        self.state = State::ReActCall {
                            start,
                            action,
                            input,
                            scan: rescan_from(&self.text, action, REACT_INPUT),
                        };
                    }
                    return false;
                };
                let args_start = input_at + REACT_INPUT.len();
                let end = match find_from(&self.text, scan, REACT_OBSERVATION) {
                    Some(k) => {
                        self.observation_end = true;
                        k
                    }
                    None if last => len,
                    None => {
                        self.state = State::ReActCall {
                            start,
                            action,
                            input,
                            scan: rescan_from(&self.text, args_start, REACT_OBSERVATION),
                        };
                        return false;
                    }
                };
                self.finish_react_call(start, action, input_at, end);
                self.pos = len;
                self.state = State::Done;
                false
            }
            State::Final => {
                self.emit(Kind::Content, self.pos..len);
                self.pos = len;
                false
            }
        }
    }

    /// A complete ReAct call: the Action line from `action` to `input`, the Action Input up to
    /// `end`; the thought is the text from `start` to the `\nAction:` before `action`.
    fn finish_react_call(&mut self, start: usize, action: usize, input: usize, end: usize) {
        let name = self.text[action..input].trim();
        let args = self.text[input + REACT_INPUT.len()..end].trim();
        let valid = !name.is_empty() && serde_json::from_str::<Value>(args).is_ok_and(|v| v.is_object());
        if !valid {
            self.emit(Kind::Content, start..end);
            self.invalid = true;
            return;
        }
        let (name, args) = (name.to_string(), args.to_string());
        // The thought ends where the `\nAction:` (or, at the very start, `Action:`) marker begins.
        let marker = self.text[..action].rfind("Action:").unwrap_or(action);
        let thought_end = if marker > start && self.text[..marker].ends_with('\n') { marker - 1 } else { marker };
        let region = &self.text[start..thought_end];
        let from = region.find(REACT_THOUGHT).map_or(start, |t| start + t + REACT_THOUGHT.len());
        let region = &self.text[from..thought_end];
        let lead = region.len() - region.trim_start().len();
        let trimmed = region.trim().len();
        self.emit(Kind::Content, from + lead..from + lead + trimmed);
        self.push_call(name, args);
    }
}

/// Finds a ReAct line marker (`\nAction:`...) at or after `scan`, or without its `\n` at the
/// very start of the ReAct text (`start`). Returns the marker's range.
fn find_line(text: &str, start: usize, scan: usize, marker: &str) -> Option<Range<usize>> {
    let bare = &marker[1..];
    if text[start..].starts_with(bare) {
        return Some(start..start + bare.len());
    }
    find_from(text, scan, marker).map(|at| at..at + marker.len())
}

/// A Hermes call body: `{"name": "...", "arguments": {...}}`. Returns the name and the
/// arguments' JSON text, or None when malformed.
fn parse_hermes(body: &str) -> Option<(String, String)> {
    let body = body.trim();
    let value: Value = serde_json::from_str(body).ok()?;
    let obj = value.as_object()?;
    let name = obj.get("name")?.as_str()?;
    if name.trim().is_empty() {
        return None;
    }
    let args = match obj.get("arguments")? {
        // The model's own text of the object (serde_json keeps the last of duplicate keys, so
        // does this).
        Value::Object(_) => match object_fields(body).and_then(|f| f.into_iter().rev().find(|(k, _)| k == "arguments"))
        {
            Some((_, range)) => body[range].to_string(),
            None => serde_json::to_string(obj.get("arguments")?).ok()?,
        },
        // Arguments written as a JSON string holding the object.
        Value::String(s) => {
            let inner: Value = serde_json::from_str(s).ok()?;
            inner.is_object().then(|| s.trim().to_string())?
        }
        _ => return None,
    };
    Some((name.to_string(), args))
}

/// The top-level fields of a JSON object text: each key and the byte range of its value.
/// None if `text` is not one JSON object.
fn object_fields(text: &str) -> Option<Vec<(String, Range<usize>)>> {
    fn skip_ws(text: &str, mut at: usize) -> usize {
        let b = text.as_bytes();
        while at < b.len() && matches!(b[at], b' ' | b'\n' | b'\r' | b'\t') {
            at += 1;
        }
        at
    }
    let b = text.as_bytes();
    let mut at = skip_ws(text, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(text, at + 1);
    let mut fields = Vec::new();
    if b.get(at) == Some(&b'}') {
        return (skip_ws(text, at + 1) == b.len()).then_some(fields);
    }
    loop {
        let mut keys = serde_json::Deserializer::from_str(&text[at..]).into_iter::<String>();
        let key = keys.next()?.ok()?;
        at = skip_ws(text, at + keys.byte_offset());
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(text, at + 1);
        let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<serde::de::IgnoredAny>();
        values.next()?.ok()?;
        let end = at + values.byte_offset();
        fields.push((key, at..end));
        at = skip_ws(text, end);
        match b.get(at) {
            Some(b',') => at = skip_ws(text, at + 1),
            Some(b'}') => return (skip_ws(text, at + 1) == b.len()).then_some(fields),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_suffix_is_the_longest_proper_prefix() {
        let pats = ["abc", "bd"];
        assert_eq!(partial_suffix("xab", pats.into_iter()), 2);
        assert_eq!(partial_suffix("xb", pats.into_iter()), 1);
        assert_eq!(partial_suffix("xabc", pats.into_iter()), 0); // complete, not a proper prefix
        assert_eq!(partial_suffix("", pats.into_iter()), 0);
        // A suffix starting inside a character is never taken.
        assert_eq!(partial_suffix("中", ["\u{4e2d}x"].into_iter()), 3);
        assert_eq!(partial_suffix("a中", ["中x"].into_iter()), 3);
    }

    #[test]
    fn object_fields_spans() {
        let t = r#" {"name": "f", "arguments": {"a": [1, 2.5e3, "}"], "b": null} , "x":1}"#;
        let f = object_fields(t).unwrap();
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["name", "arguments", "x"]);
        assert_eq!(&t[f[1].1.clone()], r#"{"a": [1, 2.5e3, "}"], "b": null}"#);
        assert_eq!(&t[f[2].1.clone()], "1");
        assert!(object_fields("{}").unwrap().is_empty());
        assert!(object_fields("[1]").is_none());
        assert!(object_fields(r#"{"a": 1} x"#).is_none());
        assert!(object_fields(r#"{"a" 1}"#).is_none());
        assert!(object_fields(r#"{"a": 1,}"#).is_none());
    }

    #[test]
    fn hermes_bodies() {
        assert_eq!(
            parse_hermes("\n{\"name\": \"f\", \"arguments\": {\"x\": \"\\u00e9\"}}\n"),
            Some(("f".into(), "{\"x\": \"\\u00e9\"}".into()))
        );
        assert_eq!(
            parse_hermes(r#"{"name": "f", "arguments": "{\"x\": 1}"}"#),
            Some(("f".into(), r#"{"x": 1}"#.into()))
        );
        assert_eq!(parse_hermes(r#"{"name": "f", "arguments": "x"}"#), None);
        assert_eq!(parse_hermes(r#"{"name": "", "arguments": {}}"#), None);
        assert_eq!(parse_hermes(r#"{"name": 3, "arguments": {}}"#), None);
        assert_eq!(parse_hermes(r#"{"name": "f"}"#), None);
        assert_eq!(parse_hermes(r#"{"name": "f", "arguments": [1]}"#), None);
        assert_eq!(parse_hermes(r#"{"name": "f", "arguments": {}"#), None);
    }
}
