//! The classification contract: the one JSON object that both `cybertriage classify` and the
//! HTTP endpoint return. Fields may be added; none of the existing ones may be renamed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Result of classifying one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Every category, sorted by descending score.
    pub categories: Vec<CategoryScore>,
    pub intent: LabelScore,
    pub urgency: UrgencyResult,
    pub speaker: LabelScore,
    pub handoff: Handoff,
    /// True when the chatbot should ask a follow-up question or offer a human, because no
    /// category cleared its threshold confidently, the top two urgency levels are close, or the
    /// message or its context is in an unsupported script.
    pub uncertain: bool,
    /// True when the message or a context entry has at least half of its letters, or 10 letters,
    /// in a script that the model cannot read (Cyrillic, Greek, Hebrew, CJK, Indic scripts and
    /// others). The scores then carry little
    /// information about the message, so a human should read it.
    #[serde(default)]
    pub unsupported_script: bool,
    /// Help resources for the detected categories, most urgent first.
    pub resources: Vec<Resource>,
    pub model: ModelInfo,
    /// Number of 512-token windows the message was split into (1 for most messages).
    pub windows: usize,
}

/// Score of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub id: String,
    /// French display label.
    pub label: String,
    /// Sigmoid probability in [0, 1].
    pub score: f32,
    /// Whether the category is retained: its score cleared the manifest's threshold and relative
    /// cutoff, or a rule marked it.
    pub detected: bool,
    /// Whether a rule, not the score, detected the category: the score alone stays below its
    /// threshold or the relative cutoff.
    pub added_by_rule: bool,
}

/// Winning label of a single-label head, with its softmax probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub id: String,
    pub label: String,
    pub score: f32,
}

/// Urgency after the decision rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrgencyResult {
    /// Level id: `low`, `medium`, `high` or `critical`.
    pub level: String,
    pub label: String,
    /// Model probability of the returned level (of the model's own level when a rule raised it).
    pub score: f32,
    /// Model probability of every level, keyed by level id.
    pub scores: BTreeMap<String, f32>,
    /// Id of the rule that raised the level above the model's, or null.
    pub raised_by_rule: Option<String>,
    /// Ids of every rule whose wording matched, in rule-file order, whether or not it raised
    /// the level (the model may already be at or above it).
    #[serde(default)]
    pub rules_matched: Vec<String>,
}

/// Whether a human listener (écoutant) must take over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// `now`, `soon`, `offer` or `none`.
    pub action: String,
    /// Machine-readable reasons, such as `urgency_critical` or `asked_for_counselor`.
    pub reasons: Vec<String>,
}

/// A help resource shown by the chatbot, from the model folder's editable resource file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    /// French title shown to the person.
    pub title: String,
    /// Ids of the links that the chatbot resolves, for example `tel_3018`.
    pub links: Vec<String>,
    /// Category id, or `urgent` for the emergency resources added at critical urgency.
    pub category: String,
}

/// Identity of the model that produced the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// Base encoder name and checksum prefix, such as `intfloat/multilingual-e5-small@1571fc98`.
    pub base: String,
    /// Version of the rule set in the model folder, which the helpline may edit without
    /// retraining.
    pub rules: String,
}

impl Classification {
    /// Returns the ids of the detected categories, in score order.
    pub fn detected_categories(&self) -> Vec<&str> {
        self.categories.iter().filter(|c| c.detected).map(|c| c.id.as_str()).collect()
    }
}
