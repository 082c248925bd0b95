//! Hugging Face `tokenizer.json` (Qwen1.5/2/2.5/3) through the `tokenizers` crate.
//!
//! Ordinary encoding runs the normalizer, pre-tokenizer and model ourselves and skips the
//! added-vocabulary pass: `tokenizers`' own `encode` always matches added tokens (its
//! `encode_special_tokens` switch only covers those marked `special`, not e.g. `<think>`),
//! so it would let message content inject control tokens.

use super::TokenTable;
use crate::error::{Error, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use tokenizers::{Model, Normalizer, OffsetType, PreTokenizedString, PreTokenizer};

pub(crate) struct HfBackend {
    tk: tokenizers::Tokenizer,
    added: FxHashSet<u32>,
}

/// How much a normalizer may multiply a text's length (in chars) by its `Replace` rules. Qwen's
/// is NFC alone (1x); SentencePiece-style `" " → "▁"` is 1x too.
const MAX_NORMALIZER_GROWTH: f64 = 4.0;

/// The worst-case growth of a serialized normalizer from its `Replace` rules: a rule whose
/// replacement has more chars than the shortest text it can match multiplies by the ratio (a
/// regex counts as matching one char), and rules in a `Sequence` compound. Unicode forms
/// (NFC, NFKD, ...) grow text by a bounded amount and count as 1.
fn normalizer_growth(v: &serde_json::Value) -> f64 {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => v
            .get("normalizers")
            .and_then(|n| n.as_array())
            .map_or(1.0, |list| list.iter().map(normalizer_growth).product()),
        Some("Replace") => {
            let content = v.get("content").and_then(|c| c.as_str()).map_or(0, |c| c.chars().count());
            let matched = match v.get("pattern") {
                Some(p) => p.get("String").and_then(|s| s.as_str()).map_or(1, |s| s.chars().count().max(1)),
                None => 1,
            };
            (content as f64 / matched as f64).max(1.0)
        }
        _ => 1.0,
    }
}

/// Normalizers we accept: the Unicode forms and simple text edits (Qwen's is NFC). Others (a
/// SentencePiece `Precompiled` charsmap, say) are refused: no Qwen model uses them, and the
/// tokenizers crate panics on some malformed ones.
fn check_normalizer(v: &serde_json::Value) -> Result<()> {
    const OK: &[&str] = &["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "StripAccents", "Prepend", "Replace"];
    match v.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => {
            let list = v.get("normalizers").and_then(|n| n.as_array());
            list.ok_or_else(|| Error::Tokenizer("tokenizer.json: a Sequence normalizer without a list".into()))?
                .iter()
                .try_for_each(check_normalizer)
        }
        Some(t) if OK.contains(&t) => Ok(()),
        _ if v.is_null() => Ok(()),
        other => Err(Error::Tokenizer(format!(
            "tokenizer.json: normalizer {} is not supported (only {}, and Sequences of them)",
            other.unwrap_or("without a type"),
            OK.join(", ")
        ))),
    }
}

fn tk_err(what: &str) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

impl HfBackend {
    pub(crate) fn load(data: &[u8]) -> Result<(HfBackend, TokenTable, FxHashMap<String, u32>)> {
        // Checked before the tokenizers crate sees it: it panics on some malformed files (a
        // syntax error or a bad escape inside "decoder" or "normalizer" hits an `expect`; in
        // wasm a panic kills the module). Both are parsed in full here; the rest is skipped.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            #[serde(default)]
            normalizer: Option<serde_json::Value>,
            #[serde(default)]
            decoder: Option<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(data)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not a valid JSON object: {e}")))?;
        if let Some(v) = &doc.normalizer {
            check_normalizer(v)?;
            let g = normalizer_growth(v);
            if g > MAX_NORMALIZER_GROWTH {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.json: the normalizer can grow text {g:.0}x (its Replace rules expand what \
                     they match, one after another); at most {MAX_NORMALIZER_GROWTH}x is accepted"
                )));
            }
        }
        let tk = tokenizers::Tokenizer::from_bytes(data).map_err(tk_err("tokenizer.json"))?;
        let decoder = byte_decoder();
        let added_tokens = tk.get_added_tokens_decoder();
        let mut entries: Vec<(u32, Vec<u8>)> = Vec::with_capacity(tk.get_vocab_size(true));
        for (token, id) in tk.get_model().get_vocab() {
            if added_tokens.contains_key(&id) {
                continue;
            }
            let mut bytes = Vec::with_capacity(token.len());
            for c in token.chars() {
                match decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => {
                        return Err(Error::Tokenizer(format!(
                            "tokenizer.json: token {id} {token:?} is not byte-level BPE \
                             (only byte-level vocabularies such as Qwen's are supported)"
                        )))
                    }
                }
            }
            entries.push((id, bytes));
        }
        let mut specials = FxHashMap::default();
        let mut added = FxHashSet::default();
        for (id, tok) in &added_tokens {
            entries.push((*id, tok.content.as_bytes().to_vec()));
            specials.insert(tok.content.clone(), *id);
            added.insert(*id);
        }
        if entries.is_empty() {
            return Err(Error::Tokenizer("tokenizer.json: empty vocabulary".into()));
        }
        let table = TokenTable::build(entries).map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        Ok((HfBackend { tk, added }, table, specials))
    }

    pub(crate) fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut pts = PreTokenizedString::from(text);
        if let Some(n) = self.tk.get_normalizer() {
            pts.normalize(|s| n.normalize(s)).map_err(tk_err("normalizer"))?;
        }
        if let Some(p) = self.tk.get_pre_tokenizer() {
            p.pre_tokenize(&mut pts).map_err(tk_err("pre-tokenizer"))?;
        }
        let model = self.tk.get_model();
        pts.tokenize(|s| model.tokenize(s.get())).map_err(tk_err("model"))?;
        let enc = pts.into_encoding(None, 0, OffsetType::None).map_err(tk_err("encoding"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub(crate) fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tk.encode_fast(text, false).map_err(tk_err("encode"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `s` is plain text; the model's vocabulary is keyed by its byte-level form.
    pub(crate) fn token_to_id(&self, s: &str) -> Option<u32> {
        let enc = byte_encoder();
        let key: String = s.bytes().map(|b| enc[b as usize]).collect();
        self.tk.get_model().token_to_id(&key)
    }

    pub(crate) fn is_added(&self, id: u32) -> bool {
        self.added.contains(&id)
    }
}

/// GPT-2's byte -> char map: printable bytes stand for themselves, the rest map to U+0100...
fn byte_encoder() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    map
}

fn byte_decoder() -> FxHashMap<char, u8> {
    byte_encoder().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect()
}
