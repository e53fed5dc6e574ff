//! The rule layer: versioned patterns from the model folder's `rules.json` that may raise the
//! urgency of a message (and mark the category the pattern implies), never lower anything.
//!
//! Patterns run on a folded copy of the normalised text: lower case, diacritics removed, so a
//! rule written as `deprime` also matches « déprimé » and « DEPRIME ».

use std::path::Path;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::taxonomy::{index_of, Urgency, CATEGORIES};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: String,
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    description: String,
    /// Urgency level id that the rule raises the result to, at least.
    raise_to: String,
    /// Category ids that a match marks as detected.
    #[serde(default)]
    add_categories: Vec<String>,
    /// Groups of alternatives: the rule fires when every group has a matching pattern.
    all: Vec<Vec<String>>,
    /// Patterns that stop the rule, for example a question about the topic.
    #[serde(default)]
    none_of: Vec<String>,
}

pub struct Rule {
    pub id: String,
    pub description: String,
    pub raise_to: Urgency,
    /// Indices into the taxonomy's category list.
    pub add_categories: Vec<usize>,
    all: Vec<Regex>,
    none_of: Option<Regex>,
}

pub struct RuleSet {
    pub version: String,
    pub rules: Vec<Rule>,
}

/// Outcome of the rules for one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleOutcome {
    /// Highest level any fired rule raises to, with that rule's id.
    pub raise: Option<(Urgency, String)>,
    /// Ids of every fired rule, in file order.
    pub fired: Vec<String>,
    /// Category indices to mark as detected.
    pub add_categories: Vec<usize>,
}

impl RuleSet {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is invalid", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: RuleFile = serde_json::from_str(text)?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let raise_to = Urgency::from_id(&spec.raise_to)
                .with_context(|| format!("rule {}: unknown urgency {:?}", spec.id, spec.raise_to))?;
            let add_categories = spec
                .add_categories
                .iter()
                .map(|id| index_of(&CATEGORIES, id).with_context(|| format!("rule {}: unknown category {id:?}", spec.id)))
                .collect::<Result<Vec<_>>>()?;
            if spec.all.is_empty() || spec.all.iter().any(Vec::is_empty) {
                bail!("rule {}: `all` needs at least one non-empty group of patterns", spec.id);
            }
            let all = spec
                .all
                .iter()
                .map(|group| alternation(group).with_context(|| format!("rule {}: invalid pattern", spec.id)))
                .collect::<Result<Vec<_>>>()?;
            let none_of = if spec.none_of.is_empty() {
                None
            } else {
                Some(alternation(&spec.none_of).with_context(|| format!("rule {}: invalid none_of pattern", spec.id))?)
            };
            rules.push(Rule { id: spec.id, description: spec.description, raise_to, add_categories, all, none_of });
        }
        Ok(RuleSet { version: file.version, rules })
    }

    /// Applies every rule to a normalised message.
    pub fn apply(&self, normalized_text: &str) -> RuleOutcome {
        let folded = fold(normalized_text);
        let mut outcome = RuleOutcome::default();
        for rule in &self.rules {
            let matches = rule.all.iter().all(|group| group.is_match(&folded))
                && !rule.none_of.as_ref().is_some_and(|stop| stop.is_match(&folded));
            if !matches {
                continue;
            }
            outcome.fired.push(rule.id.clone());
            for &category in &rule.add_categories {
                if !outcome.add_categories.contains(&category) {
                    outcome.add_categories.push(category);
                }
            }
            if outcome.raise.as_ref().is_none_or(|(level, _)| rule.raise_to > *level) {
                outcome.raise = Some((rule.raise_to, rule.id.clone()));
            }
        }
        outcome
    }
}

fn alternation(patterns: &[String]) -> Result<Regex> {
    let joined = patterns.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
    Ok(Regex::new(&joined)?)
}

/// Lower-cases and strips diacritics, the form rule patterns are written against.
pub fn fold(text: &str) -> String {
    text.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"{
        "version": "test-1",
        "rules": [
            {"id": "suicidal", "description": "d", "raise_to": "critical", "add_categories": ["self_harm"],
             "all": [["envie d'en finir", "me suicider"]], "none_of": ["c'est quoi"]},
            {"id": "deadline", "description": "d", "raise_to": "high",
             "all": [["nudes?", "photos?"], ["ce soir", "avant minuit"]]}
        ]
    }"#;

    #[test]
    fn fold_strips_accents_and_case() {
        assert_eq!(fold("DÉPRIMÉE à Noël"), "deprimee a noel");
    }

    #[test]
    fn rule_fires_on_any_alternative() {
        let rules = RuleSet::parse(RULES).unwrap();
        let outcome = rules.apply("jai ENVIE D'EN FINIR");
        assert_eq!(outcome.raise, Some((Urgency::Critical, "suicidal".into())));
        assert_eq!(outcome.add_categories, vec![index_of(&CATEGORIES, "self_harm").unwrap()]);
    }

    #[test]
    fn every_group_must_match() {
        let rules = RuleSet::parse(RULES).unwrap();
        assert!(rules.apply("il a mes nudes").fired.is_empty());
        assert_eq!(rules.apply("il envoie mes nudes ce soir").fired, vec!["deadline"]);
    }

    #[test]
    fn none_of_stops_a_rule() {
        let rules = RuleSet::parse(RULES).unwrap();
        assert!(rules.apply("c'est quoi envie d'en finir").fired.is_empty());
    }

    #[test]
    fn highest_raise_wins() {
        let rules = RuleSet::parse(RULES).unwrap();
        let outcome = rules.apply("il envoie mes photos ce soir j'ai envie d'en finir");
        assert_eq!(outcome.fired, vec!["suicidal", "deadline"]);
        assert_eq!(outcome.raise, Some((Urgency::Critical, "suicidal".into())));
    }

    #[test]
    fn unknown_labels_are_rejected() {
        let bad = RULES.replace("\"high\"", "\"urgent\"");
        assert!(RuleSet::parse(&bad).is_err());
        let bad = RULES.replace("self_harm", "suicide");
        assert!(RuleSet::parse(&bad).is_err());
    }
}
