//! The decision layer: head probabilities plus rule outcome in, [`Classification`] out.
//!
//! Order of decisions: categories by per-category threshold (rules may add one), urgency by
//! cumulative thresholds then raised by rules (never lowered), `uncertain`, handoff, resources.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::classification::{CategoryScore, Classification, Handoff, LabelScore, ModelInfo, Resource, UrgencyResult};
use super::rules::RuleOutcome;
use super::taxonomy::{Label, Urgency, CATEGORIES, INTENTS, NONE_CATEGORY, SPEAKERS, TALK_TO_COUNSELOR, URGENCIES};
use crate::model::heads::HeadScores;
use crate::model::manifest::Thresholds;

/// Handoff actions, from most to least pressing.
pub const HANDOFF_NOW: &str = "now";
pub const HANDOFF_SOON: &str = "soon";
pub const HANDOFF_OFFER: &str = "offer";
pub const HANDOFF_NONE: &str = "none";

/// Help resources from the model folder's `resources.json`, which the helpline edits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub version: String,
    /// Shown first whenever urgency is critical (emergency numbers), each one subject to its
    /// `only_with` list.
    pub urgent: Vec<ResourceEntry>,
    /// Resources per category id.
    pub categories: HashMap<String, Vec<ResourceEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceEntry {
    pub id: String,
    pub title: String,
    pub links: Vec<String>,
    /// Urgent entries only: category ids of which at least one must be detected for the entry
    /// to be shown. A critical result with no concern detected gets every urgent entry. Empty:
    /// always shown.
    #[serde(default)]
    pub only_with: Vec<String>,
}

impl Resources {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
        let resources: Resources = serde_json::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?;
        let known = |id: &String| CATEGORIES.iter().any(|c| c.id == id.as_str());
        if let Some(unknown) = resources.categories.keys().find(|id| !known(id)) {
            anyhow::bail!("{}: unknown category {unknown:?}", path.display());
        }
        if let Some(entry) = resources.categories.values().flatten().find(|e| !e.only_with.is_empty()) {
            anyhow::bail!("{}: {:?} has only_with, which only urgent entries may have", path.display(), entry.id);
        }
        for entry in &resources.urgent {
            if let Some(unknown) = entry.only_with.iter().find(|id| !known(id) || id.as_str() == NONE_CATEGORY) {
                let valid: Vec<&str> = CATEGORIES.iter().map(|c| c.id).filter(|&id| id != NONE_CATEGORY).collect();
                anyhow::bail!(
                    "{}: {:?} names {unknown:?} in only_with, which is not a concern category: use {}",
                    path.display(),
                    entry.id,
                    valid.join(", ")
                );
            }
        }
        Ok(resources)
    }
}

pub struct DecisionLayer {
    pub thresholds: Thresholds,
    pub resources: Resources,
    pub model: ModelInfo,
    category_thresholds: Vec<f32>,
}

impl DecisionLayer {
    pub fn new(thresholds: Thresholds, resources: Resources, model: ModelInfo) -> Self {
        let category_thresholds = CATEGORIES.iter().map(|c| thresholds.categories.get(c.id).copied().unwrap_or(0.5)).collect();
        DecisionLayer { thresholds, resources, model, category_thresholds }
    }

    /// Returns the urgency level the model's probabilities give, before rules.
    pub fn model_urgency(&self, probabilities: &[f32]) -> Urgency {
        for level in [Urgency::Critical, Urgency::High, Urgency::Medium] {
            let cumulative: f32 = probabilities[level.index()..].iter().sum();
            let threshold = self.thresholds.urgency.get(level.id()).copied().unwrap_or(0.5);
            if cumulative >= threshold {
                return level;
            }
        }
        Urgency::Low
    }

    /// Decides the result of one message. `unsupported_script` marks a message that the model
    /// cannot read: the result is then uncertain and the handoff at least `soon`.
    ///
    /// `message_alone` gives the category scores of the message without its context, when it
    /// has one. A category that they detect stays detected, so that context never removes a
    /// concern: a higher score for another category would otherwise push it under the relative
    /// cutoff.
    pub fn decide(
        &self,
        scores: &HeadScores,
        message_alone: Option<&[f32]>,
        rules: &RuleOutcome,
        windows: usize,
        unsupported_script: bool,
    ) -> Classification {
        let categories = self.categories(scores, message_alone, rules);
        let confident = categories.iter().any(|c| {
            let index = CATEGORIES.iter().position(|l| l.id == c.id).unwrap_or(0);
            c.detected && c.score >= self.category_thresholds[index] + self.thresholds.uncertain_category_margin
        });

        let model_level = self.model_urgency(&scores.urgency);
        let (level, raised_by_rule) = match &rules.raise {
            Some((raised, rule)) if *raised > model_level => (*raised, Some(rule.clone())),
            _ => (model_level, None),
        };
        let urgency_close = top_two_gap(&scores.urgency) < self.thresholds.uncertain_urgency_margin;
        let uncertain = unsupported_script || (raised_by_rule.is_none() && (!confident || urgency_close));

        let intent = best_label(&INTENTS, &scores.intent);
        let speaker = best_label(&SPEAKERS, &scores.speaker);
        let handoff = handoff(level, &intent.id, raised_by_rule.as_deref(), uncertain, unsupported_script);
        let resources = self.resources_for(level, &categories);

        Classification {
            categories,
            intent,
            urgency: UrgencyResult {
                level: level.id().to_string(),
                label: level.label().to_string(),
                score: scores.urgency[level.index()],
                scores: URGENCIES.iter().zip(&scores.urgency).map(|(l, p)| (l.id.to_string(), *p)).collect::<BTreeMap<_, _>>(),
                raised_by_rule,
                rules_matched: rules.fired.clone(),
            },
            speaker,
            handoff,
            uncertain,
            unsupported_script,
            resources,
            model: self.model.clone(),
            windows,
        }
    }

    fn categories(&self, scores: &HeadScores, message_alone: Option<&[f32]>, rules: &RuleOutcome) -> Vec<CategoryScore> {
        let none_index = CATEGORIES.iter().position(|c| c.id == NONE_CATEGORY).unwrap_or(usize::MAX);
        let mut by_model = self.thresholds.detect(&scores.categories);
        if let Some(alone) = message_alone {
            for (detected, alone_detected) in by_model.iter_mut().zip(self.thresholds.detect(alone)) {
                *detected |= alone_detected;
            }
        }
        let mut detected = by_model.clone();
        for &index in &rules.add_categories {
            detected[index] = true;
        }
        // `none` is never combined with another category, so any real concern replaces it.
        if detected.iter().enumerate().any(|(i, &d)| d && i != none_index) {
            detected[none_index] = false;
        }
        let mut categories: Vec<CategoryScore> = CATEGORIES
            .iter()
            .enumerate()
            .map(|(i, label)| CategoryScore {
                id: label.id.to_string(),
                label: label.label.to_string(),
                score: scores.categories[i],
                detected: detected[i],
                added_by_rule: detected[i] && !by_model[i],
            })
            .collect();
        categories.sort_by(|a, b| b.score.total_cmp(&a.score));
        categories
    }

    fn resources_for(&self, level: Urgency, categories: &[CategoryScore]) -> Vec<Resource> {
        let mut out: Vec<Resource> = Vec::new();
        let mut push = |entry: &ResourceEntry, category: &str| {
            if !out.iter().any(|r| r.id == entry.id) {
                out.push(Resource {
                    id: entry.id.clone(),
                    title: entry.title.clone(),
                    links: entry.links.clone(),
                    category: category.to_string(),
                });
            }
        };
        if level == Urgency::Critical {
            let concerns: Vec<&str> = categories.iter().filter(|c| c.detected && c.id != NONE_CATEGORY).map(|c| c.id.as_str()).collect();
            for entry in &self.resources.urgent {
                let relevant = entry.only_with.is_empty()
                    || concerns.is_empty()
                    || entry.only_with.iter().any(|id| concerns.contains(&id.as_str()));
                if relevant {
                    push(entry, "urgent");
                }
            }
        }
        for category in categories.iter().filter(|c| c.detected) {
            for entry in self.resources.categories.get(&category.id).into_iter().flatten() {
                push(entry, &category.id);
            }
        }
        out
    }
}

fn best_label(labels: &[Label], probabilities: &[f32]) -> LabelScore {
    let (index, score) = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, p)| (i, *p))
        .unwrap_or((0, 0.0));
    LabelScore { id: labels[index].id.to_string(), label: labels[index].label.to_string(), score }
}

fn top_two_gap(probabilities: &[f32]) -> f32 {
    let mut sorted = probabilities.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[0] - sorted.get(1).copied().unwrap_or(0.0)
}

/// Decides the handoff: `now` at critical urgency, and `soon` at high urgency, on a request for
/// an écoutant or for a message in an unsupported script. Otherwise `offer` at medium urgency,
/// `none` below.
pub fn handoff(level: Urgency, intent: &str, raised_by_rule: Option<&str>, uncertain: bool, unsupported_script: bool) -> Handoff {
    let mut reasons = vec![format!("urgency_{}", level.id())];
    if let Some(rule) = raised_by_rule {
        reasons.push(format!("rule:{rule}"));
    }
    let asked = intent == TALK_TO_COUNSELOR;
    if asked {
        reasons.push("asked_for_counselor".to_string());
    }
    if uncertain {
        reasons.push("uncertain".to_string());
    }
    if unsupported_script {
        reasons.push("unsupported_script".to_string());
    }
    let action = match level {
        Urgency::Critical => HANDOFF_NOW,
        Urgency::High => HANDOFF_SOON,
        _ if asked || unsupported_script => HANDOFF_SOON,
        Urgency::Medium => HANDOFF_OFFER,
        Urgency::Low => HANDOFF_NONE,
    };
    Handoff { action: action.to_string(), reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::taxonomy::index_of;

    fn layer() -> DecisionLayer {
        let thresholds = Thresholds {
            categories: CATEGORIES.iter().map(|c| (c.id.to_string(), 0.5)).collect(),
            urgency: [("medium", 0.5), ("high", 0.5), ("critical", 0.4)].iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            category_relative_cutoff: 0.0,
            uncertain_category_margin: 0.1,
            uncertain_urgency_margin: 0.1,
        };
        let resources = Resources {
            version: "t".into(),
            urgent: vec![
                ResourceEntry { id: "urgence".into(), title: "Urgence".into(), links: vec!["tel_112".into()], only_with: vec![] },
                ResourceEntry { id: "3114".into(), title: "3114".into(), links: vec!["tel_3114".into()], only_with: vec!["self_harm".into()] },
            ],
            categories: [(
                "self_harm".to_string(),
                vec![ResourceEntry { id: "3114".into(), title: "3114".into(), links: vec!["tel_3114".into()], only_with: vec![] }],
            )]
            .into_iter()
            .collect(),
        };
        let model = ModelInfo { name: "t".into(), version: "0".into(), base: "b".into(), rules: "r".into() };
        DecisionLayer::new(thresholds, resources, model)
    }

    fn scores(category: &str, category_score: f32, urgency: [f32; 4]) -> HeadScores {
        let mut categories = vec![0.01; CATEGORIES.len()];
        categories[index_of(&CATEGORIES, category).unwrap()] = category_score;
        HeadScores { categories, intent: vec![0.9, 0.02, 0.02, 0.02, 0.02, 0.02], urgency: urgency.to_vec(), speaker: vec![0.8, 0.1, 0.1] }
    }

    #[test]
    fn category_detected_only_above_threshold() {
        let result = layer().decide(&scores("harassment", 0.55, [0.1, 0.8, 0.05, 0.05]), None, &RuleOutcome::default(), 1, false);
        assert_eq!(result.detected_categories(), vec!["harassment"]);
        assert!(!result.categories[0].added_by_rule);
        let result = layer().decide(&scores("harassment", 0.45, [0.1, 0.8, 0.05, 0.05]), None, &RuleOutcome::default(), 1, false);
        assert!(result.detected_categories().is_empty());
        assert!(result.uncertain, "nothing detected must be uncertain");
    }

    #[test]
    fn relative_cutoff_hides_weak_side_category() {
        let mut head_scores = scores("sextortion", 0.95, [0.1, 0.2, 0.6, 0.1]);
        head_scores.categories[index_of(&CATEGORIES, "privacy").unwrap()] = 0.6;
        let result = layer().decide(&head_scores, None, &RuleOutcome::default(), 1, false);
        assert_eq!(result.detected_categories(), vec!["sextortion", "privacy"]);

        let mut with_cutoff = layer();
        with_cutoff.thresholds.category_relative_cutoff = 0.7;
        let result = with_cutoff.decide(&head_scores, None, &RuleOutcome::default(), 1, false);
        assert_eq!(result.detected_categories(), vec!["sextortion"], "0.6 is below 0.7 x 0.95");
    }

    #[test]
    fn context_keeps_categories_of_message_alone() {
        let mut layer = layer();
        layer.thresholds.category_relative_cutoff = 0.7;
        // Alone, the message detects privacy (0.6) beside a weaker sextortion (0.5).
        let mut alone = scores("sextortion", 0.5, [0.1, 0.2, 0.6, 0.1]);
        alone.categories[index_of(&CATEGORIES, "privacy").unwrap()] = 0.6;
        assert_eq!(layer.decide(&alone, None, &RuleOutcome::default(), 1, false).detected_categories(), vec!["privacy", "sextortion"]);
        // With context, sextortion rises to 0.95 and privacy falls under 0.7 x 0.95.
        let mut with_context = alone.clone();
        with_context.categories[index_of(&CATEGORIES, "sextortion").unwrap()] = 0.95;
        let without_alone = layer.decide(&with_context, None, &RuleOutcome::default(), 1, false);
        assert_eq!(without_alone.detected_categories(), vec!["sextortion"]);
        let result = layer.decide(&with_context, Some(&alone.categories), &RuleOutcome::default(), 1, false);
        assert_eq!(result.detected_categories(), vec!["sextortion", "privacy"]);
        assert!(result.categories.iter().all(|c| !c.added_by_rule));
    }

    #[test]
    fn categories_sorted_by_score() {
        let result = layer().decide(&scores("scam", 0.9, [0.1, 0.8, 0.05, 0.05]), None, &RuleOutcome::default(), 1, false);
        assert_eq!(result.categories[0].id, "scam");
        assert_eq!(result.categories.len(), CATEGORIES.len());
        assert!(result.categories.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn cumulative_urgency_thresholds() {
        let layer = layer();
        assert_eq!(layer.model_urgency(&[0.3, 0.3, 0.2, 0.2]), Urgency::Medium);
        assert_eq!(layer.model_urgency(&[0.1, 0.3, 0.2, 0.4]), Urgency::Critical);
        assert_eq!(layer.model_urgency(&[0.6, 0.3, 0.05, 0.05]), Urgency::Low);
        assert_eq!(layer.model_urgency(&[0.2, 0.2, 0.3, 0.3]), Urgency::High);
    }

    #[test]
    fn rule_raises_urgency_and_adds_category() {
        let outcome = RuleOutcome {
            raise: Some((Urgency::Critical, "suicidal".into())),
            fired: vec!["suicidal".into()],
            add_categories: vec![index_of(&CATEGORIES, "self_harm").unwrap()],
        };
        let result = layer().decide(&scores("none", 0.9, [0.9, 0.05, 0.03, 0.02]), None, &outcome, 1, false);
        assert_eq!(result.urgency.level, "critical");
        assert_eq!(result.urgency.raised_by_rule.as_deref(), Some("suicidal"));
        assert_eq!(result.urgency.rules_matched, vec!["suicidal".to_string()]);
        assert_eq!(result.detected_categories(), vec!["self_harm"], "none must not stay beside self_harm");
        let self_harm = result.categories.iter().find(|c| c.id == "self_harm").unwrap();
        assert!(self_harm.added_by_rule, "self_harm scored 0.01, so the rule added it");
        assert_eq!(result.handoff.action, "now");
        assert_eq!(result.resources[0].id, "urgence");
        assert!(result.resources.iter().any(|r| r.id == "3114"));
    }

    #[test]
    fn urgent_entries_follow_only_with() {
        let ids = |result: &Classification| result.resources.iter().map(|r| (r.id.clone(), r.category.clone())).collect::<Vec<_>>();
        let critical = [0.0, 0.0, 0.1, 0.9];
        let threat = layer().decide(&scores("threats", 0.9, critical), None, &RuleOutcome::default(), 1, false);
        assert_eq!(ids(&threat), vec![("urgence".to_string(), "urgent".to_string())]);
        let self_harm = layer().decide(&scores("self_harm", 0.9, critical), None, &RuleOutcome::default(), 1, false);
        assert!(ids(&self_harm).contains(&("3114".to_string(), "urgent".to_string())), "{:?}", ids(&self_harm));
        // No concern detected: every urgent entry, because no category shows which one is irrelevant.
        let unclear = layer().decide(&scores("threats", 0.2, critical), None, &RuleOutcome::default(), 1, false);
        assert!(unclear.detected_categories().is_empty());
        assert_eq!(ids(&unclear).len(), 2, "{:?}", ids(&unclear));
        // Below critical, no urgent entry at all.
        let high = layer().decide(&scores("self_harm", 0.9, [0.0, 0.1, 0.8, 0.1]), None, &RuleOutcome::default(), 1, false);
        assert!(ids(&high).iter().all(|(_, category)| category != "urgent"), "{:?}", ids(&high));
    }

    #[test]
    fn resources_reject_only_with_outside_urgent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resources.json");
        let entry = |only_with: &str| format!(r#"{{"id": "a", "title": "A", "links": [], "only_with": [{only_with}]}}"#);
        std::fs::write(&path, format!(r#"{{"version": "t", "urgent": [{}], "categories": {{}}}}"#, entry(r#""self_harm""#))).unwrap();
        assert_eq!(Resources::load(&path).unwrap().urgent[0].only_with, vec!["self_harm".to_string()]);
        std::fs::write(&path, format!(r#"{{"version": "t", "urgent": [{}], "categories": {{}}}}"#, entry(r#""suicide""#))).unwrap();
        assert!(format!("{:#}", Resources::load(&path).unwrap_err()).contains("names \"suicide\" in only_with"));
        std::fs::write(&path, format!(r#"{{"version": "t", "urgent": [{}], "categories": {{}}}}"#, entry(r#""none""#))).unwrap();
        assert!(format!("{:#}", Resources::load(&path).unwrap_err()).contains("names \"none\" in only_with"));
        std::fs::write(&path, format!(r#"{{"version": "t", "urgent": [], "categories": {{"threats": [{}]}}}}"#, entry(r#""threats""#))).unwrap();
        assert!(format!("{:#}", Resources::load(&path).unwrap_err()).contains("only urgent entries"));
    }

    #[test]
    fn rules_never_lower_urgency() {
        let model_critical = [0.0, 0.0, 0.1, 0.9];
        for raise in Urgency::ALL {
            let outcome = RuleOutcome { raise: Some((raise, "r".into())), fired: vec!["r".into()], add_categories: vec![] };
            let result = layer().decide(&scores("threats", 0.9, model_critical), None, &outcome, 1, false);
            assert_eq!(result.urgency.level, "critical", "rule raising to {raise:?} changed a critical result");
            assert_eq!(result.urgency.raised_by_rule, None);
        }
    }

    #[test]
    fn urgency_score_is_that_of_the_returned_level() {
        let model_low = [0.9, 0.06, 0.03, 0.01];
        let outcome = RuleOutcome { raise: Some((Urgency::Critical, "r".into())), fired: vec!["r".into()], add_categories: vec![] };
        let raised = layer().decide(&scores("self_harm", 0.9, model_low), None, &outcome, 1, false);
        assert_eq!(raised.urgency.level, "critical");
        assert_eq!(raised.urgency.score, 0.01, "the model's probability of critical, not of low");

        let unraised = layer().decide(&scores("self_harm", 0.9, model_low), None, &RuleOutcome::default(), 1, false);
        assert_eq!(unraised.urgency.level, "low");
        assert_eq!(unraised.urgency.score, 0.9);
    }

    #[test]
    fn handoff_follows_urgency_and_intent() {
        assert_eq!(handoff(Urgency::Critical, "greeting", None, false, false).action, "now");
        assert_eq!(handoff(Urgency::High, "seek_help", None, false, false).action, "soon");
        assert_eq!(handoff(Urgency::Low, "talk_to_counselor", None, false, false).action, "soon");
        assert_eq!(handoff(Urgency::Medium, "seek_help", None, false, false).action, "offer");
        assert_eq!(handoff(Urgency::Low, "information", None, false, false).action, "none");
        assert!(handoff(Urgency::Low, "talk_to_counselor", None, true, false).reasons.contains(&"asked_for_counselor".to_string()));
    }

    #[test]
    fn close_urgency_levels_are_uncertain() {
        let result = layer().decide(&scores("harassment", 0.95, [0.05, 0.46, 0.44, 0.05]), None, &RuleOutcome::default(), 1, false);
        assert!(result.uncertain);
        let result = layer().decide(&scores("harassment", 0.95, [0.05, 0.8, 0.1, 0.05]), None, &RuleOutcome::default(), 1, false);
        assert!(!result.uncertain);
    }

    #[test]
    fn unsupported_script_is_uncertain_and_handed_off() {
        let confident = scores("harassment", 0.95, [0.9, 0.05, 0.03, 0.02]);
        let readable = layer().decide(&confident, None, &RuleOutcome::default(), 1, false);
        assert!(!readable.uncertain);
        assert!(!readable.unsupported_script);
        assert_eq!(readable.handoff.action, "none");

        let unreadable = layer().decide(&confident, None, &RuleOutcome::default(), 1, true);
        assert!(unreadable.uncertain);
        assert!(unreadable.unsupported_script);
        assert_eq!(unreadable.handoff.action, "soon");
        assert!(unreadable.handoff.reasons.contains(&"unsupported_script".to_string()), "{:?}", unreadable.handoff);
        // The flag never lowers a handoff.
        assert_eq!(handoff(Urgency::Critical, "seek_help", None, true, true).action, "now");
        assert_eq!(handoff(Urgency::Medium, "seek_help", None, true, true).action, "soon");
    }
}
