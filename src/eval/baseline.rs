//! Comparison with an earlier `report.json`: a delta for every headline figure, and the
//! regression guard.
//!
//! The guard fails when critical recall falls, or the severe under-triage rate (severe
//! under-triage count over gold high or critical examples) rises, by more than the tolerance.
//! Both are fractions, so one tolerance serves both. When a rate is undefined on either side
//! (the data holds no critical, or no high or critical, example), the guard compares what it
//! can: a critical recall that disappears fails, and the severe count is compared directly.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::lines::BYTE_ORDER_MARK;
use super::figures::{Better, Headline, HEADLINES};

/// Slack for floating-point noise in the guard, far below one example's weight.
const EPSILON: f64 = 1e-9;

/// Change of one headline figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Headline id, such as `critical_recall`.
    pub figure: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// `current − baseline`, when both are defined.
    pub delta: Option<f64>,
    pub better: Better,
    /// True when the figure moved the wrong way, by any amount.
    pub worse: bool,
}

/// A guard figure that moved the wrong way beyond the tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardFailure {
    pub figure: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
}

/// The comparison written into `report.json` and printed at the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Path of the baseline report, as given.
    pub path: String,
    /// Largest tolerated fall of critical recall or rise of the severe under-triage rate.
    pub tolerance: f64,
    /// False when the baseline was computed on a different data file (other checksum).
    pub same_data: bool,
    pub baseline_model: Value,
    pub deltas: Vec<Delta>,
    pub failures: Vec<GuardFailure>,
    pub passed: bool,
}

/// Reads a `report.json`. A UTF-8 byte-order mark at the start, which some editors add when
/// they save the file, is skipped, as in data files.
pub fn read_report(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read baseline {}", path.display()))?;
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(&text);
    serde_json::from_str(text).with_context(|| format!("baseline {} is not JSON", path.display()))
}

/// Compares the current report with the baseline report, both as JSON.
pub fn compare(path: &str, baseline: &Value, current: &Value, tolerance: f64) -> Comparison {
    let deltas: Vec<Delta> = HEADLINES
        .iter()
        .map(|h| {
            let (before, after) = (h.value(baseline), h.value(current));
            let delta = before.zip(after).map(|(b, a)| a - b);
            let worse = before.zip(after).is_some_and(|(b, a)| h.is_worse(b, a));
            Delta { figure: h.id.into(), baseline: before, current: after, delta, better: h.better, worse }
        })
        .collect();
    let failures = guard(baseline, current, tolerance);
    let checksum = |report: &Value| report.pointer("/data/sha256").cloned();
    Comparison {
        path: path.into(),
        tolerance,
        same_data: checksum(baseline) == checksum(current),
        baseline_model: baseline.get("model").cloned().unwrap_or(Value::Null),
        deltas,
        passed: failures.is_empty(),
        failures,
    }
}

fn guard(baseline: &Value, current: &Value, tolerance: f64) -> Vec<GuardFailure> {
    let figure = |id| Headline::find(id).expect("guard figures are headlines");
    let mut failures = Vec::new();
    let mut check = |headline: &Headline, fails: &dyn Fn(f64, Option<f64>) -> bool| {
        let (before, after) = (headline.value(baseline), headline.value(current));
        if before.is_some_and(|b| fails(b, after)) {
            failures.push(GuardFailure { figure: headline.id.into(), baseline: before, current: after });
        }
    };

    let recall = figure("critical_recall");
    check(recall, &|before, after| after.is_none_or(|a| recall.worsening(before, a) > tolerance + EPSILON));

    let severe_rate = figure("severe_under_triage_rate");
    let rates_defined = severe_rate.value(baseline).is_some() && severe_rate.value(current).is_some();
    if rates_defined {
        check(severe_rate, &|before, after| after.is_some_and(|a| severe_rate.worsening(before, a) > tolerance + EPSILON));
    } else {
        let severe = figure("severe_under_triage");
        check(severe, &|before, after| after.is_some_and(|a| a > before));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(recall: Option<f64>, severe: u64, severe_rate: Option<f64>) -> Value {
        json!({
            "data": {"sha256": "abc"},
            "model": {"name": "m"},
            "critical": {"recall": recall, "precision": 1.0},
            "severe_under_triage": severe,
            "severe_under_triage_rate": severe_rate,
            "macro_f1": 0.8,
        })
    }

    fn failed(comparison: &Comparison) -> Vec<&str> {
        comparison.failures.iter().map(|f| f.figure.as_str()).collect()
    }

    #[test]
    fn baseline_with_byte_order_mark_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, "\u{FEFF}{\"macro_f1\": 0.8}").unwrap();
        let report = read_report(&path).unwrap();
        assert_eq!(report["macro_f1"], 0.8);
    }

    #[test]
    fn guard_passes_on_equal_or_better_figures() {
        let base = report(Some(0.8), 2, Some(0.1));
        let c = compare("old.json", &base, &report(Some(0.9), 1, Some(0.05)), 0.0);
        assert!(c.passed);
        assert!(c.same_data);
        let recall = &c.deltas[0];
        assert_eq!(recall.figure, "critical_recall");
        assert!((recall.delta.unwrap() - 0.1).abs() < 1e-12);
        assert!(!recall.worse);
        assert!(compare("old.json", &base, &base, 0.0).passed);
    }

    #[test]
    fn guard_fails_beyond_the_tolerance_only() {
        let base = report(Some(0.8), 2, Some(0.10));
        let worse = report(Some(0.75), 3, Some(0.15));
        assert_eq!(failed(&compare("b", &base, &worse, 0.0)), ["critical_recall", "severe_under_triage_rate"]);
        assert!(compare("b", &base, &worse, 0.05).passed, "a fall of exactly the tolerance passes");
        assert_eq!(failed(&compare("b", &base, &report(Some(0.8), 3, Some(0.2)), 0.05)), ["severe_under_triage_rate"]);
    }

    #[test]
    fn guard_handles_undefined_rates() {
        let base = report(Some(1.0), 0, None);
        // Critical recall vanished: the current data has no critical example.
        assert_eq!(failed(&compare("b", &base, &report(None, 0, None), 0.0)), ["critical_recall"]);
        // Without a severe rate, the counts are compared.
        assert_eq!(failed(&compare("b", &base, &report(Some(1.0), 1, None), 0.5)), ["severe_under_triage"]);
        // No critical in the baseline: nothing to guard on recall.
        assert!(compare("b", &report(None, 0, None), &report(Some(0.0), 0, None), 0.0).passed);
    }
}
