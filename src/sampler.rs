//! Choosing the next token from logits: repetition penalty, frequency and presence
//! penalties, logit bias, temperature, top-k, top-p, then a seeded draw so runs repeat.
//!
//! One definition, two implementations: [`Sampler`] here on the CPU, and `shaders/sample.wgsl`
//! on the GPU (what generation uses: the token is chosen where the logits are, and only its
//! 4-byte id is read back). They give the same token for the same logits, seed and step, in
//! this order:
//!
//! - penalty `r` on every token of the history (prompt and output): `l * (1/r)` if `l > 0`,
//!   else `l * r` (Hugging Face / CTRL);
//! - frequency and presence penalties (OpenAI's definition), with `c` the number of times the
//!   token was *generated* so far in this generation (the prompt does not count, as in vLLM):
//!   `l - (c * frequency_penalty + presence_penalty)` when `c > 0`, in f32 (a GPU may fuse the
//!   multiply-add: one rounding fewer, the last bit of a penalised logit);
//! - logit bias: `l + bias` for each token of `logit_bias` (f32 add; +100 all but forces a token,
//!   -100 all but forbids one, as OpenAI describes: it is an addition, not a mask);
//! - temperature 0 is greedy: the first index of the largest logit (with any of the above it
//!   still goes through the sampling kernel: greedy is the argmax of the adjusted logits);
//! - `s = l * (1/temperature)` in f32;
//! - top-k keeps `s >=` the k-th largest `s` (values tied with it are kept too, as HF does);
//! - top-p keeps, of those, `s >= v` for the largest `v` whose kept mass
//!   `sum(exp(s_j - max s), s_j >= v)` reaches `top_p` times the whole kept mass;
//! - the token is the first index of the largest `s_i + g_i` among the kept, where
//!   `g_i = -log(-log(u_i))` and `u_i` is a uniform hashed from (seed, step, i): the
//!   Gumbel-max trick, which draws `i` with probability `exp(s_i) / sum(exp(s_j))`.
//!
//! `step` counts the draws of one generation (0, 1, ...).
//!
//! Log-probabilities ([`TokenLogprobs`], [`logprobs`]) are those of the model itself: the
//! log-softmax of the raw logits, before any penalty, bias or temperature, over the ids below
//! the token limit (what vLLM returns by default and OpenAI's `logprobs` means). NaN logits
//! take no part; `-inf` ones have probability 0 and are never listed among the top.

use crate::error::{Error, Result};

/// Most entries of [`SamplingParams::logit_bias`] (OpenAI takes up to 300 in practice; the GPU
/// applies them from a dense table, so the cap only bounds the request's size).
pub const MAX_LOGIT_BIAS: usize = 1024;

/// Most top alternatives a token's [`TokenLogprobs`] may list (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 = off.
    pub top_p: f32,
    /// > 1 discourages tokens already in the prompt or output (HF/CTRL style); 1 = off.
    pub repetition_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated so far (OpenAI's
    /// `frequency_penalty`, in [-2, 2]); 0 = off. Prompt tokens do not count.
    pub frequency_penalty: f32,
    /// Subtracted once from the logit of every token generated at least once so far (OpenAI's
    /// `presence_penalty`, in [-2, 2]); 0 = off.
    pub presence_penalty: f32,
    /// `(token id, bias)`: the bias (in [-100, 100]) is added to that token's logit after the
    /// penalties (OpenAI's `logit_bias`). At most [`MAX_LOGIT_BIAS`] entries, each id once;
    /// ids are checked against the vocabulary by [`SamplingParams::check_vocab`] (which
    /// [`crate::Qwen::set_sampling`] calls).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Refuse values outside each field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Request(m));
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 || (t != 0.0 && !(1.0 / t).is_finite()) {
            return bad(format!("temperature must be 0 (greedy) or a finite number > 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite()
            || self.repetition_penalty <= 0.0
            || !(1.0 / self.repetition_penalty).is_finite()
        {
            return bad(format!("repetition_penalty must be a finite number > 0, got {}", self.repetition_penalty));
        }
        if self.top_k > u32::MAX as usize {
            return bad(format!("top_k must be at most {}, got {}", u32::MAX, self.top_k));
        }
        for (name, v) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return bad(format!(
                "logit_bias has {} entries, at most {MAX_LOGIT_BIAS} are allowed",
                self.logit_bias.len()
            ));
        }
        for &(id, b) in &self.logit_bias {
            if !(-100.0..=100.0).contains(&b) {
                return bad(format!("logit_bias of token {id} must be in [-100, 100], got {b}"));
            }
        }
        let mut ids: Vec<u32> = self.logit_bias.iter().map(|e| e.0).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("logit_bias names token {} twice", w[0]));
        }
        Ok(())
    }

    /// [`SamplingParams::validate`], and every `logit_bias` id below `vocab` (the model's
    /// vocabulary: the number of logits).
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        self.validate()?;
        if let Some(&(id, _)) = self.logit_bias.iter().find(|e| e.0 as usize >= vocab) {
            return Err(Error::Request(format!("logit_bias token id {id} is out of range (vocab_size {vocab})")));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether the frequency or presence penalty is on (the GPU then counts generated tokens).
    pub fn counts_tokens(&self) -> bool {
        self.frequency_penalty != 0.0 || self.presence_penalty != 0.0
    }

    /// Whether the choice is the plain argmax of the raw logits: greedy with no penalty and
    /// no bias (the GPU then runs its cheaper argmax kernel instead of the sampling one).
    pub fn is_plain_argmax(&self) -> bool {
        self.is_greedy() && self.repetition_penalty == 1.0 && !self.counts_tokens() && self.logit_bias.is_empty()
    }
}

/// The f32 factors both implementations multiply by.
#[derive(Debug, Clone, Copy)]
pub struct KernelTerms {
    /// 0 when greedy.
    pub inv_temperature: f32,
    pub inv_penalty: f32,
}

impl KernelTerms {
    pub fn of(p: &SamplingParams) -> KernelTerms {
        KernelTerms {
            inv_temperature: if p.temperature == 0.0 { 0.0 } else { 1.0 / p.temperature },
            inv_penalty: 1.0 / p.repetition_penalty,
        }
    }
}

/// The PCG hash (Jarzynski and Olano), as the kernel computes it.
fn pcg(x: u32) -> u32 {
    let s = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277_803_737);
    (w >> 22) ^ w
}

/// The uniform in (0, 1) of token `i` at `step` (exactly the kernel's f32 value).
pub fn uniform(seed: u64, step: u32, i: u32) -> f64 {
    let base = pcg(step ^ pcg(seed as u32 ^ pcg((seed >> 32) as u32)));
    ((pcg(pcg(i) ^ base) >> 9) as f64 + 0.5) / 8_388_608.0
}

/// Apply the repetition penalty to `logits` in place, once per distinct token of `history`.
pub fn apply_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let inv = 1.0 / penalty;
    let mut seen = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for &t in &seen {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l * inv } else { *l * penalty };
        }
    }
}

/// Apply the frequency and presence penalties to `logits` in place: token `j` generated
/// `c_j > 0` times in `generated` gets `l_j - (c_j * frequency + presence)` (f32, as the
/// kernel computes it). Ids past `logits` are ignored.
pub fn apply_frequency_presence(logits: &mut [f32], generated: &[u32], frequency: f32, presence: f32) {
    if frequency == 0.0 && presence == 0.0 {
        return;
    }
    let mut ids = generated.to_vec();
    ids.sort_unstable();
    for run in ids.chunk_by(|a, b| a == b) {
        if let Some(l) = logits.get_mut(run[0] as usize) {
            *l -= run.len() as f32 * frequency + presence;
        }
    }
}

/// Add each `(id, bias)` of `bias` to `logits[id]` (ids past `logits` are ignored: the model
/// checks them against its vocabulary, see [`SamplingParams::check_vocab`]).
pub fn apply_logit_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
}

/// The CPU implementation of the sampling definition (see the module docs).
pub struct Sampler {
    params: SamplingParams,
    step: u32,
    /// The tokens this sampler returned (the frequency and presence penalties count them).
    generated: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, step: 0, generated: Vec::new() })
    }

    /// The step the next draw uses.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Pick a token. `history` is every token so far (prompt and output), for the repetition
    /// penalty; the frequency and presence penalties count the tokens this sampler returned.
    /// `logits` is modified in place (penalties and bias).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        let step = self.step;
        self.step = self.step.wrapping_add(1);
        let t = draw(&self.params, logits, history, &self.generated, step)?;
        self.generated.push(t);
        Ok(t)
    }
}

/// The token the sampling definition picks at `step` (see the module docs): what
/// [`Sampler::sample`] returns for its `step`-th draw. `history` (prompt and output) is what
/// the repetition penalty looks at, `generated` (the output so far, with repeats) what the
/// frequency and presence penalties count. `logits` gets the penalties and bias in place.
pub fn draw(p: &SamplingParams, logits: &mut [f32], history: &[u32], generated: &[u32], step: u32) -> Result<u32> {
    if logits.is_empty() {
        return Err(Error::Request("no logits to sample from".into()));
    }
    apply_penalty(logits, history, p.repetition_penalty);
    apply_frequency_presence(logits, generated, p.frequency_penalty, p.presence_penalty);
    apply_logit_bias(logits, &p.logit_bias);
    if p.is_greedy() {
        return argmax(logits);
    }
    let inv_t = KernelTerms::of(p).inv_temperature;
    let s: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    let mut kept: Vec<f32> = s.iter().copied().filter(|v| !v.is_nan()).collect();
    if kept.is_empty() {
        return Err(Error::Gpu("all logits are NaN".into()));
    }
    kept.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut lo = *kept.last().expect("not empty");
    if p.top_k > 0 && p.top_k < kept.len() {
        lo = kept[p.top_k - 1];
        let n = kept.partition_point(|v| !v.total_cmp(&lo).is_lt());
        kept.truncate(n);
    }
    if p.top_p < 1.0 {
        let smax = kept[0] as f64;
        let mass = |v: f32| (v as f64 - smax).exp();
        let target = p.top_p as f64 * kept.iter().map(|&v| mass(v)).sum::<f64>();
        let mut acc = 0.0;
        for (j, &v) in kept.iter().enumerate() {
            acc += mass(v);
            // Ties count as one value: decide after the last of them.
            if acc >= target && kept.get(j + 1).map(|x| x.to_bits()) != Some(v.to_bits()) {
                lo = v;
                break;
            }
        }
    }
    let mut best: Option<(u32, f64)> = None;
    let floor = -3.402823e38f32 as f64; // the kernel's starting value
    for (i, &v) in s.iter().enumerate() {
        if v.is_nan() || v.total_cmp(&lo).is_lt() {
            continue;
        }
        // -log(u) from w = 1 - u (exact), as the kernel does near 1.
        let w = 1.0 - uniform(p.seed, step, i as u32);
        let score = v as f64 - (-(-w).ln_1p()).ln();
        if score > best.map_or(floor, |b| b.1) || (best.is_none() && score == floor) {
            best = Some((i as u32, score));
        }
    }
    best.map(|b| b.0).ok_or_else(|| Error::Gpu("no finite logit to sample from".into()))
}

/// Index of the largest logit (first on ties), ignoring NaN.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32).ok_or_else(|| Error::Gpu("all logits are NaN".into()))
}

/// The log-probabilities of one generated token (see the module docs for the definition:
/// the model's own log-softmax, before penalties, bias and temperature).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token chosen.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens (at most the number asked for), by log-probability descending
    /// and id ascending among ties; tokens of probability 0 (`-inf` logits) are left out.
    pub top: Vec<(u32, f32)>,
}

/// Whether `a` (a logit, with its id) ranks before `b`: larger, or as large with a smaller id.
fn ranks_before(a: (u32, f32), b: (u32, f32)) -> bool {
    a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
}

/// The log-probability of a logit `l` given the max `m` of the logits and `s = sum(exp(l_j - m))`
/// (in f64: the GPU sends back `m`, `s` and the raw logits, and this finishes the sum).
pub fn logprob_of(l: f32, m: f32, s: f64) -> f32 {
    if l.is_nan() || s <= 0.0 || !s.is_finite() {
        return f32::NAN;
    }
    // An infinite maximum: only the logits equal to it have mass.
    let d = if l == m { 0.0 } else { l as f64 - m as f64 };
    (d - s.ln()) as f32
}

/// The CPU definition of [`TokenLogprobs`] for `token` chosen from `logits` (the ids below
/// the token limit), with the `top` most likely tokens (at most [`MAX_TOP_LOGPROBS`]):
/// log-softmax in f64 over the logits that are not NaN.
pub fn logprobs(logits: &[f32], token: u32, top: usize) -> Result<TokenLogprobs> {
    if top > MAX_TOP_LOGPROBS {
        return Err(Error::Request(format!("top logprobs must be at most {MAX_TOP_LOGPROBS}, got {top}")));
    }
    let chosen = *logits
        .get(token as usize)
        .ok_or_else(|| Error::Request(format!("token {token} is past the {} logits", logits.len())))?;
    let m = logits.iter().copied().filter(|l| !l.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = logits
        .iter()
        .filter(|l| !l.is_nan() && **l != f32::NEG_INFINITY)
        .map(|&l| if l == m { 1.0 } else { (l as f64 - m as f64).exp() })
        .sum();
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    for (i, &l) in logits.iter().enumerate() {
        if top == 0 || l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        let e = (i as u32, l);
        if best.len() < top || ranks_before(e, best[top - 1]) {
            let at = best.partition_point(|&b| ranks_before(b, e));
            best.insert(at, e);
            best.truncate(top);
        }
    }
    Ok(TokenLogprobs {
        token,
        logprob: logprob_of(chosen, m, s),
        top: best.into_iter().map(|(i, l)| (i, logprob_of(l, m, s))).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, seed: 7, ..Default::default() }
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, f32::NAN], &[]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(1.5, 1, 1.0)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.1, 2.0, 1.9, -1.0], &[]).unwrap(), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two only.
        let mut s = Sampler::new(params(1.0, 0, 0.8)).unwrap();
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[s.sample(&mut logits.clone(), &[]).unwrap() as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        let frac = counts[0] as f64 / 4000.0;
        assert!((frac - 0.731).abs() < 0.03, "{counts:?}"); // e^3 / (e^3 + e^2)
    }

    #[test]
    fn sampling_follows_softmax_and_seed_repeats() {
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params(1.0, 0, 1.0) }).unwrap();
            (0..2000).map(|_| s.sample(&mut [0.0, 1.0f32.ln() + 0.0, 2.0f32.ln()], &[]).unwrap()).collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let frac2 = a.iter().filter(|&&t| t == 2).count() as f64 / a.len() as f64;
        assert!((frac2 - 0.5).abs() < 0.04, "{frac2}"); // weights 1:1:2
    }

    #[test]
    fn repetition_penalty_is_hf_style() {
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() }).unwrap();
        // token 0 (logit 3, seen) drops to 1.5 < 2; token 2 (logit -1, seen) to -2.
        let mut l = [3.0f32, 2.0, -1.0];
        assert_eq!(s.sample(&mut l, &[0, 2, 0]).unwrap(), 1);
        assert_eq!(l, [1.5, 2.0, -2.0]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { temperature: f32::NAN, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { top_p: 1.5, ..Default::default() },
            SamplingParams { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(matches!(Sampler::new(p), Err(Error::Request(_))));
        }
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let d = SamplingParams::default;
        let cases = [
            (SamplingParams { frequency_penalty: 2.5, ..d() }, "frequency_penalty"),
            (SamplingParams { frequency_penalty: f32::NAN, ..d() }, "frequency_penalty"),
            (SamplingParams { presence_penalty: -2.01, ..d() }, "presence_penalty"),
            (SamplingParams { presence_penalty: f32::INFINITY, ..d() }, "presence_penalty"),
            (SamplingParams { logit_bias: vec![(3, 100.5)], ..d() }, "logit_bias"),
            (SamplingParams { logit_bias: vec![(3, f32::NAN)], ..d() }, "logit_bias"),
            (SamplingParams { logit_bias: vec![(3, 1.0), (4, 2.0), (3, -1.0)], ..d() }, "logit_bias"),
            (
                SamplingParams { logit_bias: (0..MAX_LOGIT_BIAS as u32 + 1).map(|i| (i, 1.0)).collect(), ..d() },
                "logit_bias",
            ),
            (SamplingParams { temperature: -1.0, ..d() }, "temperature"),
            (SamplingParams { top_p: 0.0, ..d() }, "top_p"),
            (SamplingParams { repetition_penalty: f32::NAN, ..d() }, "repetition_penalty"),
        ];
        for (p, field) in cases {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{p:?}: {e}");
        }
        // The edges are allowed; an id past the vocabulary is refused where it is known.
        let ok = SamplingParams {
            frequency_penalty: -2.0,
            presence_penalty: 2.0,
            logit_bias: (0..MAX_LOGIT_BIAS as u32).map(|i| (i, if i % 2 == 0 { 100.0 } else { -100.0 })).collect(),
            ..d()
        };
        ok.validate().unwrap();
        ok.check_vocab(MAX_LOGIT_BIAS).unwrap();
        let e = ok.check_vocab(MAX_LOGIT_BIAS - 1).unwrap_err().to_string();
        assert!(e.contains("logit_bias") && e.contains("1023"), "{e}");
    }

    #[test]
    fn frequency_presence_and_bias_follow_openai() {
        // Token 0 generated twice, token 2 once; the prompt (history) does not count.
        let p = SamplingParams { frequency_penalty: 0.5, presence_penalty: 0.25, ..Default::default() };
        let mut l = [3.0f32, 2.0, 1.0, 0.5];
        assert_eq!(draw(&p, &mut l, &[1, 1, 1, 0, 2, 0], &[0, 2, 0], 0).unwrap(), 1);
        assert_eq!(l, [3.0 - (2.0 * 0.5 + 0.25), 2.0, 1.0 - 0.75, 0.5]);
        // Negative values encourage repeats.
        let p = SamplingParams { frequency_penalty: -1.0, ..Default::default() };
        assert_eq!(draw(&p, &mut [3.0, 2.5], &[], &[1], 0).unwrap(), 1);
        // Order: repetition penalty, then frequency/presence, then bias.
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 1.0,
            logit_bias: vec![(1, -0.5), (7, 3.0)],
            ..Default::default()
        };
        let mut l = [4.0f32, 4.0];
        draw(&p, &mut l, &[0, 1], &[0], 0).unwrap();
        assert_eq!(l, [4.0 / 2.0 - 1.0, 4.0 / 2.0 - 0.5]);
        // +100 forces a token and -100 forbids one, greedy and sampled.
        for temperature in [0.0, 1.0] {
            let mut s = Sampler::new(SamplingParams {
                temperature,
                logit_bias: vec![(3, 100.0), (0, -100.0)],
                seed: 9,
                ..Default::default()
            })
            .unwrap();
            for _ in 0..50 {
                assert_eq!(s.sample(&mut [9.0, 1.0, 2.0, -5.0], &[]).unwrap(), 3);
            }
            let mut s = Sampler::new(SamplingParams {
                temperature,
                logit_bias: vec![(0, -100.0)],
                seed: 9,
                ..Default::default()
            })
            .unwrap();
            for _ in 0..50 {
                assert_ne!(s.sample(&mut [9.0, 1.0, 2.0, -5.0], &[]).unwrap(), 0);
            }
        }
        // The Sampler counts what it drew: a strong frequency penalty never repeats (greedy).
        let mut s = Sampler::new(SamplingParams { frequency_penalty: 2.0, ..Default::default() }).unwrap();
        let drawn: Vec<u32> = (0..3).map(|_| s.sample(&mut [3.0, 2.5, 2.0], &[]).unwrap()).collect();
        assert_eq!(drawn, [0, 1, 2]);
    }

    #[test]
    fn logprobs_are_the_raw_log_softmax() {
        let l = [1.0f32, 3.0, f32::NAN, 3.0, f32::NEG_INFINITY, -2.0];
        let z: f64 = [1.0f64, 3.0, 3.0, -2.0].iter().map(|x| x.exp()).sum();
        let lp = |x: f64| (x - z.ln()) as f32;
        let t = logprobs(&l, 0, 3).unwrap();
        assert_eq!(t.token, 0);
        assert!((t.logprob - lp(1.0)).abs() < 1e-6);
        // Ties by id; -inf and NaN are never listed.
        assert_eq!(t.top.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 3, 0]);
        assert!((t.top[0].1 - lp(3.0)).abs() < 1e-6 && t.top[0].1 == t.top[1].1);
        let all = logprobs(&l, 5, MAX_TOP_LOGPROBS).unwrap();
        assert_eq!(all.top.len(), 4);
        assert!(logprobs(&l, 0, 0).unwrap().top.is_empty());
        assert_eq!(logprobs(&l, 4, 1).unwrap().logprob, f32::NEG_INFINITY);
        assert!(logprobs(&l, 0, MAX_TOP_LOGPROBS + 1).is_err());
        assert!(logprobs(&l, 6, 1).is_err());
        // An infinite logit takes all the mass; the others get -inf, never NaN.
        let t = logprobs(&[f32::INFINITY, 0.0], 1, 2).unwrap();
        assert_eq!((t.logprob, t.top[0]), (f32::NEG_INFINITY, (0, 0.0)));
    }
}
