//! Choosing the next token from logits, on the CPU: repetition penalty, temperature, top-k,
//! top-p, in the order Hugging Face `generate` applies them, with a seeded RNG so runs repeat.
//! Temperature 0 is greedy (and the engine then takes the argmax on the GPU instead).

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
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be a finite number >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!("repetition_penalty must be a finite number > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = params.seed ^ 0x9E37_79B9_7F4A_7C15;
        Ok(Sampler { params, rng })
    }

    /// SplitMix64 → uniform f64 in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Pick a token. `history` is every token so far (prompt and output), for the penalty.
    /// `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Request("no logits to sample from".into()));
        }
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.is_greedy() {
            return argmax(logits);
        }
        // Candidates as (logit / temperature), best first, cut to top-k.
        let t = p.temperature as f64;
        let mut cand: Vec<(u32, f64)> =
            logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l as f64 / t)).collect();
        if cand.is_empty() {
            return Err(Error::Gpu("all logits are NaN".into()));
        }
        let by_logit = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit);
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let r = self.uniform();
        let mut acc = 0.0;
        for (i, &pr) in probs.iter().enumerate() {
            acc += pr;
            if r < acc {
                return Ok(cand[i].0);
            }
        }
        Ok(cand[probs.len() - 1].0)
    }
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
