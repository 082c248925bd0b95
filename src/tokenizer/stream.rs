//! Streaming detokenization: text out as tokens arrive, never splitting a UTF-8 character.

use super::Tokenizer;
use crate::error::Result;

/// Turns generated ids into text chunks. A byte-level token can end in the middle of a
/// multi-byte character (Chinese, emoji): those bytes are held back until the character is
/// complete. Invariant: the chunks of `push`...`finish` joined equal `decode(all ids)`.
#[derive(Debug, Clone)]
pub struct TextStream {
    tok: Tokenizer,
    /// Bytes not yet emitted: an incomplete UTF-8 sequence at most (< 4 bytes) between calls.
    pending: Vec<u8>,
}

impl TextStream {
    pub fn new(tok: &Tokenizer) -> Self {
        TextStream { tok: tok.clone(), pending: Vec::new() }
    }

    /// Adds one token; returns the text that is now complete, if any.
    /// An id outside the vocabulary is an error and leaves the stream unchanged.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        let bytes = self.tok.token_bytes(id)?;
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut pos = 0;
        loop {
            match std::str::from_utf8(&self.pending[pos..]) {
                Ok(s) => {
                    text.push_str(s);
                    pos = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // from_utf8 validated this prefix: the lossy call borrows it unchanged.
                    text.push_str(&String::from_utf8_lossy(&self.pending[pos..pos + valid]));
                    match e.error_len() {
                        // Invalid whatever follows: replaced, as the lossy decode of the
                        // whole sequence would do.
                        Some(n) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            pos += valid + n;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            pos += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..pos);
        Ok((!text.is_empty()).then_some(text))
    }

    /// Flushes what is held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(text)
    }

    /// Forgets held-back bytes, e.g. for a new reply.
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}
