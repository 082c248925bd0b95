//! The decode queue: where the next pass writes, which token passes are in flight, and what
//! the next queued pass reads as its input token. Pure bookkeeping (no GPU), so every state
//! change is in one place and its invariants can be stated:
//!
//! 1. `end` is the position the next pass writes first; `pos() = end - in_flight.len()` is
//!    the number of tokens whose pass has been read (what callers see as the cache's length).
//! 2. `in_flight` holds the readback slots of submitted, unread token passes, oldest first,
//!    at most [`MAX_IN_FLIGHT`]; slots alternate, so a slot is never reused while queued.
//! 3. `input` says where the token of position `end` is: on the GPU (the last submitted token
//!    pass chose it into `next`), on the host (the last read pass chose it, and the passes
//!    after it were dropped), or unknown. Dropping queued passes never leaves `OnGpu`: the
//!    GPU's `next` then holds the last *dropped* pass's choice, which belongs nowhere.
//! 4. Each in-flight pass remembers whether it took a sampling step; dropping it gives the step
//!    back, so a drawn sequence does not depend on how far ahead passes were queued.

use crate::error::{Error, Result};
use std::collections::VecDeque;

/// Most token passes submitted and not yet read.
pub const MAX_IN_FLIGHT: usize = 2;

/// Where the input token of the next queued pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextInput {
    /// Not known: the last pass was not a token pass, or the cache was rewound below its end.
    Unknown,
    /// In the GPU's `next` buffer (copied into the token buffer by the pass itself).
    OnGpu,
    /// Known on the host (fed like a prompt token).
    Host(u32),
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    slot: usize,
    sampled: bool,
}

#[derive(Debug, Clone)]
pub struct DecodeQueue {
    end: usize,
    in_flight: VecDeque<InFlight>,
    next_slot: usize,
    input: NextInput,
    /// The last token read back and the position it is the input of.
    last_read: Option<(usize, u32)>,
    sample_step: u32,
}

impl Default for DecodeQueue {
    fn default() -> Self {
        DecodeQueue {
            end: 0,
            in_flight: VecDeque::new(),
            next_slot: 0,
            input: NextInput::Unknown,
            last_read: None,
            sample_step: 0,
        }
    }
}

impl DecodeQueue {
    /// Tokens in the cache whose pass has been read (queued passes not counted).
    pub fn pos(&self) -> usize {
        self.end - self.in_flight.len()
    }

    /// The position the next pass writes first (queued passes counted).
    pub fn end(&self) -> usize {
        self.end
    }

    /// Where the next queued pass's input token is.
    pub fn input(&self) -> NextInput {
        self.input
    }

    /// Submitted token passes not yet read.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The sampling step of the next sampled pass (counted when it is submitted).
    pub fn sample_step(&self) -> u32 {
        self.sample_step
    }

    /// Drop the passes not yet read: their positions are free again and their sampling
    /// steps are given back. The input of position `pos()` is then the last read token, if
    /// that was read from the pass just before the dropped ones.
    pub fn discard(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        for p in self.in_flight.drain(..) {
            self.end -= 1;
            if p.sampled {
                self.sample_step = self.sample_step.wrapping_sub(1);
            }
        }
        self.input = match self.last_read {
            Some((at, t)) if at == self.end => NextInput::Host(t),
            _ => NextInput::Unknown,
        };
    }

    /// Keep the first `n` read tokens (see [`crate::Qwen::rewind`]).
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        self.discard();
        if n > self.end {
            return Err(Error::Request(format!("cannot rewind to {n} tokens: the cache holds {}", self.end)));
        }
        if n < self.end {
            self.end = n;
            self.input = NextInput::Unknown;
            self.last_read = None;
        }
        Ok(())
    }

    /// Empty the cache.
    pub fn reset(&mut self) {
        self.discard();
        self.end = 0;
        self.input = NextInput::Unknown;
        self.last_read = None;
    }

    /// Start a new sampled sequence at step 0 (queued passes are dropped first).
    pub fn restart_sampling(&mut self) {
        self.discard();
        self.sample_step = 0;
    }

    /// Whether another token pass may be queued without a prompt, and what it reads.
    pub fn can_queue(&self, context: usize) -> Result<NextInput> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return Err(Error::Request(format!("at most {MAX_IN_FLIGHT} passes may be queued unread")));
        }
        if self.input == NextInput::Unknown {
            return Err(Error::Request(
                "queue_next needs the previous pass to be a token pass (its token is the input)".into(),
            ));
        }
        if self.end >= context {
            return Err(Error::ContextFull(format!("the context of {context} tokens is full")));
        }
        Ok(self.input)
    }

    /// The readback slot the next token pass will write.
    pub fn next_slot(&self) -> usize {
        self.next_slot
    }

    /// A pass over `n` tokens was submitted: a token pass (`Some(sampled)`) is now in flight
    /// in [`Self::next_slot`] and its choice is the next input (a sampled one used step
    /// [`Self::sample_step`]); any other pass leaves the next input unknown.
    pub fn submitted(&mut self, n: usize, token_pass: Option<bool>) {
        self.end += n;
        match token_pass {
            Some(sampled) => {
                if sampled {
                    self.sample_step = self.sample_step.wrapping_add(1);
                }
                self.in_flight.push_back(InFlight { slot: self.next_slot, sampled });
                self.next_slot = (self.next_slot + 1) % MAX_IN_FLIGHT;
                self.input = NextInput::OnGpu;
            }
            None => self.input = NextInput::Unknown,
        }
    }

    /// The slot of the oldest pass in flight, to read.
    pub fn oldest(&self) -> Result<usize> {
        self.in_flight.front().map(|p| p.slot).ok_or_else(|| Error::Request("no pass is queued".into()))
    }

    /// The oldest pass was read: it chose `token`.
    pub fn read(&mut self, token: u32) {
        if self.in_flight.pop_front().is_some() {
            self.last_read = Some((self.pos(), token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_queued_passes_never_leaves_the_gpu_input() {
        let mut q = DecodeQueue::default();
        q.submitted(5, Some(false)); // prefill + first token pass
        q.read(42);
        assert_eq!((q.pos(), q.input()), (5, NextInput::OnGpu));
        q.submitted(1, Some(false)); // queued: reads 42 on the GPU
        assert_eq!((q.pos(), q.end()), (5, 6));
        q.discard();
        assert_eq!((q.pos(), q.end(), q.input()), (5, 5, NextInput::Host(42)));
        // Two queued, the first read, the second dropped: the input is the first's token.
        q.submitted(1, Some(false));
        q.submitted(1, Some(false));
        assert_eq!(q.in_flight(), 2);
        assert!(q.can_queue(100).is_err());
        q.read(7);
        q.discard();
        assert_eq!((q.pos(), q.input()), (6, NextInput::Host(7)));
        // Rewinding below the end forgets it; to the end keeps it.
        q.rewind(6).unwrap();
        assert_eq!(q.input(), NextInput::Host(7));
        q.rewind(3).unwrap();
        assert_eq!((q.pos(), q.input()), (3, NextInput::Unknown));
        assert!(q.can_queue(100).is_err());
        assert!(q.rewind(4).is_err());
    }

    #[test]
    fn dropped_passes_give_their_sampling_steps_back() {
        let mut q = DecodeQueue::default();
        q.submitted(3, Some(true));
        q.read(1);
        q.submitted(1, Some(true));
        q.submitted(1, Some(true));
        assert_eq!(q.sample_step(), 3);
        q.read(2);
        q.discard();
        assert_eq!(q.sample_step(), 2);
        q.restart_sampling();
        assert_eq!(q.sample_step(), 0);
    }

    #[test]
    fn slots_alternate_and_are_read_in_order() {
        let mut q = DecodeQueue::default();
        q.submitted(2, Some(false));
        q.submitted(1, Some(false));
        assert_eq!(q.oldest().unwrap(), 0);
        q.read(9);
        assert_eq!(q.oldest().unwrap(), 1);
        q.read(8);
        assert!(q.oldest().is_err());
        q.submitted(1, None);
        assert_eq!((q.pos(), q.input()), (4, NextInput::Unknown));
    }
}
