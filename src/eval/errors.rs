//! `errors.jsonl`: every misclassified example, most dangerous first, for the data staff to
//! read. It contains the example texts on purpose, because the eval set's messages are
//! invented; no text ever goes to a log.
//!
//! Danger order, from the top:
//! 1. under-triaged critical messages;
//! 2. severe under-triage (gold high, predicted low);
//! 3. any other under-triage;
//! 4. examples with a missed category;
//! 5. the rest (over-triage, extra categories, intent or speaker errors).
//!
//! Within a rank come higher gold urgency first, then the larger urgency gap, then more missed
//! categories, then originals before perturbed copies, then ids. So the file is stable from run
//! to run.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::example::Example;
use super::outcome::Outcome;
use crate::triage::classification::Classification;
use crate::triage::taxonomy::{Urgency, CATEGORIES, INTENTS, SPEAKERS};

/// One line of `errors.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub id: String,
    /// `original`, or the perturbation that made this copy.
    pub variant: String,
    /// Why this line sits where it does: `under_triage_critical`, `severe_under_triage`,
    /// `under_triage`, `missed_category` or `other`.
    pub danger: String,
    /// Mistakes of the prediction, such as `urgency_under:critical>low`,
    /// `category_missed:self_harm`, `category_extra:none` or `intent:advice>seek_help`
    /// (gold before `>`, predicted after).
    pub mistakes: Vec<String>,
    pub text: String,
    pub gold: Labels,
    pub predicted: Labels,
    pub scores: Scores,
}

/// A set of labels, gold or predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub categories: Vec<String>,
    pub intent: String,
    pub urgency: String,
    pub speaker: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The model's scores for the example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Sigmoid score of every category, by id.
    pub categories: BTreeMap<String, f32>,
    pub intent: f32,
    /// Probability of every urgency level, by id, before rules.
    pub urgency: BTreeMap<String, f32>,
    /// Id of the rule that raised the urgency, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency_raised_by_rule: Option<String>,
    pub speaker: f32,
}

/// One evaluated example, as [`error_records`] reads it.
pub struct Evaluated<'a> {
    pub example: &'a Example,
    pub variant: &'a str,
    pub classification: &'a Classification,
    pub outcome: &'a Outcome,
}

/// Danger rank, ordered so that the most dangerous compares greatest.
fn danger(outcome: &Outcome) -> (u8, &'static str) {
    if outcome.is_under_triaged() && outcome.gold_urgency == Urgency::Critical {
        (4, "under_triage_critical")
    } else if outcome.is_severe_under_triage() {
        (3, "severe_under_triage")
    } else if outcome.is_under_triaged() {
        (2, "under_triage")
    } else if outcome.missed_categories().next().is_some() {
        (1, "missed_category")
    } else {
        (0, "other")
    }
}

fn mistakes(o: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    if o.predicted_urgency != o.gold_urgency {
        let way = if o.is_under_triaged() { "under" } else { "over" };
        out.push(format!("urgency_{way}:{}>{}", o.gold_urgency.id(), o.predicted_urgency.id()));
    }
    out.extend(o.missed_categories().map(|i| format!("category_missed:{}", CATEGORIES[i].id)));
    out.extend(o.extra_categories().map(|i| format!("category_extra:{}", CATEGORIES[i].id)));
    if o.gold_intent != o.predicted_intent {
        out.push(format!("intent:{}>{}", INTENTS[o.gold_intent].id, INTENTS[o.predicted_intent].id));
    }
    if o.gold_speaker != o.predicted_speaker {
        out.push(format!("speaker:{}>{}", SPEAKERS[o.gold_speaker].id, SPEAKERS[o.predicted_speaker].id));
    }
    out
}

/// Builds the records of the misclassified examples among `evaluated`, most dangerous first.
pub fn error_records(evaluated: &[Evaluated]) -> Vec<ErrorRecord> {
    let mut wrong: Vec<&Evaluated> = evaluated.iter().filter(|e| !e.outcome.is_correct()).collect();
    wrong.sort_by_key(|e| {
        let o = e.outcome;
        let gap = o.gold_urgency.index().saturating_sub(o.predicted_urgency.index());
        (
            Reverse(danger(o).0),
            Reverse(o.gold_urgency),
            Reverse(gap),
            Reverse(o.missed_categories().count()),
            e.variant != "original",
            e.example.id.as_str(),
        )
    });
    wrong.into_iter().map(record).collect()
}

fn record(e: &Evaluated) -> ErrorRecord {
    let c = e.classification;
    ErrorRecord {
        id: e.example.id.clone(),
        variant: e.variant.to_string(),
        danger: danger(e.outcome).1.to_string(),
        mistakes: mistakes(e.outcome),
        text: e.example.text.clone(),
        gold: Labels {
            categories: e.example.categories.clone(),
            intent: e.example.intent.clone(),
            urgency: e.example.urgency.clone(),
            speaker: e.example.speaker.clone(),
            tags: e.example.tags.clone(),
        },
        predicted: Labels {
            categories: c.detected_categories().into_iter().map(String::from).collect(),
            intent: c.intent.id.clone(),
            urgency: c.urgency.level.clone(),
            speaker: c.speaker.id.clone(),
            tags: Vec::new(),
        },
        scores: Scores {
            categories: c.categories.iter().map(|s| (s.id.clone(), s.score)).collect(),
            intent: c.intent.score,
            urgency: c.urgency.scores.clone(),
            urgency_raised_by_rule: c.urgency.raised_by_rule.clone(),
            speaker: c.speaker.score,
        },
    }
}
