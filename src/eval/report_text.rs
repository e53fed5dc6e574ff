//! The plain-text figures printed at the end of a run, and the baseline delta table. For the
//! terminal and CI logs: ids as in `report.json`, no message text.

use std::fmt::Write;

use super::baseline::Comparison;
use super::figures::{to_value, Headline, Unit, HEADLINES};
use super::report_json::Report;

fn number(headline: &Headline, value: Option<f64>) -> String {
    match (value, headline.unit) {
        (None, _) => "-".into(),
        (Some(v), Unit::Count) => format!("{v:.0}"),
        (Some(v), _) => format!("{v:.3}"),
    }
}

fn signed(headline: &Headline, value: Option<f64>) -> String {
    // Rounding to zero first keeps float noise from printing as `-0.000`.
    match (value, headline.unit) {
        (None, _) => "-".into(),
        (Some(v), Unit::Count) => format!("{:+.0}", v.round() + 0.0),
        (Some(v), _) => format!("{:+.3}", (v * 1000.0).round() / 1000.0 + 0.0),
    }
}

/// Formats the headline figures with their 95 % intervals, and the robustness changes.
pub fn summary(report: &Report) -> String {
    let figures = to_value(&report.figures);
    let mut out = String::new();
    let model = &report.model;
    let _ = writeln!(
        out,
        "{} examples from {}, model {} {} ({}).",
        report.data.examples, report.data.path, model.name, model.version, model.dir
    );
    let t = &report.throughput;
    let rate = t.messages_per_second.map_or("-".into(), |r| format!("{r:.1}"));
    let _ = writeln!(out, "{} messages classified in {:.1} s ({rate} messages/s).", t.messages, t.seconds);
    let _ = writeln!(out, "{:<26} {:>9}   95% interval", "figure", "value");
    for headline in HEADLINES {
        let interval = report.confidence_intervals.get(headline.id).map_or(String::new(), |i| {
            format!("[{}, {}]", number(&headline, Some(i.low)), number(&headline, Some(i.high)))
        });
        let _ = writeln!(out, "{:<26} {:>9}   {interval}", headline.id, number(&headline, headline.value(&figures)));
    }
    if let Some(robustness) = &report.perturbation {
        let _ = writeln!(out, "Robustness (change on perturbed copies, macro_f1 / critical_recall / under_triage_rate):");
        for variant in &robustness.variants {
            let change = |id: &str| {
                let fall = variant.falls.iter().find(|f| f.figure == id);
                signed(Headline::find(id).expect("headline"), fall.and_then(|f| f.change))
            };
            let _ = writeln!(
                out,
                "  {:<8} {:>5} copies  {:>7} {:>7} {:>7}",
                variant.kind,
                variant.examples,
                change("macro_f1"),
                change("critical_recall"),
                change("under_triage_rate")
            );
        }
    }
    out
}

/// Formats the delta table against the baseline and the guard's verdict.
pub fn comparison(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Against baseline {}:", comparison.path);
    if !comparison.same_data {
        let _ = writeln!(out, "warning: the baseline was computed on a different data file; deltas mix model and data changes.");
    }
    let _ = writeln!(out, "{:<26} {:>9} {:>9} {:>9}", "figure", "baseline", "current", "delta");
    for delta in &comparison.deltas {
        let Some(headline) = Headline::find(&delta.figure) else { continue };
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>9} {:>9}{}",
            delta.figure,
            number(headline, delta.baseline),
            number(headline, delta.current),
            signed(headline, delta.delta),
            if delta.worse { "  worse" } else { "" }
        );
    }
    if comparison.passed {
        let _ = writeln!(out, "Regression guard passed (tolerance {}).", comparison.tolerance);
    } else {
        for failure in &comparison.failures {
            let headline = Headline::find(&failure.figure).expect("guard figures are headlines");
            let _ = writeln!(
                out,
                "REGRESSION: {} went from {} to {}, beyond the tolerance of {}.",
                failure.figure,
                number(headline, failure.baseline),
                number(headline, failure.current),
                comparison.tolerance
            );
        }
    }
    out
}
