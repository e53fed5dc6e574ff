//! Labeled data: the JSONL example format shared by training and evaluation, and the checks
//! behind `cybertriage data check`.
//!
//! The line checks ([`example`]) look at one line at a time: JSON, fields, types and labels.
//! The dataset checks ([`dataset`], [`near_duplicates`]) look across lines: ids unique in every
//! file, no repeated text within a split or between splits, and no evaluation message that is a
//! near-copy of a training message. [`counts`] tabulates the labels of the valid examples.
//! [`lines`] splits JSONL input into lines and decodes each one.

pub mod counts;
pub mod dataset;
pub mod example;
pub mod lines;
pub mod near_duplicates;
pub mod problem;

pub use example::{parse_examples, Example};
