//! The tokenizer from a GGUF file's metadata (llama.cpp's `tokenizer.ggml.*` keys).
//!
//! What llama.cpp's converter (`convert_hf_to_gguf.py`: `get_vocab_base`, `_set_vocab_gpt2`,
//! `_set_vocab_qwen`, gguf-py's `SpecialVocab`) writes for Qwen:
//! - `tokenizer.ggml.model` "gpt2" (byte-level BPE) and `tokenizer.ggml.pre` "qwen2", for
//!   Qwen1.5/2/2.5/3 and for Qwen v1 alike (`pre` names the hash of the ids of a check text,
//!   and v1's ids are Qwen1.5's); files from before that key (the official Qwen1.5 GGUFs) have
//!   none, and load as Qwen's when their architecture and vocabulary are Qwen's;
//! - `tokenizer.ggml.tokens`, one string per id up to config.json's `vocab_size` (151936):
//!   BPE tokens in GPT-2's byte-to-unicode alphabet, added tokens as their text, and
//!   `[PAD{id}]` for the ids the tokenizer has none for;
//! - `tokenizer.ggml.token_type`: NORMAL (1) for BPE tokens, CONTROL (3) for special added
//!   tokens and anything like `<|...|>`, USER_DEFINED (4) for the other added tokens
//!   (`<think>`, `<tool_call>`, ...), UNUSED (5) for the `[PAD{id}]` fillers;
//! - `tokenizer.ggml.merges`, `"a b"` strings: tokenizer.json's merges in order; for v1 the last
//!   merge of each multi-byte token under rank-based BPE, in rank order (the same list);
//! - `tokenizer.ggml.{bos,eos,padding}_token_id` (v1: all `<|endoftext|>`), `add_bos_token` and
//!   `add_eos_token` false (absent for v1), `tokenizer.chat_template` (absent for v1).
//!
//! Each GGUF loads into the backend that reproduces its original file exactly:
//! - `general.architecture` "qwen" (Qwen v1, converted from `qwen.tiktoken`): our rank-based BPE
//!   (`tiktoken.rs`) through a `qwen.tiktoken` rebuilt in memory. The merges must be the ones
//!   the ranks imply (checked: then merge order and rank order tokenize alike) and the added
//!   tokens must be v1's 208.
//! - any other architecture: a `tokenizer.json` rebuilt in memory (Qwen's NFC normalizer,
//!   regex + byte-level pre-tokenizer and byte-level decoder, with the file's vocabulary,
//!   merges and added tokens) for the `tokenizers` crate (`hf.rs`).
//!
//! The id -> bytes table and the added tokens that the backend loaded are then compared with the
//! metadata, so a file that a backend would read with other ids is refused, not loaded. The
//! `[PAD{id}]` fillers are left out as the original files have no such ids: decoding one is an
//! error and [`Tokenizer::vocab_size`] is the last real id + 1 (151669 or 151851), not 151936.
//! [`Tokenizer::format`] tells which backend (the equivalent file) a GGUF loaded into.
//!
//! Anything else is refused by name: another tokenizer model or pre-tokenizer, missing or
//! mismatched arrays, byte / unknown token types, strings that are not byte-level BPE, or a
//! file asking for behaviour these backends do not have (adding BOS/EOS, lowercasing).

use super::{hf, tiktoken, Backend, Inner, Tokenizer, TokenizerFormat, MAX_TOKEN_ID};
use crate::error::{Error, Result};
use crate::weights::gguf::GgufValue;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ARCH: &str = "general.architecture";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Token types (gguf-py `TokenType`).
const NORMAL: i128 = 1;
const UNKNOWN: i128 = 2;
const CONTROL: i128 = 3;
const USER_DEFINED: i128 = 4;
const UNUSED: i128 = 5;
const BYTE: i128 = 6;

/// Longest token string accepted, in bytes (Qwen's longest: 256, 128 raw bytes).
const MAX_TOKEN_LEN: usize = 1024;
/// Most bytes in all token strings together, and in all merges together (Qwen: 1.37 MB and
/// 1.52 MB): the rebuilt vocabulary is a small multiple of it.
const MAX_TEXT: usize = 32 << 20;
/// Work bound of the v1 merge check: the sum of squared token lengths (Qwen: 8.6 million).
const MAX_BPE_WORK: u64 = 1 << 28;

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("GGUF metadata: {msg}"))
}

/// What the metadata says about one id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A BPE token; its raw bytes are `bytes[start..end]`.
    Normal { start: u32, end: u32 },
    /// An added token (CONTROL or USER_DEFINED), matched as its text.
    Added { special: bool },
    /// A `[PAD{id}]` filler: no such id in the original tokenizer.
    Unused,
}

/// The vocabulary read from the metadata and checked.
struct Vocab<'m> {
    tokens: &'m [String],
    kinds: Vec<Kind>,
    /// Raw bytes of the BPE tokens, flat.
    bytes: Vec<u8>,
    merges: &'m [String],
}

impl Vocab<'_> {
    fn normal_bytes(&self, id: usize) -> Option<&[u8]> {
        match self.kinds[id] {
            Kind::Normal { start, end } => Some(&self.bytes[start as usize..end as usize]),
            _ => None,
        }
    }

    fn added(&self) -> impl Iterator<Item = (u32, &str, bool)> + '_ {
        self.kinds.iter().enumerate().filter_map(|(id, k)| match *k {
            Kind::Added { special } => Some((id as u32, self.tokens[id].as_str(), special)),
            _ => None,
        })
    }

    /// The bytes the id must decode to (None: no such id).
    fn expected(&self, id: usize) -> Option<&[u8]> {
        match self.kinds[id] {
            Kind::Normal { .. } => self.normal_bytes(id),
            Kind::Added { .. } => Some(self.tokens[id].as_bytes()),
            Kind::Unused => None,
        }
    }
}

impl Tokenizer {
    /// The tokenizer of a GGUF file, from its metadata: the same ids as the `tokenizer.json`
    /// (or, for Qwen v1, the `qwen.tiktoken`) it was converted from. Only Qwen's byte-level BPE
    /// (`tokenizer.ggml.model` "gpt2", `pre` "qwen2") is accepted; see the module doc.
    /// [`Tokenizer::stop_ids`] includes the file's eos / eot / eom ids.
    pub fn from_gguf(meta: &BTreeMap<String, GgufValue>) -> Result<Tokenizer> {
        check_kind(meta)?;
        let vocab = read_vocab(meta)?;
        let extra_stops = stop_ids(meta, &vocab)?;
        let v1 = matches!(meta.get(KEY_ARCH).and_then(|v| v.as_str()), Some("qwen"));
        let (format, backend, table, specials) = if v1 {
            let text = v1_tiktoken_text(&vocab)?;
            let (bpe, table, specials) = tiktoken::TiktokenBpe::load(&text).map_err(rebuilt_err)?;
            (TokenizerFormat::Tiktoken, Backend::Tiktoken(bpe), table, specials)
        } else {
            let json = tokenizer_json(&vocab)?;
            let (hf, table, specials) = hf::HfBackend::load(&json).map_err(rebuilt_err)?;
            (TokenizerFormat::HfJson, Backend::Hf(Box::new(hf)), table, specials)
        };
        // What the backend made of it must be what the metadata says, id for id.
        let last = vocab.kinds.iter().rposition(|k| *k != Kind::Unused).unwrap_or(0);
        if table.len() != last + 1 {
            return Err(bad(format!(
                "the rebuilt tokenizer has {} ids, the metadata {} (up to its last used id): \
                 the ids cannot be reproduced (added tokens must follow the BPE tokens without gaps)",
                table.len(),
                last + 1
            )));
        }
        if let Some(id) = (0..=last).find(|&id| table.get(id as u32) != vocab.expected(id)) {
            return Err(bad(format!(
                "token {id} {:?} would get other bytes in the rebuilt tokenizer: the ids cannot be \
                 reproduced (added tokens must follow the BPE tokens without gaps)",
                vocab.tokens[id]
            )));
        }
        let added = vocab.added().count();
        if specials.len() != added || vocab.added().any(|(id, text, _)| specials.get(text) != Some(&id)) {
            return Err(bad("the added tokens would get other ids in the rebuilt tokenizer"));
        }
        Ok(Tokenizer { inner: Arc::new(Inner { format, backend, table, specials, extra_stops }) })
    }

    /// The file's chat template (`tokenizer.chat_template`, a Jinja template), if it has one.
    pub fn gguf_chat_template(meta: &BTreeMap<String, GgufValue>) -> Option<String> {
        meta.get(KEY_CHAT_TEMPLATE).and_then(|v| v.as_str()).map(str::to_string)
    }
}

fn rebuilt_err(e: Error) -> Error {
    match e {
        Error::Tokenizer(m) => bad(format!("the vocabulary does not load: {m}")),
        other => other,
    }
}

/// A string value that must be there.
fn string<'m>(meta: &'m BTreeMap<String, GgufValue>, key: &str) -> Result<&'m str> {
    match meta.get(key) {
        None => Err(bad(format!("no {key}: the file has no tokenizer, or one we cannot read"))),
        Some(v) => v.as_str().ok_or_else(|| bad(format!("{key} is not a string"))),
    }
}

/// The tokenizer model and pre-tokenizer, and options we do not reproduce.
fn check_kind(meta: &BTreeMap<String, GgufValue>) -> Result<()> {
    let model = string(meta, KEY_MODEL)?;
    if model != "gpt2" {
        return Err(bad(format!("{KEY_MODEL} is {model:?}: only \"gpt2\" (byte-level BPE, Qwen's) is supported")));
    }
    // Converters before llama.cpp's pre-tokenizer keys (spring 2024: the official Qwen1.5
    // GGUFs) wrote no `pre`. A Qwen architecture with Qwen's vocabulary (its first special
    // token at 151643) then means Qwen's pre-tokenizer; the ids are still checked token by
    // token against the file below.
    let qwen_vocab = || {
        let arch = meta.get("general.architecture").and_then(GgufValue::as_str);
        let first_special = match meta.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Strings(t)) => t.get(151643).map(String::as_str),
            _ => None,
        };
        matches!(arch, Some("qwen" | "qwen2" | "qwen3")) && first_special == Some("<|endoftext|>")
    };
    let pre = match meta.get(KEY_PRE) {
        None if qwen_vocab() => "qwen2",
        _ => string(meta, KEY_PRE)?,
    };
    if pre != "qwen2" {
        return Err(bad(format!(
            "{KEY_PRE} is {pre:?}: only \"qwen2\" (Qwen's pre-tokenizer, Qwen v1 to Qwen3) is supported"
        )));
    }
    for (key, what) in [
        ("tokenizer.ggml.add_bos_token", "adds a BOS token to every text"),
        ("tokenizer.ggml.add_eos_token", "adds an EOS token to every text"),
        ("tokenizer.ggml.add_sep_token", "adds a separator token"),
        ("tokenizer.ggml.add_space_prefix", "prefixes a space"),
        ("tokenizer.ggml.remove_extra_whitespaces", "removes extra whitespace"),
        ("tokenizer.ggml.normalizer.lowercase", "lowercases text"),
        ("tokenizer.ggml.normalizer.strip_accents", "strips accents"),
    ] {
        match meta.get(key) {
            None => {}
            Some(v) => match v.as_bool() {
                Some(false) => {}
                Some(true) => return Err(bad(format!("{key} is true: its tokenizer {what}, Qwen's does not"))),
                None => return Err(bad(format!("{key} is not a bool"))),
            },
        }
    }
    if meta.contains_key("tokenizer.ggml.precompiled_charsmap") {
        return Err(bad("tokenizer.ggml.precompiled_charsmap: a SentencePiece normalizer, not Qwen's"));
    }
    Ok(())
}

/// Tokens, their types and the merges, checked.
fn read_vocab(meta: &BTreeMap<String, GgufValue>) -> Result<Vocab<'_>> {
    let tokens = match meta.get(KEY_TOKENS) {
        None => return Err(bad(format!("no {KEY_TOKENS}"))),
        Some(GgufValue::Strings(t)) => t.as_slice(),
        Some(_) => return Err(bad(format!("{KEY_TOKENS} is not an array of strings"))),
    };
    if tokens.is_empty() {
        return Err(bad(format!("{KEY_TOKENS} is empty")));
    }
    if tokens.len() > MAX_TOKEN_ID as usize + 1 {
        return Err(bad(format!("{} tokens: more than the {} supported", tokens.len(), MAX_TOKEN_ID as usize + 1)));
    }
    let types = match meta.get(KEY_TYPES) {
        None => return Err(bad(format!("no {KEY_TYPES}"))),
        Some(GgufValue::Ints(t)) => t.as_slice(),
        Some(_) => return Err(bad(format!("{KEY_TYPES} is not an array of integers"))),
    };
    if types.len() != tokens.len() {
        return Err(bad(format!("{} tokens but {} token types", tokens.len(), types.len())));
    }
    let merges = match meta.get(KEY_MERGES) {
        None => return Err(bad(format!("no {KEY_MERGES}: a BPE vocabulary needs its merges"))),
        Some(GgufValue::Strings(m)) => m.as_slice(),
        Some(_) => return Err(bad(format!("{KEY_MERGES} is not an array of strings"))),
    };
    if merges.is_empty() {
        return Err(bad(format!("{KEY_MERGES} is empty")));
    }
    if merges.len() > tokens.len() {
        return Err(bad(format!("{} merges for {} tokens: each merge makes a token", merges.len(), tokens.len())));
    }
    let text: usize = tokens.iter().map(|t| t.len()).sum();
    let merge_text: usize = merges.iter().map(|m| m.len()).sum();
    if text > MAX_TEXT || merge_text > MAX_TEXT {
        return Err(bad(format!(
            "{text} bytes of tokens and {merge_text} bytes of merges: more than the {MAX_TEXT} accepted for each"
        )));
    }

    let decoder = byte_decoder();
    let mut bytes = Vec::with_capacity(text);
    let mut kinds = Vec::with_capacity(tokens.len());
    for (id, (tok, &ty)) in tokens.iter().zip(types).enumerate() {
        let kind = match ty {
            UNUSED => Kind::Unused,
            NORMAL | CONTROL | USER_DEFINED if tok.is_empty() => {
                return Err(bad(format!("token {id} is empty")));
            }
            NORMAL | CONTROL | USER_DEFINED if tok.len() > MAX_TOKEN_LEN => {
                return Err(bad(format!("token {id} is {} bytes long (at most {MAX_TOKEN_LEN})", tok.len())));
            }
            NORMAL => {
                let start = bytes.len() as u32;
                for c in tok.chars() {
                    match decoder(c) {
                        Some(b) => bytes.push(b),
                        None => {
                            return Err(bad(format!(
                                "token {id} {tok:?} is not byte-level BPE ({c:?} is not in GPT-2's \
                                 byte-to-unicode alphabet)"
                            )));
                        }
                    }
                }
                Kind::Normal { start, end: bytes.len() as u32 }
            }
            CONTROL => Kind::Added { special: true },
            USER_DEFINED => Kind::Added { special: false },
            BYTE => {
                return Err(bad(format!(
                    "token {id} {tok:?} has type BYTE (6), a SentencePiece byte token: not byte-level BPE"
                )))
            }
            UNKNOWN => return Err(bad(format!("token {id} {tok:?} has type UNKNOWN (2): Qwen's BPE has none"))),
            other => return Err(bad(format!("token {id} {tok:?} has an unknown token type {other}"))),
        };
        kinds.push(kind);
    }
    let vocab = Vocab { tokens, kinds, bytes, merges };

    // Each text once among the BPE tokens, and once among the added tokens.
    let mut seen: FxHashMap<&[u8], u32> = FxHashMap::default();
    seen.reserve(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        if let Some(b) = vocab.normal_bytes(id) {
            if let Some(first) = seen.insert(b, id as u32) {
                return Err(bad(format!("tokens {first} and {id} are the same bytes {tok:?}")));
            }
        }
    }
    if let Some(b) = (0..=255u8).find(|b| !seen.contains_key(&[*b][..])) {
        return Err(bad(format!("byte {b:#04x} has no token: a byte-level BPE needs all 256")));
    }
    let mut added: FxHashMap<&str, u32> = FxHashMap::default();
    for (id, text, _) in vocab.added() {
        if let Some(first) = added.insert(text, id) {
            return Err(bad(format!("added tokens {first} and {id} are the same text {text:?}")));
        }
    }
    if vocab.added().next().is_none() {
        return Err(bad("no added tokens (CONTROL / USER_DEFINED): Qwen's have <|endoftext|>, <|im_start|>, ..."));
    }

    // Each merge "a b" joins two BPE tokens into a third.
    let mut by_text: FxHashMap<&str, u32> = FxHashMap::default();
    by_text.reserve(tokens.len());
    for (id, k) in vocab.kinds.iter().enumerate() {
        if matches!(k, Kind::Normal { .. }) {
            by_text.insert(tokens[id].as_str(), id as u32);
        }
    }
    let mut joined = String::new();
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = split_merge(m).ok_or_else(|| bad(format!("merge {i} {m:?} is not two tokens \"a b\"")))?;
        for part in [a, b] {
            if !by_text.contains_key(part) {
                return Err(bad(format!("merge {i} {m:?}: {part:?} is not a BPE token")));
            }
        }
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        if !by_text.contains_key(joined.as_str()) {
            return Err(bad(format!("merge {i} {m:?} makes {joined:?}, which is not a BPE token")));
        }
    }
    Ok(vocab)
}

fn split_merge(m: &str) -> Option<(&str, &str)> {
    let (a, b) = m.split_once(' ')?;
    (!a.is_empty() && !b.is_empty() && !b.contains(' ')).then_some((a, b))
}

/// eos, eot and eom: the ids generation stops at besides the ChatML ones. bos and padding
/// are checked too (they name real tokens) but change nothing: we never add a BOS.
fn stop_ids(meta: &BTreeMap<String, GgufValue>, vocab: &Vocab) -> Result<Vec<u32>> {
    let mut stops = Vec::new();
    for (name, stop) in [("eos", true), ("eot", true), ("eom", true), ("bos", false), ("padding", false)] {
        let key = format!("tokenizer.ggml.{name}_token_id");
        let Some(v) = meta.get(&key) else { continue };
        let id = v.as_u64().ok_or_else(|| bad(format!("{key} is not a token id")))?;
        let real = usize::try_from(id).ok().and_then(|i| vocab.kinds.get(i)).is_some_and(|k| *k != Kind::Unused);
        if !real {
            return Err(bad(format!("{key} {id} is not a token of the vocabulary")));
        }
        if stop && !stops.contains(&(id as u32)) {
            stops.push(id as u32);
        }
    }
    Ok(stops)
}

/// The Qwen v1 vocabulary as `qwen.tiktoken` text (`base64(bytes) rank` lines), after checking
/// that the file is one: v1's added tokens, and merges that rank-based BPE implies.
fn v1_tiktoken_text(vocab: &Vocab) -> Result<Vec<u8>> {
    let mut added: Vec<(String, u32)> = vocab.added().map(|(id, t, _)| (t.to_string(), id)).collect();
    added.sort_by_key(|(_, id)| *id);
    if added != tiktoken::v1_specials() {
        return Err(bad(format!(
            "general.architecture is \"qwen\" (Qwen v1) but the added tokens are not Qwen v1's \
             (<|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|>..<|extra_204|> from id {})",
            tiktoken::SPECIAL_START
        )));
    }
    let mut ranks: FxHashMap<&[u8], u32> = FxHashMap::default();
    ranks.reserve(vocab.kinds.len());
    let mut work = 0u64;
    for id in 0..vocab.kinds.len() {
        if let Some(b) = vocab.normal_bytes(id) {
            if id as u32 >= tiktoken::SPECIAL_START {
                return Err(bad(format!(
                    "BPE token {id} lies among Qwen v1's special tokens (from id {})",
                    tiktoken::SPECIAL_START
                )));
            }
            ranks.insert(b, id as u32);
            if b.len() > 1 {
                work += (b.len() * b.len()) as u64;
            }
        }
    }
    if work > MAX_BPE_WORK {
        return Err(bad("the BPE tokens are implausibly long (checking their merges would take too long)"));
    }
    check_merges_follow_ranks(vocab, &ranks)?;

    let mut out = Vec::with_capacity(vocab.bytes.len() * 2 + ranks.len() * 8);
    for id in 0..vocab.kinds.len() {
        if let Some(b) = vocab.normal_bytes(id) {
            base64_encode(b, &mut out);
            out.push(b' ');
            out.extend_from_slice(id.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Rank-based BPE (ours, tiktoken's) and merge-list BPE (llama.cpp's, tokenizers') give the
/// same tokens when the merges are, in rank order, one per multi-byte token, each the last
/// merge that rank-based BPE makes when it builds that token from its bytes. Then whenever
/// rank-based BPE joins two parts into a token it joins them as that token's merge, and the
/// lowest-rank joinable pair is also the earliest merge that applies. This is what the
/// converter writes (`_set_vocab_qwen`: `QwenModel.bpe(ranks, token, max_rank=rank)`).
fn check_merges_follow_ranks(vocab: &Vocab, ranks: &FxHashMap<&[u8], u32>) -> Result<()> {
    let multi = (0..vocab.kinds.len()).filter(|&id| vocab.normal_bytes(id).is_some_and(|b| b.len() > 1)).count();
    if vocab.merges.len() != multi {
        return Err(bad(format!(
            "{} merges for {multi} multi-byte tokens: Qwen v1's merges are one per token",
            vocab.merges.len()
        )));
    }
    let decoder = byte_decoder();
    let to_bytes = |s: &str| -> Vec<u8> { s.chars().filter_map(&decoder).collect() };
    let mut prev: Option<u32> = None;
    for (i, m) in vocab.merges.iter().enumerate() {
        // read_vocab checked that both parts and their join are BPE tokens.
        let (a, b) = split_merge(m).ok_or_else(|| bad(format!("merge {i} {m:?} is not two tokens")))?;
        let (a, b) = (to_bytes(a), to_bytes(b));
        let token = [a.as_slice(), b.as_slice()].concat();
        let rank = *ranks.get(token.as_slice()).ok_or_else(|| bad(format!("merge {i} {m:?} makes no token")))?;
        if prev.is_some_and(|p| rank <= p) {
            return Err(bad(format!(
                "merge {i} {m:?} makes token {rank}, after a merge that made token {}: the merges are not \
                 in rank order, so they do not tokenize as Qwen v1's ranks do",
                prev.unwrap_or(0)
            )));
        }
        prev = Some(rank);
        let bounds = rank_bpe(ranks, &token, rank);
        if bounds != [0, a.len(), token.len()] {
            return Err(bad(format!(
                "merge {i} {m:?} is not how rank-based BPE builds token {rank}: the merges do not \
                 tokenize as Qwen v1's ranks do"
            )));
        }
    }
    Ok(())
}

/// Rank-based BPE of `piece` using only ranks below `max_rank`: the part boundaries.
/// Lowest rank first, ties leftmost (tiktoken's rule).
fn rank_bpe(ranks: &FxHashMap<&[u8], u32>, piece: &[u8], max_rank: u32) -> Vec<usize> {
    let mut bounds: Vec<usize> = (0..=piece.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&piece[bounds[i]..bounds[i + 2]]) {
                if r < max_rank && best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => return bounds,
        }
    }
}

/// Qwen's tokenizer.json around the file's vocabulary: the Qwen1.5/2/2.5/3 normalizer,
/// pre-tokenizer, post-processor and decoder, a BPE model with the file's tokens and merges,
/// and its added tokens (not normalized, no stripping: as in every Qwen tokenizer.json).
fn tokenizer_json(vocab: &Vocab) -> Result<Vec<u8>> {
    let fixed = serde_json::json!({
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
    });
    let json_err = |e: serde_json::Error| bad(format!("building tokenizer.json: {e}"));
    let text: usize =
        vocab.tokens.iter().map(|t| t.len()).sum::<usize>() + vocab.merges.iter().map(|m| m.len()).sum::<usize>();
    let mut out: Vec<u8> = Vec::with_capacity(text * 2 + (vocab.tokens.len() + vocab.merges.len()) * 16 + 4096);
    out.extend_from_slice(br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":["#);
    for (n, (id, text, special)) in vocab.added().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let t = serde_json::json!({
            "id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        });
        serde_json::to_writer(&mut out, &t).map_err(json_err)?;
    }
    out.extend_from_slice(b"]");
    if let serde_json::Value::Object(parts) = &fixed {
        for (k, v) in parts {
            out.push(b',');
            serde_json::to_writer(&mut out, k).map_err(json_err)?;
            out.push(b':');
            serde_json::to_writer(&mut out, v).map_err(json_err)?;
        }
    }
    out.extend_from_slice(
        br#","model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":"","end_of_word_suffix":"","fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"#,
    );
    let mut first = true;
    for (id, k) in vocab.kinds.iter().enumerate() {
        if let Kind::Normal { .. } = k {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, &vocab.tokens[id]).map_err(json_err)?;
            out.push(b':');
            out.extend_from_slice(id.to_string().as_bytes());
        }
    }
    out.extend_from_slice(br#"},"merges":["#);
    for (i, m) in vocab.merges.iter().enumerate() {
        let (a, b) = split_merge(m).ok_or_else(|| bad(format!("merge {i} {m:?} is not two tokens")))?;
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &[a, b]).map_err(json_err)?;
    }
    out.extend_from_slice(b"]}}");
    Ok(out)
}

/// The Split pattern of Qwen's tokenizer.json (Qwen1.5 to Qwen3; also `qwen.tiktoken`'s).
const QWEN_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's unicode -> byte map (the inverse of its byte-to-unicode table): printable bytes
/// stand for themselves, the other 68 are U+0100.. in byte order.
fn byte_decoder() -> impl Fn(char) -> Option<u8> {
    let mut table = [0u8; 324]; // chars up to U+0143
    let mut known = [false; 324];
    let mut next = 256usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as usize
        } else {
            next += 1;
            next - 1
        };
        table[c] = b;
        known[c] = true;
    }
    move |c: char| {
        let i = c as usize;
        (i < table.len() && known[i]).then(|| table[i])
    }
}

fn base64_encode(data: &[u8], out: &mut Vec<u8>) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(A[(v >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Meta = BTreeMap<String, GgufValue>;

    /// GPT-2's byte -> char map.
    fn byte_chars() -> Vec<char> {
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
                    b as char
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap()
                }
            })
            .collect()
    }

    const MERGES: [&str; 4] = ["h e", "l l", "he ll", "hell o"];
    const HELLO: u32 = 259;

    /// A tiny byte-level vocabulary as the converter writes it: the 256 bytes (byte order),
    /// he, ll, hell, hello (256..=259), then for Qwen2-style files <|endoftext|>,
    /// <|im_start|>, <|im_end|> (CONTROL) and <think> (USER_DEFINED) at 260..=263 and one
    /// [PAD264]; for Qwen v1 fillers up to 151642 and v1's 208 specials.
    fn meta(v1: bool) -> Meta {
        let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
        tokens.extend(["he", "ll", "hell", "hello"].map(String::from));
        let mut types = vec![NORMAL; tokens.len()];
        if v1 {
            while tokens.len() < tiktoken::SPECIAL_START as usize {
                tokens.push(format!("[PAD{}]", tokens.len()));
                types.push(UNUSED);
            }
            for (s, _) in tiktoken::v1_specials() {
                tokens.push(s);
                types.push(CONTROL);
            }
        } else {
            for (s, ty) in [("<|endoftext|>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)] {
                tokens.push(s.into());
                types.push(ty);
            }
            tokens.push("<think>".into());
            types.push(USER_DEFINED);
        }
        tokens.push(format!("[PAD{}]", tokens.len()));
        types.push(UNUSED);
        let mut m = Meta::new();
        let s = |v: &str| GgufValue::String(v.into());
        m.insert(KEY_ARCH.into(), s(if v1 { "qwen" } else { "qwen3" }));
        m.insert(KEY_MODEL.into(), s("gpt2"));
        m.insert(KEY_PRE.into(), s("qwen2"));
        m.insert(KEY_TOKENS.into(), GgufValue::Strings(tokens));
        m.insert(KEY_TYPES.into(), GgufValue::Ints(types));
        m.insert(KEY_MERGES.into(), GgufValue::Strings(MERGES.map(String::from).to_vec()));
        let endoftext = if v1 { tiktoken::SPECIAL_START } else { 260 };
        m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(endoftext + 2));
        m.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(endoftext));
        m.insert("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false));
        m.insert(KEY_CHAT_TEMPLATE.into(), s("{{ messages }}"));
        m
    }

    fn tokens_mut(m: &mut Meta) -> &mut Vec<String> {
        match m.get_mut(KEY_TOKENS) {
            Some(GgufValue::Strings(t)) => t,
            _ => unreachable!(),
        }
    }
    fn types_mut(m: &mut Meta) -> &mut Vec<i128> {
        match m.get_mut(KEY_TYPES) {
            Some(GgufValue::Ints(t)) => t,
            _ => unreachable!(),
        }
    }
    fn merges_mut(m: &mut Meta) -> &mut Vec<String> {
        match m.get_mut(KEY_MERGES) {
            Some(GgufValue::Strings(t)) => t,
            _ => unreachable!(),
        }
    }

    #[test]
    fn tiny_vocabularies_load() {
        let t = Tokenizer::from_gguf(&meta(false)).unwrap();
        assert_eq!(t.format(), TokenizerFormat::HfJson);
        assert_eq!(t.vocab_size(), 264); // [PAD264] is no token
        assert_eq!(t.encode("hello").unwrap(), [HELLO]);
        assert_eq!(t.encode("<think>").unwrap().len(), 7);
        assert_eq!(t.encode_with_specials("<think>hello<|im_end|>").unwrap(), [263, HELLO, 262]);
        assert_eq!(t.decode(&[263, HELLO, 262]).unwrap(), "<think>hello<|im_end|>");
        assert_eq!(t.stop_ids(), [260, 261, 262]);
        assert!(t.is_special(263) && !t.is_special(HELLO));
        assert!(t.decode(&[264]).is_err());
        assert_eq!(t.decode_bytes(&[0, 255, 0x20]).unwrap(), [0, 255, 0x20]);
        assert_eq!(Tokenizer::gguf_chat_template(&meta(false)).as_deref(), Some("{{ messages }}"));

        let t = Tokenizer::from_gguf(&meta(true)).unwrap();
        assert_eq!(t.format(), TokenizerFormat::Tiktoken);
        assert_eq!(t.vocab_size(), 151851);
        assert_eq!(t.encode("hello").unwrap(), [HELLO]);
        assert_eq!(t.encode("hellohe").unwrap(), [HELLO, 256]);
        assert_eq!(t.encode_with_specials("hello<|extra_204|>").unwrap(), [HELLO, 151850]);
        assert_eq!(t.stop_ids(), [151643, 151644, 151645]);
        assert!(t.decode(&[300]).is_err()); // a filler
    }

    fn refused(what: &str, m: &Meta) {
        match Tokenizer::from_gguf(m) {
            Ok(_) => panic!("{what}: loaded"),
            Err(Error::Tokenizer(msg)) => assert!(msg.contains(what), "expected {what:?} in: {msg}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    fn edited(v1: bool, edit: impl FnOnce(&mut Meta)) -> Meta {
        let mut m = meta(v1);
        edit(&mut m);
        m
    }

    #[test]
    fn refuses_other_tokenizers_and_options() {
        for v1 in [false, true] {
            let set = |k: &str, v: GgufValue| edited(v1, |m| drop(m.insert(k.into(), v)));
            refused("\"llama\"", &set(KEY_MODEL, GgufValue::String("llama".into())));
            refused("\"bert\"", &set(KEY_MODEL, GgufValue::String("bert".into())));
            refused("\"qwen35\"", &set(KEY_PRE, GgufValue::String("qwen35".into())));
            refused("\"default\"", &set(KEY_PRE, GgufValue::String("default".into())));
            refused("no tokenizer.ggml.model", &edited(v1, |m| drop(m.remove(KEY_MODEL))));
            // (Without `pre`, only a Qwen architecture with Qwen's vocabulary loads.)
            refused(
                "no tokenizer.ggml.pre",
                &edited(v1, |m| {
                    m.remove(KEY_PRE);
                    m.insert("general.architecture".into(), GgufValue::String("llama".into()));
                }),
            );
            refused("tokenizer.ggml.pre is not a string", &set(KEY_PRE, GgufValue::U32(2)));
            for key in [
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_sep_token",
                "tokenizer.ggml.add_space_prefix",
                "tokenizer.ggml.remove_extra_whitespaces",
                "tokenizer.ggml.normalizer.lowercase",
                "tokenizer.ggml.normalizer.strip_accents",
            ] {
                refused(&format!("{key} is true"), &set(key, GgufValue::Bool(true)));
                refused(&format!("{key} is not a bool"), &set(key, GgufValue::U8(1)));
                assert!(Tokenizer::from_gguf(&set(key, GgufValue::Bool(false))).is_ok(), "{key}");
            }
            refused("precompiled_charsmap", &set("tokenizer.ggml.precompiled_charsmap", GgufValue::Ints(vec![])));
        }
    }

    #[test]
    fn refuses_missing_or_mismatched_arrays() {
        for v1 in [false, true] {
            refused("no tokenizer.ggml.tokens", &edited(v1, |m| drop(m.remove(KEY_TOKENS))));
            refused("no tokenizer.ggml.token_type", &edited(v1, |m| drop(m.remove(KEY_TYPES))));
            refused("no tokenizer.ggml.merges", &edited(v1, |m| drop(m.remove(KEY_MERGES))));
            refused(
                "tokens is not an array of strings",
                &edited(v1, |m| drop(m.insert(KEY_TOKENS.into(), GgufValue::Ints(vec![1])))),
            );
            refused(
                "token_type is not an array of integers",
                &edited(v1, |m| drop(m.insert(KEY_TYPES.into(), GgufValue::Floats(vec![1.0])))),
            );
            refused(
                "merges is not an array of strings",
                &edited(v1, |m| drop(m.insert(KEY_MERGES.into(), GgufValue::Nested(3)))),
            );
            refused("tokens is empty", &edited(v1, |m| tokens_mut(m).clear()));
            refused("merges is empty", &edited(v1, |m| merges_mut(m).clear()));
            refused(
                "token types",
                &edited(v1, |m| {
                    let t = types_mut(m);
                    t.truncate(t.len() - 1);
                }),
            );
            refused("token types", &edited(v1, |m| types_mut(m).push(NORMAL)));
            refused(
                "each merge makes a token",
                &edited(v1, |m| {
                    let n = tokens_mut(m).len();
                    *merges_mut(m) = vec!["h e".to_string(); n + 1];
                }),
            );
        }
    }

    #[test]
    fn refuses_huge_inputs_before_working_on_them() {
        let n = MAX_TOKEN_ID as usize + 2;
        refused(
            "tokens: more than the",
            &edited(false, |m| {
                *tokens_mut(m) = vec![String::new(); n];
                *types_mut(m) = vec![NORMAL; n];
            }),
        );
        refused("bytes of tokens", &edited(false, |m| tokens_mut(m)[100] = "a".repeat(MAX_TEXT + 1)));
        refused("bytes of merges", &edited(false, |m| merges_mut(m)[0] = "a".repeat(MAX_TEXT + 1)));
        refused("bytes long", &edited(false, |m| tokens_mut(m)[200] = "a".repeat(MAX_TOKEN_LEN + 1)));
        refused("bytes long", &edited(false, |m| tokens_mut(m)[261] = "<".repeat(MAX_TOKEN_LEN + 1)));
        // Qwen v1's merge check runs rank-based BPE on every token: bounded work.
        refused(
            "implausibly long",
            &edited(true, |m| {
                for i in 0..300 {
                    tokens_mut(m)[1000 + i] = format!("{i:0>1000}");
                    types_mut(m)[1000 + i] = NORMAL;
                }
            }),
        );
    }

    #[test]
    fn refuses_tokens_we_cannot_reproduce() {
        for v1 in [false, true] {
            refused("type BYTE (6)", &edited(v1, |m| types_mut(m)[65] = BYTE));
            refused("type UNKNOWN (2)", &edited(v1, |m| types_mut(m)[65] = UNKNOWN));
            refused("unknown token type 7", &edited(v1, |m| types_mut(m)[65] = 7));
            refused("unknown token type -1", &edited(v1, |m| types_mut(m)[65] = -1));
            refused("token 65 is empty", &edited(v1, |m| tokens_mut(m)[65] = String::new()));
            refused(
                "is empty",
                &edited(v1, |m| {
                    let last = tokens_mut(m).len() - 2; // an added token
                    tokens_mut(m)[last] = String::new();
                }),
            );
            // A literal space, a SentencePiece ▁, U+0400, a soft hyphen: not in GPT-2's alphabet.
            for bad in ["h e", "\u{2581}he", "\u{100}\u{400}", "h\u{ad}"] {
                refused("is not byte-level BPE", &edited(v1, |m| tokens_mut(m)[256] = bad.into()));
            }
            refused("the same bytes", &edited(v1, |m| tokens_mut(m)[259] = "he".into()));
            refused(
                "are the same text",
                &edited(v1, |m| {
                    let n = tokens_mut(m).len();
                    tokens_mut(m)[n - 2] = tokens_mut(m)[n - 3].clone();
                }),
            );
            refused("byte 0x41 has no token", &edited(v1, |m| types_mut(m)[0x41] = UNUSED));
            refused(
                "no added tokens",
                &edited(v1, |m| {
                    for t in types_mut(m).iter_mut().filter(|t| **t == CONTROL || **t == USER_DEFINED) {
                        *t = UNUSED;
                    }
                }),
            );
        }
    }

    #[test]
    fn refuses_bad_merges() {
        for v1 in [false, true] {
            for bad in ["he", "h  e", " he", "he ", "h e l", ""] {
                refused("is not two tokens", &edited(v1, |m| merges_mut(m)[1] = bad.into()));
            }
            refused("\"zz\" is not a BPE token", &edited(v1, |m| merges_mut(m)[1] = "zz e".into()));
            refused("\"<think>\" is not a BPE token", &edited(v1, |m| merges_mut(m)[1] = "<think> e".into()));
            refused("makes \"eh\", which is not a BPE token", &edited(v1, |m| merges_mut(m)[1] = "e h".into()));
        }
    }

    #[test]
    fn refuses_bad_special_ids() {
        for v1 in [false, true] {
            for name in ["eos", "eot", "eom", "bos", "padding"] {
                let key = format!("tokenizer.ggml.{name}_token_id");
                let set = |v: GgufValue| edited(v1, |m| drop(m.insert(key.clone(), v)));
                refused(&format!("{key} is not a token id"), &set(GgufValue::String("2".into())));
                refused(&format!("{key} is not a token id"), &set(GgufValue::I32(-1)));
                refused(&format!("{key} 100000000 is not a token"), &set(GgufValue::U64(100_000_000)));
                refused(&format!("{key} {} is not a token", u64::MAX), &set(GgufValue::U64(u64::MAX)));
                let pad = if v1 { 300 } else { 264 }; // a [PAD] filler
                refused(&format!("{key} {pad} is not a token"), &set(GgufValue::U32(pad)));
            }
        }
        // eos / eot / eom join the stops; bos and padding do not.
        let m = edited(false, |m| {
            m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(263));
            m.insert("tokenizer.ggml.eot_token_id".into(), GgufValue::I64(262));
            m.insert("tokenizer.ggml.eom_token_id".into(), GgufValue::U16(HELLO as u16));
            m.insert("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(256));
        });
        assert_eq!(Tokenizer::from_gguf(&m).unwrap().stop_ids(), [260, 261, 262, 263, HELLO]);
    }

    #[test]
    fn qwen_v1_needs_its_specials_and_rank_merges() {
        refused("not Qwen v1's", &edited(false, |m| drop(m.insert(KEY_ARCH.into(), GgufValue::String("qwen".into())))));
        refused("not Qwen v1's", &edited(true, |m| tokens_mut(m)[151700] = "<|extra_x|>".into()));
        refused("not Qwen v1's", &edited(true, |m| types_mut(m)[151700] = UNUSED));
        refused("not Qwen v1's", &edited(true, |m| types_mut(m)[300] = USER_DEFINED));
        refused(
            "lies among Qwen v1's special tokens",
            &edited(true, |m| {
                let n = tokens_mut(m).len();
                tokens_mut(m)[n - 1] = "zz".into();
                types_mut(m)[n - 1] = NORMAL;
            }),
        );
        refused("3 merges for 4 multi-byte tokens", &edited(true, |m| drop(merges_mut(m).pop())));
        refused("not in rank order", &edited(true, |m| merges_mut(m).swap(0, 1)));
        // "hell" = "h ell" would be a fine merge for merge-order BPE ("ell" a token), but
        // rank-based BPE builds it as "he ll".
        refused(
            "not how rank-based BPE builds token 258",
            &edited(true, |m| {
                tokens_mut(m)[300] = "ell".into();
                types_mut(m)[300] = NORMAL;
                *merges_mut(m) = ["h e", "l l", "h ell", "hell o", "e ll"].map(String::from).to_vec();
            }),
        );
        // The same list, with the merges in order, is fine on the tokenizer.json route.
        let m = edited(false, |m| merges_mut(m).swap(0, 1));
        assert_eq!(Tokenizer::from_gguf(&m).unwrap().encode("hello").unwrap(), [HELLO]);
    }

    #[test]
    fn refuses_ids_the_tokenizers_crate_would_move() {
        // Added tokens after a gap (a filler between them) get other ids from the tokenizers
        // crate, which numbers added tokens on from the BPE vocabulary.
        refused("cannot be reproduced", &edited(false, |m| types_mut(m)[261] = UNUSED));
        refused(
            "cannot be reproduced",
            &edited(false, |m| {
                tokens_mut(m)[258] = "[PAD258]".into();
                types_mut(m)[258] = UNUSED;
                merges_mut(m).truncate(2);
            }),
        );
    }

    #[test]
    fn base64_matches_the_standard() {
        let mut out = Vec::new();
        for (data, want) in
            [(&b""[..], ""), (b"!", "IQ=="), (b"he", "aGU="), (b"hello", "aGVsbG8="), (b"\xff\x00\x80", "/wCA")]
        {
            out.clear();
            base64_encode(data, &mut out);
            assert_eq!(out, want.as_bytes());
        }
        let decode = byte_decoder();
        for (b, c) in byte_chars().into_iter().enumerate() {
            assert_eq!(decode(c), Some(b as u8));
        }
        assert_eq!(decode(' '), None);
        assert_eq!(decode('\u{144}'), None);
    }
}
