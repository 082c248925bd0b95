//! Layer-wise window attention (the Qwen report, §2.5): each layer's queries see only the
//! last `w` keys (themselves included), short windows for lower layers and long ones for
//! higher layers. The released checkpoints do not configure it, so it is a load option, off
//! unless asked for. Keys older than a layer's window are skipped by the attention kernels,
//! not masked, so a long cache costs a windowed layer only its window.

use crate::error::{Error, Result};

/// How the windows are chosen: [`WindowSpec::parse`] reads the text form the CLI's `--window`
/// and the JS `window` option take.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum WindowSpec {
    /// Every layer attends to its whole cache (the reference model).
    #[default]
    Off,
    /// One window for every layer (one value) or one per layer; 0 is a whole-cache layer.
    Layers(Vec<usize>),
    /// Layer `i` gets `min · 2^(i · k)` keys (rounded down): the report's rule of short
    /// windows low and long ones high.
    Pow2 { min: usize, k: f64 },
}

/// The largest window written out (larger ones are no window at any context we allow).
const MAX_WINDOW: usize = 1 << 20;

impl WindowSpec {
    /// `off` (or empty), `W` (every layer), `W0,W1,...` (one per layer, 0 = whole cache), or
    /// `pow2:MIN:K` (layer i gets MIN·2^(i·K)).
    pub fn parse(text: &str) -> Result<WindowSpec> {
        let t = text.trim();
        let bad = |why: &str| Error::Request(format!("window {text:?}: {why}"));
        if t.is_empty() || t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
            return Ok(WindowSpec::Off);
        }
        if let Some(rest) = t.strip_prefix("pow2:") {
            let (min, k) = rest.split_once(':').ok_or_else(|| bad("want pow2:MIN:K, e.g. pow2:256:0.25"))?;
            let min: usize = min.trim().parse().map_err(|_| bad("MIN must be a whole number"))?;
            let k: f64 = k.trim().parse().map_err(|_| bad("K must be a number"))?;
            if min == 0 || min > MAX_WINDOW {
                return Err(bad(&format!("MIN must be from 1 to {MAX_WINDOW}")));
            }
            if !k.is_finite() || !(0.0..=16.0).contains(&k) {
                return Err(bad("K must be from 0 to 16"));
            }
            return Ok(WindowSpec::Pow2 { min, k });
        }
        let list = t
            .split(',')
            .map(|s| match s.trim().parse::<usize>() {
                Ok(w) if w <= MAX_WINDOW => Ok(w),
                _ => Err(bad(&format!("{:?} is not a window (a whole number from 0 to {MAX_WINDOW})", s.trim()))),
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(WindowSpec::Layers(list))
    }

    /// Each layer's window for a model of `layers` layers: 0 where a layer sees its whole
    /// cache. A list must have one value or one per layer.
    pub fn resolve(&self, layers: usize) -> Result<Vec<usize>> {
        match self {
            WindowSpec::Off => Ok(vec![0; layers]),
            WindowSpec::Layers(v) if v.len() == 1 => Ok(vec![v[0]; layers]),
            WindowSpec::Layers(v) if v.len() == layers => Ok(v.clone()),
            WindowSpec::Layers(v) => Err(Error::Request(format!(
                "window: {} values for a model of {layers} layers (give one for all, or one per layer)",
                v.len()
            ))),
            WindowSpec::Pow2 { min, k } => Ok((0..layers)
                .map(|i| {
                    let w = *min as f64 * 2f64.powf(i as f64 * k);
                    if w >= MAX_WINDOW as f64 {
                        0
                    } else {
                        w as usize
                    }
                })
                .collect()),
        }
    }

    /// Whether any layer has a window.
    pub fn is_off(&self) -> bool {
        match self {
            WindowSpec::Off => true,
            WindowSpec::Layers(v) => v.iter().all(|&w| w == 0),
            WindowSpec::Pow2 { .. } => false,
        }
    }

    /// The text form [`WindowSpec::parse`] reads back.
    pub fn describe(&self) -> String {
        match self {
            WindowSpec::Off => "off".into(),
            WindowSpec::Layers(v) => v.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(","),
            WindowSpec::Pow2 { min, k } => format!("pow2:{min}:{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(WindowSpec::parse("").unwrap(), WindowSpec::Off);
        assert_eq!(WindowSpec::parse("off").unwrap(), WindowSpec::Off);
        assert_eq!(WindowSpec::parse("512").unwrap().resolve(3).unwrap(), vec![512, 512, 512]);
        assert_eq!(WindowSpec::parse("1, 2,0").unwrap().resolve(3).unwrap(), vec![1, 2, 0]);
        assert_eq!(WindowSpec::parse("pow2:256:0.5").unwrap().resolve(4).unwrap(), vec![256, 362, 512, 724]);
        assert_eq!(WindowSpec::parse("pow2:256:0").unwrap().resolve(2).unwrap(), vec![256, 256]);
        // Windows past any context are no window.
        assert_eq!(WindowSpec::parse("pow2:1024:4").unwrap().resolve(4).unwrap(), vec![1024, 16384, 262144, 0]);
        for s in ["1,2", "x", "-1", "pow2:0:1", "pow2:8", "pow2:8:-1", "pow2:8:nan", "2000000"] {
            let r = WindowSpec::parse(s).and_then(|w| w.resolve(3));
            assert!(r.is_err(), "{s} accepted");
        }
        for s in ["off", "7", "1,2,3", "pow2:256:0.25"] {
            let w = WindowSpec::parse(s).unwrap();
            assert_eq!(WindowSpec::parse(&w.describe()).unwrap(), w);
        }
        assert!(WindowSpec::parse("0").unwrap().is_off());
    }
}
