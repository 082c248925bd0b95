//! Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, in the
//! order Hugging Face `generate` applies them, then a seeded draw so runs repeat.
//!
//! One definition, two implementations: [`Sampler`] here on the CPU, and `shaders/sample.wgsl`
//! on the GPU (what generation uses: the token is chosen where the logits are, and only its
//! 4-byte id is read back). They give the same token for the same logits, seed and step:
//!
//! - penalty `r` on every token of the history: `l * (1/r)` if `l > 0`, else `l * r` (HF/CTRL);
//! - temperature 0 is greedy: the first index of the largest logit;
//! - `s = l * (1/temperature)` in f32;
//! - top-k keeps `s >=` the k-th largest `s` (values tied with it are kept too, as HF does);
//! - top-p keeps, of those, `s >= v` for the largest `v` whose kept mass
//!   `sum(exp(s_j - max s), s_j >= v)` reaches `top_p` times the whole kept mass;
//! - the token is the first index of the largest `s_i + g_i` among the kept, where
//!   `g_i = -log(-log(u_i))` and `u_i` is a uniform hashed from (seed, step, i): the
//!   Gumbel-max trick, which draws `i` with probability `exp(s_i) / sum(exp(s_j))`.
//!
//! `step` counts the draws of one generation (0, 1, ...).

use crate::error::{Error, Result};

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
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
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
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
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

/// The CPU implementation of the sampling definition (see the module docs).
pub struct Sampler {
    params: SamplingParams,
    step: u32,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, step: 0 })
    }

    /// The step the next draw uses.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Pick a token. `history` is every token so far (prompt and output), for the penalty.
    /// `logits` is modified in place (the penalty).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        let step = self.step;
        self.step = self.step.wrapping_add(1);
        draw(&self.params, logits, history, step)
    }
}

/// The token the sampling definition picks at `step` (see the module docs): what
/// [`Sampler::sample`] returns for its `step`-th draw. `logits` gets the penalty in place.
pub fn draw(p: &SamplingParams, logits: &mut [f32], history: &[u32], step: u32) -> Result<u32> {
    if logits.is_empty() {
        return Err(Error::Request("no logits to sample from".into()));
    }
    apply_penalty(logits, history, p.repetition_penalty);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, repetition_penalty: 1.0, seed: 7 }
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
}
