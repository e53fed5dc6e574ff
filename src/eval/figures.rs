//! Every figure of the report for one set of outcomes: the whole evaluation set, a slice or a
//! perturbed copy all get the same [`Figures`], so any figure can be compared across them.
//!
//! The headline figures ([`HEADLINES`]) are the few the report leads with, draws confidence
//! intervals for and compares against a baseline. They are read back from the serialised
//! figures through JSON pointers, so an older `report.json` is read the same way as a new one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::calibration::{reliability, Reliability, BINS};
use super::metrics::{multi_label, ratio, single_label, LabelFigures, SingleLabelFigures, Confusion};
use super::outcome::Outcome;
use crate::triage::taxonomy::{Urgency, CATEGORIES, INTENTS, SPEAKERS, URGENCIES};

/// Every figure of one set of outcomes. In `report.json` these keys sit at the top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub examples: usize,
    /// Category macro F1, over the categories that are gold or predicted at least once.
    pub macro_f1: Option<f64>,
    /// Category micro F1.
    pub micro_f1: Option<f64>,
    /// Share of examples whose detected categories equal the gold categories exactly.
    pub exact_match: Option<f64>,
    pub categories: Vec<LabelFigures>,
    pub intent: SingleLabelFigures,
    pub speaker: SingleLabelFigures,
    pub urgency: UrgencyFigures,
    /// Urgency confusion matrix: rows are gold levels, columns predicted levels, low to critical.
    pub confusion: Confusion,
    /// Precision and recall of the `critical` urgency level.
    pub critical: LabelFigures,
    /// Share of examples whose predicted urgency is below the gold urgency.
    pub under_triage_rate: Option<f64>,
    /// Examples with gold urgency high or critical and predicted urgency low.
    pub severe_under_triage: usize,
    /// `severe_under_triage` divided by the number of gold high or critical examples.
    pub severe_under_triage_rate: Option<f64>,
    pub calibration: Calibration,
}

/// Urgency figures besides the confusion matrix and the critical level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrgencyFigures {
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub per_level: Vec<LabelFigures>,
    /// Share of examples whose predicted urgency is above the gold urgency.
    pub over_triage_rate: Option<f64>,
    /// Examples with gold urgency high or critical, the denominator of the severe rate.
    pub high_or_critical: usize,
}

/// Reliability of each head's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Every (example, category) sigmoid score against whether the category is gold.
    pub categories: Reliability,
    /// Probability of the predicted intent against whether it is the gold intent.
    pub intent: Reliability,
    /// Probability of the urgency head's own top level (before rules) against the gold level.
    pub urgency: Reliability,
    /// Probability of the predicted speaker against whether it is the gold speaker.
    pub speaker: Reliability,
}

impl Figures {
    pub fn compute(outcomes: &[&Outcome]) -> Figures {
        let categories = multi_label(
            &CATEGORIES,
            outcomes.iter().map(|o| (&o.gold_categories[..], &o.predicted_categories[..])),
        );
        let intent = single_label(&INTENTS, outcomes.iter().map(|o| (o.gold_intent, o.predicted_intent)));
        let speaker = single_label(&SPEAKERS, outcomes.iter().map(|o| (o.gold_speaker, o.predicted_speaker)));
        let urgency = single_label(
            &URGENCIES,
            outcomes.iter().map(|o| (o.gold_urgency.index(), o.predicted_urgency.index())),
        );

        let n = outcomes.len();
        let count = |keep: fn(&Outcome) -> bool| outcomes.iter().filter(|o| keep(o)).count();
        let under = count(Outcome::is_under_triaged);
        let over = count(|o| o.predicted_urgency > o.gold_urgency);
        let severe = count(Outcome::is_severe_under_triage);
        let high_or_critical = count(|o| o.gold_urgency >= Urgency::High);

        let SingleLabelFigures { accuracy, macro_f1, per_label, confusion } = urgency;
        Figures {
            examples: n,
            macro_f1: categories.macro_f1,
            micro_f1: categories.micro_f1,
            exact_match: categories.exact_match,
            categories: categories.per_label,
            intent,
            speaker,
            critical: per_label[Urgency::Critical.index()].clone(),
            urgency: UrgencyFigures {
                accuracy,
                macro_f1,
                per_level: per_label,
                over_triage_rate: ratio(over, n),
                high_or_critical,
            },
            confusion,
            under_triage_rate: ratio(under, n),
            severe_under_triage: severe,
            severe_under_triage_rate: ratio(severe, high_or_critical),
            calibration: Calibration::compute(outcomes),
        }
    }
}

impl Calibration {
    fn compute(outcomes: &[&Outcome]) -> Calibration {
        let categories = outcomes.iter().flat_map(|o| {
            o.category_scores.iter().zip(&o.gold_categories).map(|(&score, &gold)| (score, gold))
        });
        Calibration {
            categories: reliability(categories, BINS),
            intent: reliability(outcomes.iter().map(|o| (o.intent_score, o.gold_intent == o.predicted_intent)), BINS),
            urgency: reliability(
                outcomes.iter().map(|o| (o.model_urgency_score, o.gold_urgency == o.model_urgency)),
                BINS,
            ),
            speaker: reliability(
                outcomes.iter().map(|o| (o.speaker_score, o.gold_speaker == o.predicted_speaker)),
                BINS,
            ),
        }
    }
}

/// Direction in which a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// A figure the report leads with.
#[derive(Debug, Clone, Copy)]
pub struct Headline {
    /// Stable id, used as a key in `report.json`.
    pub id: &'static str,
    /// JSON pointer into the serialised [`Figures`].
    pub pointer: &'static str,
    /// French name shown in the HTML report.
    pub label: &'static str,
    pub better: Better,
    pub unit: Unit,
}

/// Kind of number of a headline figure, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A share of examples in [0, 1], shown as a percentage.
    Rate,
    /// A score in [0, 1] such as F1 or ECE, shown as a decimal.
    Score,
    /// A number of examples.
    Count,
}

const fn headline(id: &'static str, pointer: &'static str, label: &'static str, better: Better, unit: Unit) -> Headline {
    Headline { id, pointer, label, better, unit }
}

/// The headline figures, most safety-relevant first.
pub const HEADLINES: [Headline; 13] = {
    use Better::{Higher, Lower};
    use Unit::{Count, Rate, Score};
    [
        headline("critical_recall", "/critical/recall", "Rappel des urgences critiques", Higher, Rate),
        headline("severe_under_triage", "/severe_under_triage", "Sous-triages graves", Lower, Count),
        headline(
            "severe_under_triage_rate",
            "/severe_under_triage_rate",
            "Part des cas élevés ou critiques classés « faible »",
            Lower,
            Rate,
        ),
        headline("under_triage_rate", "/under_triage_rate", "Taux de sous-triage", Lower, Rate),
        headline("critical_precision", "/critical/precision", "Précision des urgences critiques", Higher, Rate),
        headline("urgency_accuracy", "/urgency/accuracy", "Exactitude de l'urgence", Higher, Rate),
        headline("macro_f1", "/macro_f1", "F1 macro des catégories", Higher, Score),
        headline("micro_f1", "/micro_f1", "F1 micro des catégories", Higher, Score),
        headline("exact_match", "/exact_match", "Catégories exactement justes", Higher, Rate),
        headline("intent_accuracy", "/intent/accuracy", "Exactitude de l'intention", Higher, Rate),
        headline("speaker_accuracy", "/speaker/accuracy", "Exactitude de l'auteur", Higher, Rate),
        headline("categories_ece", "/calibration/categories/ece", "Erreur de calibration (catégories)", Lower, Score),
        headline("urgency_ece", "/calibration/urgency/ece", "Erreur de calibration (urgence)", Lower, Score),
    ]
};

impl Headline {
    /// Reads this figure from serialised figures; `None` when absent or null.
    pub fn value(&self, figures: &Value) -> Option<f64> {
        figures.pointer(self.pointer).and_then(Value::as_f64)
    }

    pub fn find(id: &str) -> Option<&'static Headline> {
        HEADLINES.iter().find(|h| h.id == id)
    }

    /// Change from `before` to `after` that makes this figure worse, as a positive number.
    pub fn worsening(&self, before: f64, after: f64) -> f64 {
        match self.better {
            Better::Higher => before - after,
            Better::Lower => after - before,
        }
    }

    /// True when `after` is worse than `before` by more than float noise. Scores are `f32`,
    /// and batching can move them by about 1e-7, so smaller changes do not count.
    pub fn is_worse(&self, before: f64, after: f64) -> bool {
        self.worsening(before, after) > 1e-6
    }
}

/// Serialises figures for [`Headline::value`].
pub fn to_value(figures: &Figures) -> Value {
    serde_json::to_value(figures).expect("figures serialise")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::triage::taxonomy::index_of;

    /// Builds an outcome with the given gold and predicted categories and urgencies. Intent and
    /// speaker are right, and the scores follow the predictions.
    pub(crate) fn outcome(gold: &[&str], predicted: &[&str], gold_urgency: Urgency, predicted_urgency: Urgency) -> Outcome {
        let set = |ids: &[&str]| {
            let mut v = [false; CATEGORIES.len()];
            for id in ids {
                v[index_of(&CATEGORIES, id).unwrap()] = true;
            }
            v
        };
        let predicted_categories = set(predicted);
        Outcome {
            gold_categories: set(gold),
            predicted_categories,
            category_scores: predicted_categories.map(|p| if p { 0.9 } else { 0.05 }),
            gold_intent: 0,
            predicted_intent: 0,
            intent_score: 0.8,
            gold_urgency,
            predicted_urgency,
            model_urgency: predicted_urgency,
            model_urgency_score: 0.7,
            gold_speaker: 0,
            predicted_speaker: 0,
            speaker_score: 0.95,
        }
    }

    #[test]
    fn triage_figures() {
        use Urgency::*;
        let outcomes = [
            outcome(&["self_harm"], &["self_harm"], Critical, Critical),
            outcome(&["self_harm"], &["harassment"], Critical, Low), // severe under-triage
            outcome(&["sextortion"], &["sextortion"], High, Medium), // under-triage, not severe
            outcome(&["none"], &["none"], Low, Medium),              // over-triage
            outcome(&["scam"], &["scam"], Medium, Medium),
        ];
        let refs: Vec<&Outcome> = outcomes.iter().collect();
        let f = Figures::compute(&refs);
        assert_eq!(f.examples, 5);
        assert_eq!((f.critical.recall, f.critical.precision), (Some(0.5), Some(1.0)));
        assert_eq!(f.under_triage_rate, Some(0.4));
        assert_eq!(f.urgency.over_triage_rate, Some(0.2));
        assert_eq!(f.severe_under_triage, 1);
        assert_eq!(f.urgency.high_or_critical, 3);
        assert_eq!(f.severe_under_triage_rate, Some(1.0 / 3.0));
        assert_eq!(f.confusion.matrix[3], vec![1, 0, 0, 1]);
        assert_eq!(f.exact_match, Some(0.8));
    }

    #[test]
    fn every_headline_pointer_resolves() {
        let outcomes = [outcome(&["scam"], &["scam"], Urgency::Critical, Urgency::Critical)];
        let value = to_value(&Figures::compute(&outcomes.iter().collect::<Vec<_>>()));
        for headline in HEADLINES {
            assert!(headline.value(&value).is_some(), "{} does not resolve", headline.pointer);
        }
    }
}
