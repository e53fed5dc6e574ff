//! One example's gold labels beside the model's prediction, as positions in the label lists of
//! [`taxonomy`](crate::triage::taxonomy). Every metric reads these, never the raw JSON, so a
//! label id is resolved once and an unknown one fails loudly instead of counting as an error.

use anyhow::{anyhow, Result};

use super::example::Example;
use crate::triage::classification::Classification;
use crate::triage::taxonomy::{index_of, Urgency, CATEGORIES, INTENTS, SPEAKERS, URGENCIES};

/// Number of categories, the width of the multi-label vectors.
pub const CATEGORY_COUNT: usize = CATEGORIES.len();

/// Gold and predicted labels of one example, with the model's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub gold_categories: [bool; CATEGORY_COUNT],
    /// Categories whose score cleared the model's threshold.
    pub predicted_categories: [bool; CATEGORY_COUNT],
    /// Sigmoid score of every category, 0 for a category the classification left out.
    pub category_scores: [f32; CATEGORY_COUNT],
    pub gold_intent: usize,
    pub predicted_intent: usize,
    pub intent_score: f32,
    pub gold_urgency: Urgency,
    /// Urgency after the decision rules: what the helpline acts on.
    pub predicted_urgency: Urgency,
    /// Level the urgency head itself ranked first, before any rule raised it.
    pub model_urgency: Urgency,
    /// Probability the urgency head gave to `model_urgency`.
    pub model_urgency_score: f32,
    pub gold_speaker: usize,
    pub predicted_speaker: usize,
    pub speaker_score: f32,
}

impl Outcome {
    /// Pairs a validated example with its classification.
    pub fn new(example: &Example, classification: &Classification) -> Result<Outcome> {
        let gold = |labels, id: &str, field| {
            index_of(labels, id).ok_or_else(|| anyhow!("example `{}`: unknown {field} `{id}`", example.id))
        };
        let predicted = |labels, id: &str, field| {
            index_of(labels, id).ok_or_else(|| anyhow!("the model returned an unknown {field} `{id}`"))
        };

        let mut gold_categories = [false; CATEGORY_COUNT];
        for id in &example.categories {
            gold_categories[gold(&CATEGORIES, id, "category")?] = true;
        }
        let mut predicted_categories = [false; CATEGORY_COUNT];
        let mut category_scores = [0.0; CATEGORY_COUNT];
        for category in &classification.categories {
            let index = predicted(&CATEGORIES, &category.id, "category")?;
            predicted_categories[index] = category.detected;
            category_scores[index] = category.score;
        }

        let urgency = |index| Urgency::from_index(index).expect("index comes from URGENCIES");
        let predicted_urgency = urgency(predicted(&URGENCIES, &classification.urgency.level, "urgency")?);
        let (model_urgency, model_urgency_score) = URGENCIES
            .iter()
            .enumerate()
            .filter_map(|(index, level)| classification.urgency.scores.get(level.id).map(|s| (index, *s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(index, score)| (urgency(index), score))
            .unwrap_or((predicted_urgency, classification.urgency.score));

        Ok(Outcome {
            gold_categories,
            predicted_categories,
            category_scores,
            gold_intent: gold(&INTENTS, &example.intent, "intent")?,
            predicted_intent: predicted(&INTENTS, &classification.intent.id, "intent")?,
            intent_score: classification.intent.score,
            gold_urgency: urgency(gold(&URGENCIES, &example.urgency, "urgency")?),
            predicted_urgency,
            model_urgency,
            model_urgency_score,
            gold_speaker: gold(&SPEAKERS, &example.speaker, "speaker")?,
            predicted_speaker: predicted(&SPEAKERS, &classification.speaker.id, "speaker")?,
            speaker_score: classification.speaker.score,
        })
    }

    /// Predicted urgency below the gold level.
    pub fn is_under_triaged(&self) -> bool {
        self.predicted_urgency < self.gold_urgency
    }

    /// Gold high or critical, predicted low: the message would wait in the ordinary queue.
    pub fn is_severe_under_triage(&self) -> bool {
        self.gold_urgency >= Urgency::High && self.predicted_urgency == Urgency::Low
    }

    /// Gold categories that the model did not detect.
    pub fn missed_categories(&self) -> impl Iterator<Item = usize> + '_ {
        (0..CATEGORY_COUNT).filter(|&i| self.gold_categories[i] && !self.predicted_categories[i])
    }

    /// Detected categories that are not gold.
    pub fn extra_categories(&self) -> impl Iterator<Item = usize> + '_ {
        (0..CATEGORY_COUNT).filter(|&i| !self.gold_categories[i] && self.predicted_categories[i])
    }

    /// True when every head agrees with the gold labels.
    pub fn is_correct(&self) -> bool {
        self.gold_categories == self.predicted_categories
            && self.gold_intent == self.predicted_intent
            && self.gold_urgency == self.predicted_urgency
            && self.gold_speaker == self.predicted_speaker
    }
}
