//! Qwen tokenizers: text <-> token ids, the ChatML prompt, and streaming detokenization.
//!
//! Two vocabulary file formats load into one [`Tokenizer`]:
//! - Qwen v1 `qwen.tiktoken` (`base64(bytes) rank` lines): our own rank-based byte-level BPE
//!   (`tiktoken.rs`), the Qwen regex, NFC first, v1 specials at 151643..=151850;
//! - Hugging Face `tokenizer.json` (Qwen1.5/2/2.5/3) through the `tokenizers` crate (`hf.rs`).
//!
//! Both share the same BPE vocabulary for ids 0..151643 and give the same ids on ordinary text.
//! Decoding is ours for both formats: every id maps to its raw bytes, so [`Tokenizer::decode`]
//! is a lossy UTF-8 view of [`Tokenizer::decode_bytes`] and [`TextStream`] can hold back
//! incomplete multi-byte characters.
//!
//! Known differences between the formats: their added tokens differ above 151645 (v1 has
//! `<|extra_0|>`..`<|extra_204|>`, tokenizer.json has `<think>`, `<tool_call>`, ...), and with
//! [`Tokenizer::encode_with_specials`] tokenizer.json finds added tokens *before* NFC while the
//! v1 reference normalises first (only matters for a combining mark right after `>`).
//! Also, the `tokenizers` crate's NFC uses old Unicode tables: combining marks of recently
//! added scripts are not reordered for tokenizer.json (as in HF tokenizers, its reference),
//! while qwen.tiktoken gets Python's `unicodedata` result (its reference). Common text agrees.
//!
//! [`Tokenizer::encode`] treats special-token strings such as `<|im_end|>` as plain text: message
//! content can never inject control tokens. Only [`Tokenizer::encode_with_specials`] and the
//! chat template ([`chat_prompt_ids`]) produce special ids.

mod chat;
mod gguf;
mod hf;
pub mod reply;
mod stream;
mod template;
mod tiktoken;

pub use chat::{
    chat_prompt, chat_prompt_ids, continue_prompt, drop_block, prompt_budget, ChatFormat, ChatMessage, ChatPrompt,
    ChatRequest, FunctionCall, ReplyFormat, Role, ToolCall, ToolChoice, CHATML, DEFAULT_SYSTEM_PROMPT, DROP_BLOCKS,
};
pub use reply::{ReplyDelta, ReplyMessage, ReplyOptions, ReplyParser};
pub use stream::TextStream;
pub use template::ChatTemplate;

use crate::error::{Error, Result};
use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::Arc;

/// `<|endoftext|>`: end of document; the base model's stop token.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// `<|im_start|>`: opens a ChatML message.
pub const IM_START: &str = "<|im_start|>";
/// `<|im_end|>`: closes a ChatML message; the chat model's usual stop token.
pub const IM_END: &str = "<|im_end|>";

/// Which file a [`Tokenizer`] was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerFormat {
    /// Qwen v1 `qwen.tiktoken`.
    Tiktoken,
    /// Hugging Face `tokenizer.json`.
    HfJson,
}

/// A loaded tokenizer. Cheap to clone (the vocabulary is shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    format: TokenizerFormat,
    backend: Backend,
    table: TokenTable,
    /// Special / added tokens, by their text.
    specials: FxHashMap<String, u32>,
    /// Stop ids a GGUF file names (eos, eot, eom) besides the ChatML ones.
    extra_stops: Vec<u32>,
}

enum Backend {
    Tiktoken(tiktoken::TiktokenBpe),
    Hf(Box<hf::HfBackend>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("format", &self.inner.format)
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.inner.specials.len())
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` or `qwen.tiktoken`. The file name decides when it ends in `.json`
    /// or `.tiktoken`; otherwise the content does (JSON starts with `{`).
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = crate::files::read_capped(path, crate::files::TOKENIZER_CAP)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let format = if name.ends_with(".json") {
            TokenizerFormat::HfJson
        } else if name.ends_with(".tiktoken") {
            TokenizerFormat::Tiktoken
        } else {
            detect_format(&bytes)
        };
        Self::load(&bytes, format).map_err(|e| match e {
            Error::Tokenizer(msg) => Error::Tokenizer(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Loads a vocabulary from memory, detecting the format from the content.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer> {
        let format = detect_format(bytes);
        Self::load(bytes, format).map_err(|e| match (format, e) {
            (TokenizerFormat::Tiktoken, Error::Tokenizer(msg)) => {
                Error::Tokenizer(format!("not a tokenizer.json (no JSON object) nor a valid qwen.tiktoken ({msg})"))
            }
            (_, e) => e,
        })
    }

    /// Looks in a model directory for `tokenizer.json`, then `qwen.tiktoken`.
    /// `Ok(None)` when neither exists; an error when one exists but does not load.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Tokenizer>> {
        for name in ["tokenizer.json", "qwen.tiktoken"] {
            let path = dir.join(name);
            // exists(), not is_file(): a FIFO or folder by that name is an error, not absent.
            if path.exists() {
                return Self::from_file(&path).map(Some);
            }
        }
        Ok(None)
    }

    fn load(bytes: &[u8], format: TokenizerFormat) -> Result<Tokenizer> {
        let (backend, table, specials) = match format {
            TokenizerFormat::Tiktoken => {
                let (bpe, table, specials) = tiktoken::TiktokenBpe::load(bytes)?;
                (Backend::Tiktoken(bpe), table, specials)
            }
            TokenizerFormat::HfJson => {
                let (hf, table, specials) = hf::HfBackend::load(bytes)?;
                (Backend::Hf(Box::new(hf)), table, specials)
            }
        };
        Ok(Tokenizer { inner: Arc::new(Inner { format, backend, table, specials, extra_stops: Vec::new() }) })
    }

    /// Which file format this tokenizer came from.
    pub fn format(&self) -> TokenizerFormat {
        self.inner.format
    }

    /// Encodes ordinary text. Special-token strings (`<|im_end|>`, `<think>`, ...) are encoded
    /// as the plain text they are, never as control tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner.backend {
            Backend::Tiktoken(bpe) => bpe.encode_ordinary(text),
            Backend::Hf(hf) => hf.encode_ordinary(text),
        }
    }

    /// Encodes text in which special tokens (`<|im_start|>` ...) are recognised.
    /// Never use this on untrusted content; see [`Tokenizer::encode`].
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner.backend {
            Backend::Tiktoken(bpe) => bpe.encode_with_specials(text, &self.inner.specials),
            Backend::Hf(hf) => hf.encode_with_specials(text),
        }
    }

    /// Decodes ids to text; invalid UTF-8 becomes U+FFFD (like the reference, `errors="replace"`).
    /// Special tokens are included as their text. Unknown ids are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Decodes ids to the raw bytes they stand for.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// The raw bytes of one token.
    pub(crate) fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.inner.table.get(id).ok_or_else(|| {
            Error::Tokenizer(format!("token id {id} is not in the vocabulary (vocab_size {})", self.vocab_size()))
        })
    }

    /// The id of the token whose text is exactly `s` (a special token such as `<|im_end|>`, or
    /// a vocabulary entry such as `" hello"`), if there is one.
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        if let Some(&id) = self.inner.specials.get(s) {
            return Some(id);
        }
        match &self.inner.backend {
            Backend::Tiktoken(bpe) => bpe.rank_of(s.as_bytes()),
            Backend::Hf(hf) => hf.token_to_id(s),
        }
    }

    /// Largest id + 1, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.table.len()
    }

    /// Errors when the tokenizer can produce ids that the model has no embedding rows for.
    pub fn check_fits(&self, model_vocab_size: usize) -> Result<()> {
        let n = self.vocab_size();
        if n > model_vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has ids up to {} but the model's vocab_size is {model_vocab_size}: \
                 tokenizer and model do not belong together",
                n - 1
            )));
        }
        Ok(())
    }

    /// Ids of `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` that this vocabulary has, then those
    /// a GGUF file names as eos / eot / eom (when not among them).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> =
            [ENDOFTEXT, IM_START, IM_END].iter().filter_map(|s| self.inner.specials.get(*s).copied()).collect();
        for &id in &self.inner.extra_stops {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Whether `id` is a special / added token (ChatML markers, `<|extra_N|>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        match &self.inner.backend {
            Backend::Tiktoken(_) => id >= tiktoken::SPECIAL_START && (id as usize) < self.vocab_size(),
            Backend::Hf(hf) => hf.is_added(id),
        }
    }
}

/// JSON starts with `{` (after whitespace / a UTF-8 BOM); anything else is read as tiktoken.
fn detect_format(bytes: &[u8]) -> TokenizerFormat {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => TokenizerFormat::HfJson,
        _ => TokenizerFormat::Tiktoken,
    }
}

/// Largest token id a vocabulary may use (the config's vocab_size bound, 2^22, minus one).
pub const MAX_TOKEN_ID: u32 = (1 << 22) - 1;

/// id -> raw bytes, stored flat. A hole (an id with no token) has an empty range.
pub(crate) struct TokenTable {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]`; `len() == ids + 1`.
    offsets: Vec<u32>,
}

impl TokenTable {
    /// Builds the table from `(id, bytes)` pairs; ids must be unique, bytes non-empty.
    pub(crate) fn build(mut entries: Vec<(u32, Vec<u8>)>) -> std::result::Result<TokenTable, String> {
        entries.sort_unstable_by_key(|(id, _)| *id);
        // The table is sized by the largest id: a few tokens with a huge id must not ask for
        // gigabytes (an id of 2^32 - 1 once asked for 16 GiB). Real vocabularies are dense.
        if let Some(&(max, _)) = entries.last().filter(|(id, _)| *id > MAX_TOKEN_ID) {
            return Err(format!(
                "token id {max} is implausibly large (at most {MAX_TOKEN_ID}; the vocabulary has {} tokens)",
                entries.len()
            ));
        }
        let n = entries.last().map(|(id, _)| *id as usize + 1).unwrap_or(0);
        let total: usize = entries.iter().map(|(_, b)| b.len()).sum();
        if total > u32::MAX as usize {
            return Err("vocabulary too large".into());
        }
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut next = 0u32;
        let mut prev: Option<u32> = None;
        for (id, b) in entries {
            if prev == Some(id) {
                return Err(format!("id {id} appears twice"));
            }
            if b.is_empty() {
                return Err(format!("token {id} is empty"));
            }
            while next < id {
                offsets.push(bytes.len() as u32); // hole
                next += 1;
            }
            bytes.extend_from_slice(&b);
            offsets.push(bytes.len() as u32);
            next = id + 1;
            prev = Some(id);
        }
        Ok(TokenTable { bytes, offsets })
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (a, b) = (*self.offsets.get(i)? as usize, *self.offsets.get(i + 1)? as usize);
        (b > a).then(|| &self.bytes[a..b])
    }
}
