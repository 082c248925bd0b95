//! Qwen v1 `qwen.tiktoken`: rank-based byte-level BPE, as tiktoken does it.
//!
//! The file holds `base64(token_bytes) rank` lines; a token's rank is its id and its merge
//! priority. Encoding: NFC-normalise, split into pieces with the Qwen regex, then per piece
//! repeatedly merge the adjacent pair whose concatenation has the lowest rank (ties: leftmost).

use super::TokenTable;
use crate::error::{Error, Result};
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// The Qwen pre-tokenizer regex (single digits; `\s+(?!\S)` needs a look-ahead).
#[cfg(test)]
pub(crate) const QWEN_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// [`QWEN_PATTERN`] without its look-ahead branch `\s+(?!\S)`, so that the (much faster)
/// `regex` crate runs it; [`Pieces`] restores the look-ahead's effect.
const QWEN_PATTERN_NO_LOOKAHEAD: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+";

/// First special id of Qwen v1 (`<|endoftext|>`), fixed by the reference tokenizer.
pub(crate) const SPECIAL_START: u32 = 151643;
/// `<|extra_0|>` .. `<|extra_204|>` follow `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
const N_EXTRAS: u32 = 205;

/// Pieces longer than this use the O(n log n) heap merge instead of tiktoken's O(n²) scan.
const HEAP_THRESHOLD: usize = 128;

pub(crate) struct TiktokenBpe {
    ranks: FxHashMap<Box<[u8]>, u32>,
    regex: regex::Regex,
    /// Longest special token, in bytes (bounds the special-token scan).
    max_special_len: usize,
}

/// The Qwen v1 special tokens with their ids.
pub(crate) fn v1_specials() -> Vec<(String, u32)> {
    let mut v = vec![
        (super::ENDOFTEXT.to_string(), SPECIAL_START),
        (super::IM_START.to_string(), SPECIAL_START + 1),
        (super::IM_END.to_string(), SPECIAL_START + 2),
    ];
    for i in 0..N_EXTRAS {
        v.push((format!("<|extra_{i}|>"), SPECIAL_START + 3 + i));
    }
    v
}

impl TiktokenBpe {
    /// Parses a `qwen.tiktoken` file; returns the encoder, the id -> bytes table (specials
    /// included) and the specials by name.
    pub(crate) fn load(data: &[u8]) -> Result<(TiktokenBpe, TokenTable, FxHashMap<String, u32>)> {
        let bad = |line: usize, what: &str| Error::Tokenizer(format!("qwen.tiktoken line {line}: {what}"));
        let mut ranks: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        ranks.reserve(152_000);
        let mut entries: Vec<(u32, Vec<u8>)> = Vec::with_capacity(152_000);
        for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
            let (Some(tok), Some(rank), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad(line_no, "expected `base64 rank`"));
            };
            let bytes = base64_decode(tok).ok_or_else(|| bad(line_no, "bad base64"))?;
            if bytes.is_empty() {
                return Err(bad(line_no, "empty token"));
            }
            let rank: u32 =
                std::str::from_utf8(rank).ok().and_then(|r| r.parse().ok()).ok_or_else(|| bad(line_no, "bad rank"))?;
            if rank >= SPECIAL_START {
                return Err(bad(
                    line_no,
                    &format!("rank {rank} collides with the special tokens at {SPECIAL_START}.."),
                ));
            }
            if ranks.insert(bytes.clone().into_boxed_slice(), rank).is_some() {
                return Err(bad(line_no, "token appears twice"));
            }
            entries.push((rank, bytes));
        }
        if entries.is_empty() {
            return Err(Error::Tokenizer("qwen.tiktoken: no tokens (empty or not a tiktoken file)".into()));
        }
        if let Some(b) = (0..=255u8).find(|b| !ranks.contains_key(&[*b][..])) {
            return Err(Error::Tokenizer(format!(
                "qwen.tiktoken: byte {b:#04x} has no token; a byte-level BPE needs all 256"
            )));
        }
        let specials = v1_specials();
        let max_special_len = specials.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        entries.extend(specials.iter().map(|(s, id)| (*id, s.as_bytes().to_vec())));
        let table = TokenTable::build(entries).map_err(|e| Error::Tokenizer(format!("qwen.tiktoken: {e}")))?;
        let regex = regex::Regex::new(QWEN_PATTERN_NO_LOOKAHEAD)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
        let bpe = TiktokenBpe { ranks, regex, max_special_len };
        Ok((bpe, table, specials.into_iter().collect()))
    }

    pub(crate) fn rank_of(&self, bytes: &[u8]) -> Option<u32> {
        self.ranks.get(bytes).copied()
    }

    /// Ordinary text: NFC, regex pieces, BPE. No special tokens.
    pub(crate) fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let text = nfc(text);
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_normalized(&text, &mut out)?;
        Ok(out)
    }

    /// Text with special tokens recognised. NFC applies to the whole text first, as in the
    /// reference (`unicodedata.normalize("NFC", text)` before tiktoken's encode).
    pub(crate) fn encode_with_specials(&self, text: &str, specials: &FxHashMap<String, u32>) -> Result<Vec<u32>> {
        let text = nfc(text);
        let text: &str = &text;
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut start = 0; // start of the not yet encoded text
        let mut search = 0;
        while let Some(p) = text[search..].find("<|").map(|p| p + search) {
            // A special is `<|...|>`, at most max_special_len bytes long.
            let window_end = floor_char_boundary(text, (p + self.max_special_len).min(text.len()));
            let found = text[p + 2..window_end]
                .find("|>")
                .and_then(|q| specials.get(&text[p..p + 2 + q + 2]).map(|id| (*id, p + 2 + q + 2)));
            match found {
                Some((id, end)) => {
                    self.encode_normalized(&text[start..p], &mut out)?;
                    out.push(id);
                    start = end;
                    search = end;
                }
                None => search = p + 1,
            }
        }
        self.encode_normalized(&text[start..], &mut out)?;
        Ok(out)
    }

    /// Encodes already-normalised ordinary text, appending to `out`.
    fn encode_normalized(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for piece in Pieces::new(&self.regex, text) {
            let piece = piece.as_bytes();
            match self.ranks.get(piece) {
                Some(&r) => out.push(r),
                None => self.bpe(piece, out)?,
            }
        }
        Ok(())
    }

    fn bpe(&self, piece: &[u8], out: &mut Vec<u32>) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        let bounds = if piece.len() > HEAP_THRESHOLD && piece.len() < u32::MAX as usize {
            self.merge_heap(piece)
        } else {
            self.merge_scan(piece)
        };
        for w in bounds.windows(2) {
            let part = &piece[w[0]..w[1]];
            let r = self
                .ranks
                .get(part)
                .ok_or_else(|| Error::Tokenizer(format!("BPE produced a part with no rank: {part:?}")))?;
            out.push(*r);
        }
        Ok(())
    }

    fn pair_rank(&self, bytes: &[u8]) -> u32 {
        self.ranks.get(bytes).copied().unwrap_or(u32::MAX)
    }

    /// tiktoken's `_byte_pair_merge`: returns part boundaries (first 0, last `piece.len()`).
    /// `parts[i].1` is the rank of merging part i with part i+1.
    fn merge_scan(&self, piece: &[u8]) -> Vec<usize> {
        let n = piece.len();
        let mut parts: Vec<(usize, u32)> = Vec::with_capacity(n + 1);
        let mut min = (u32::MAX, usize::MAX);
        for i in 0..n.saturating_sub(1) {
            let r = self.pair_rank(&piece[i..i + 2]);
            if r < min.0 {
                min = (r, i);
            }
            parts.push((i, r));
        }
        parts.push((n - 1, u32::MAX));
        parts.push((n, u32::MAX));

        let rank_after = |parts: &[(usize, u32)], i: usize| -> u32 {
            if i + 3 < parts.len() {
                self.pair_rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                u32::MAX
            }
        };
        while min.0 != u32::MAX {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = rank_after(&parts, i - 1);
            }
            parts[i].1 = rank_after(&parts, i);
            parts.remove(i + 1);
            min = (u32::MAX, usize::MAX);
            for (j, &(_, r)) in parts[..parts.len() - 1].iter().enumerate() {
                if r < min.0 {
                    min = (r, j);
                }
            }
        }
        parts.into_iter().map(|(start, _)| start).collect()
    }

    /// Same result as [`Self::merge_scan`] (lowest rank first, ties leftmost) with a heap of
    /// candidate pairs and lazy invalidation; for long pieces.
    fn merge_heap(&self, piece: &[u8]) -> Vec<usize> {
        const NONE: usize = usize::MAX;
        let n = piece.len();
        // Parts are identified by their start; `end[s]` is the end of the part starting at s.
        let mut end: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        // (rank, left start, right end): merging the part at `left` with its right neighbour.
        // Positions as u32 keep the entries small (pieces over 4 GiB are not a concern).
        let mut heap: BinaryHeap<Reverse<(u32, u32, u32)>> = BinaryHeap::with_capacity(n);
        let push = |heap: &mut BinaryHeap<_>, r: u32, s: usize, e: usize| {
            if r != u32::MAX {
                heap.push(Reverse((r, s as u32, e as u32)));
            }
        };
        for s in 0..n - 1 {
            push(&mut heap, self.pair_rank(&piece[s..s + 2]), s, s + 2);
        }
        while let Some(Reverse((_, s, pair_end))) = heap.pop() {
            let (s, pair_end) = (s as usize, pair_end as usize);
            if !alive[s] {
                continue;
            }
            let mid = end[s];
            if mid >= n || end[mid] != pair_end {
                continue; // stale: a neighbour changed since this pair was pushed
            }
            alive[mid] = false;
            end[s] = pair_end;
            if pair_end < n {
                prev[pair_end] = s;
            }
            let p = prev[s];
            if p != NONE {
                push(&mut heap, self.pair_rank(&piece[p..pair_end]), p, pair_end);
            }
            if pair_end < n {
                let e2 = end[pair_end];
                push(&mut heap, self.pair_rank(&piece[s..e2]), s, e2);
            }
        }
        let mut bounds: Vec<usize> = (0..n).filter(|&s| alive[s]).collect();
        bounds.push(n);
        bounds
    }
}

/// The pieces of the Qwen regex, found with [`QWEN_PATTERN_NO_LOOKAHEAD`].
///
/// Why this equals the full pattern: the first five branches are the same and tried in the same
/// order. A match made of whitespace only and without `\r`/`\n` can only come from the final
/// `\s+`, which (being greedy) took a maximal whitespace run. In the full pattern
/// `\s+(?!\S)` is tried first: at the end of the text it takes the whole run; before a
/// non-space it takes the run minus its last character (the following character must not be
/// `\S`), and fails for a one-character run, which `\s+` then takes whole. So: a run of two
/// or more characters not at the end gives back its last character to the next piece.
struct Pieces<'r, 't> {
    regex: &'r regex::Regex,
    text: &'t str,
    pos: usize,
}

impl<'r, 't> Pieces<'r, 't> {
    fn new(regex: &'r regex::Regex, text: &'t str) -> Self {
        Pieces { regex, text, pos: 0 }
    }
}

impl<'t> Iterator for Pieces<'_, 't> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let Some(m) = self.regex.find_at(self.text, self.pos) else {
            // The pattern matches every character, so this does not happen; keep the text.
            let rest = &self.text[self.pos..];
            self.pos = self.text.len();
            return Some(rest);
        };
        if m.start() > self.pos {
            let gap = &self.text[self.pos..m.start()]; // likewise
            self.pos = m.start();
            return Some(gap);
        }
        let (start, mut end) = (m.start(), m.end());
        let piece = m.as_str();
        if end < self.text.len() && piece.chars().all(|c| c.is_whitespace() && c != '\r' && c != '\n') {
            if let Some((last, _)) = piece.char_indices().next_back() {
                if last > 0 {
                    end = start + last;
                }
            }
        }
        if end <= self.pos {
            return None; // cannot happen (matches are never empty); guards against a loop
        }
        self.pos = end;
        Some(&self.text[start..end])
    }
}

fn nfc(text: &str) -> Cow<'_, str> {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfc().collect()),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Standard base64 (with or without `=` padding). `None` on any bad character.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1; // 4 chars -> 3 bytes, 3 -> 2, 2 -> 1
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode(b"IQ==").unwrap(), b"!");
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVs").unwrap(), b"hel");
        assert!(base64_decode(b"a").is_none());
        assert!(base64_decode(b"a*==").is_none());
    }

    fn fancy_pieces(text: &str) -> Vec<&str> {
        static RE: std::sync::OnceLock<fancy_regex::Regex> = std::sync::OnceLock::new();
        let re = RE.get_or_init(|| fancy_regex::Regex::new(QWEN_PATTERN).unwrap());
        re.find_iter(text).map(|m| m.unwrap().as_str()).collect()
    }

    fn our_pieces(text: &str) -> Vec<&str> {
        static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let re = RE.get_or_init(|| regex::Regex::new(QWEN_PATTERN_NO_LOOKAHEAD).unwrap());
        Pieces::new(re, text).collect()
    }

    /// The look-ahead emulation splits exactly like the full pattern under fancy-regex.
    #[test]
    fn pieces_equal_the_lookahead_pattern() {
        let fixed = [
            "",
            " ",
            "  ",
            "a  b",
            "a \t b",
            "  x",
            "x  ",
            " \n ",
            "\n  x",
            "  \n\n  x",
            "\r\n\r\n",
            "a\u{3000}\u{3000}b",
            "\u{a0}\u{a0}1",
            "  123",
            "  !!",
            " 'll",
            "I'LL  DON'T",
            "\t\tx\t",
            "end   ",
            "x\u{2028}\u{2028}y",
            "  \u{301}a",
            "  '  s",
        ];
        for t in fixed {
            assert_eq!(our_pieces(t), fancy_pieces(t), "{t:?}");
        }
        let alphabet: Vec<char> = " \t\n\r\u{a0}\u{3000}\u{2028}\u{b}\u{c}ab Z1'sl!.,中😀\u{301}-_".chars().collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut t = String::new();
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (state >> 59) as usize;
            for _ in 0..len {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                t.push(alphabet[(state >> 33) as usize % alphabet.len()]);
            }
            assert_eq!(our_pieces(&t), fancy_pieces(&t), "{t:?}");
        }
    }
}
