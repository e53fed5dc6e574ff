//! Percentile bootstrap confidence intervals for the headline figures.
//!
//! The outcomes are resampled with replacement, the figures recomputed on each resample, and
//! the 2.5th and 97.5th percentiles of each headline figure kept. The generator is seeded, so
//! the same outcomes, resample count and seed always give the same intervals. Resamples on
//! which a figure is undefined (for example no critical example drawn) are skipped for it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::figures::{to_value, Figures, HEADLINES};
use super::outcome::Outcome;

/// Coverage of the intervals.
pub const LEVEL: f64 = 0.95;

/// A 95 % confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Resamples on which the figure was defined.
    pub resamples: usize,
}

/// Intervals of every headline figure, keyed by headline id. Empty when `resamples` is 0 or
/// there is no outcome.
pub fn intervals(outcomes: &[Outcome], resamples: usize, seed: u64) -> BTreeMap<String, Interval> {
    if outcomes.is_empty() {
        return BTreeMap::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); HEADLINES.len()];
    let mut sample: Vec<&Outcome> = Vec::with_capacity(outcomes.len());
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..outcomes.len()).map(|_| &outcomes[rng.gen_range(0..outcomes.len())]));
        let figures = to_value(&Figures::compute(&sample));
        for (headline, values) in HEADLINES.iter().zip(&mut values) {
            values.extend(headline.value(&figures));
        }
    }
    HEADLINES
        .iter()
        .zip(values)
        .filter(|(_, values)| !values.is_empty())
        .map(|(headline, mut values)| {
            values.sort_by(f64::total_cmp);
            let tail = (1.0 - LEVEL) / 2.0;
            let interval = Interval {
                low: percentile(&values, tail),
                high: percentile(&values, 1.0 - tail),
                resamples: values.len(),
            };
            (headline.id.to_string(), interval)
        })
        .collect()
}

/// Linear-interpolated percentile of sorted values, `q` in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    let weight = position - below as f64;
    sorted[below] * (1.0 - weight) + sorted[above] * weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::figures::tests::outcome;
    use crate::triage::taxonomy::Urgency::*;

    fn outcomes() -> Vec<Outcome> {
        (0..40)
            .map(|i| match i % 4 {
                0 => outcome(&["self_harm"], &["self_harm"], Critical, Critical),
                1 => outcome(&["self_harm"], &["harassment"], Critical, Medium),
                2 => outcome(&["scam"], &["scam"], Medium, Medium),
                _ => outcome(&["none"], &["none", "scam"], Low, Low),
            })
            .collect()
    }

    #[test]
    fn bootstrap_is_deterministic_for_a_seed() {
        let outcomes = outcomes();
        let first = intervals(&outcomes, 200, 7);
        assert_eq!(first, intervals(&outcomes, 200, 7));
        assert_ne!(first, intervals(&outcomes, 200, 8));

        let recall = &first["critical_recall"];
        // The point estimate is 0.5. The interval must contain it and stay inside [0, 1].
        assert!(0.0 <= recall.low, "{recall:?}");
        assert!(recall.low < 0.5, "{recall:?}");
        assert!(0.5 < recall.high, "{recall:?}");
        assert!(recall.high <= 1.0, "{recall:?}");
        assert_eq!(recall.resamples, 200);
        assert!(intervals(&outcomes, 0, 7).is_empty());
    }

    #[test]
    fn percentile_interpolates() {
        let sorted = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&sorted, 0.0), 0.0);
        assert_eq!(percentile(&sorted, 0.5), 2.0);
        assert_eq!(percentile(&sorted, 0.125), 0.5);
        assert_eq!(percentile(&sorted, 1.0), 4.0);
    }
}
