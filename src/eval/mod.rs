//! Evaluation of a classifier on a labeled JSONL set, for the helpline's data staff.
//!
//! A run ([`run`]) classifies every example, and on request perturbed copies ([`perturb`]). It
//! pairs each prediction with the gold labels ([`outcome`]), then computes the figures of the
//! whole set and of each slice ([`figures`], [`slices`]) and bootstrap intervals
//! ([`bootstrap`]). It writes three files: `report.json` ([`report_json`]), `report.html`
//! ([`report_html`], charts from [`plots`]) and `errors.jsonl` ([`errors`]). Against an earlier
//! `report.json`, [`baseline`] computes the deltas and decides whether the model regressed on
//! safety.
//!
//! The error cost is not symmetric: under-triage (urgency predicted below gold) can leave a
//! child in danger waiting, so it has its own figures, leads the error list and gates the
//! regression guard.

pub mod baseline;
pub mod bootstrap;
pub mod calibration;
pub mod errors;
pub mod example;
pub mod figures;
pub mod french;
pub mod metrics;
pub mod outcome;
pub mod perturb;
pub mod plots;
pub mod report_html;
pub mod report_json;
pub mod report_text;
pub mod run;
pub mod slices;

pub const REPORT_JSON_FILE: &str = "report.json";
pub const REPORT_HTML_FILE: &str = "report.html";
pub const ERRORS_FILE: &str = "errors.jsonl";
