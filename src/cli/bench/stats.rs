//! Latency statistics: nearest-rank percentiles over recorded durations, in milliseconds.

use std::time::Duration;

use serde::Serialize;

/// Returns the `p`-th percentile (0 < p <= 100) of ascending `sorted` values by the nearest-rank
/// method: the smallest value with at least p % of the values at or below it. `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Returns the median by the nearest-rank method, so always one of the values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// Latency figures of one set of requests, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// `None` when there is no duration.
    pub fn of(durations: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Some(LatencySummary {
            count: ms.len(),
            p50_ms: percentile(&ms, 50.0)?,
            p95_ms: percentile(&ms, 95.0)?,
            p99_ms: percentile(&ms, 99.0)?,
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            max_ms: *ms.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_hand_computed_cases() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 95.0), Some(95.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        // Five values: p50 is the 3rd (ceil 2.5), p95 and p99 the 5th.
        let five = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(percentile(&five, 50.0), Some(30.0));
        assert_eq!(percentile(&five, 95.0), Some(50.0));
        assert_eq!(percentile(&five, 1.0), Some(10.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn median_sorts_its_input() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }

    #[test]
    fn summary_in_milliseconds() {
        let durations: Vec<Duration> = [4, 1, 3, 2].iter().map(|&ms| Duration::from_millis(ms)).collect();
        let summary = LatencySummary::of(&durations).unwrap();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50_ms, 2.0);
        assert_eq!(summary.p99_ms, 4.0);
        assert_eq!(summary.mean_ms, 2.5);
        assert_eq!(summary.max_ms, 4.0);
        assert!(LatencySummary::of(&[]).is_none());
    }
}
