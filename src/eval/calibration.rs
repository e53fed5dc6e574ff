//! Calibration: whether a score of 0.8 is right 80 % of the time.
//!
//! Scores are put in equal-width bins over [0, 1], and a score of exactly 1 falls in the last
//! bin. For each bin, the mean score is compared with the share of correct predictions. The
//! expected calibration error (ECE) is the mean of those gaps, weighted by bin size.

use serde::{Deserialize, Serialize};

/// Number of reliability bins of the report: 0.1 wide.
pub const BINS: usize = 10;

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean score in the bin; `null` for an empty bin.
    pub confidence: Option<f64>,
    /// Share of correct predictions in the bin; `null` for an empty bin.
    pub accuracy: Option<f64>,
}

/// Expected calibration error and the bins it is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Weighted mean of |accuracy − confidence| over the bins, in [0, 1]; `null` without samples.
    pub ece: Option<f64>,
    pub samples: usize,
    pub bins: Vec<ReliabilityBin>,
}

/// Builds the reliability bins of (score, correct) points. Scores outside [0, 1] are clamped.
pub fn reliability(points: impl IntoIterator<Item = (f32, bool)>, bins: usize) -> Reliability {
    assert!(bins > 0, "at least one bin");
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (score, correct) in points {
        let score = f64::from(score).clamp(0.0, 1.0);
        let index = ((score * bins as f64) as usize).min(bins - 1);
        let (count, total, hits) = &mut sums[index];
        *count += 1;
        *total += score;
        *hits += usize::from(correct);
    }
    let samples: usize = sums.iter().map(|s| s.0).sum();
    let mut gap = 0.0;
    let bins = sums
        .iter()
        .enumerate()
        .map(|(index, &(count, total, hits))| {
            let confidence = (count > 0).then(|| total / count as f64);
            let accuracy = (count > 0).then(|| hits as f64 / count as f64);
            if let (Some(c), Some(a)) = (confidence, accuracy) {
                gap += count as f64 * (a - c).abs();
            }
            ReliabilityBin {
                lower: index as f64 / bins as f64,
                upper: (index + 1) as f64 / bins as f64,
                count,
                confidence,
                accuracy,
            }
        })
        .collect();
    Reliability { ece: (samples > 0).then(|| gap / samples as f64), samples, bins }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_on_a_toy_set() {
        // Bin [0.8, 0.9): 0.85 ×4, 3 right  → confidence 0.85, accuracy 0.75, gap 0.10.
        // Bin [0.2, 0.3): 0.25 ×2, 1 right  → confidence 0.25, accuracy 0.50, gap 0.25.
        // Bin [0.9, 1.0]: 1.0 ×2, 2 right   → confidence 1.00, accuracy 1.00, gap 0.
        // ECE = (4 × 0.10 + 2 × 0.25 + 2 × 0) / 8 = 0.1125.
        let points = [
            (0.85, true),
            (0.85, true),
            (0.85, true),
            (0.85, false),
            (0.25, true),
            (0.25, false),
            (1.0, true),
            (1.0, true),
        ];
        let r = reliability(points, 10);
        assert_eq!(r.samples, 8);
        assert!((r.ece.unwrap() - 0.1125).abs() < 1e-6, "{:?}", r.ece);
        assert_eq!(r.bins[8].count, 4);
        assert!((r.bins[8].accuracy.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(r.bins[2].count, 2);
        assert_eq!(r.bins[9].count, 2, "a score of 1 falls in the last bin");
        assert_eq!((r.bins[0].confidence, r.bins[0].accuracy), (None, None));
        assert!((r.bins[3].lower - 0.3).abs() < 1e-12);
        assert!((r.bins[3].upper - 0.4).abs() < 1e-12);
    }

    #[test]
    fn perfectly_calibrated_and_empty_sets() {
        let points = [(0.5, true), (0.5, false), (0.0, false), (1.0, true)];
        assert!(reliability(points, 4).ece.unwrap().abs() < 1e-12);
        let empty = reliability(std::iter::empty(), 10);
        assert_eq!((empty.ece, empty.samples, empty.bins.len()), (None, 0, 10));
    }
}
