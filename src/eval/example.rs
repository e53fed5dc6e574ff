//! Labeled examples of the evaluation set, read from JSONL.
//!
//! One JSON object per line: `id`, `text`, `categories` (1 to 3 ids), `intent`, `urgency`,
//! `speaker` and optional `tags`. Every label id must belong to the scheme in
//! [`taxonomy`](crate::triage::taxonomy), because the metrics index label lists by position.
//! Tags are free strings that only select slices. Errors name the line and the example id,
//! never the text.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::triage::taxonomy::{index_of, CATEGORIES, INTENTS, NONE_CATEGORY, SPEAKERS, URGENCIES};

/// One labeled message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub categories: Vec<String>,
    pub intent: String,
    pub urgency: String,
    pub speaker: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Example {
    /// Checks that every label id is in the scheme and that `none` is the only category when
    /// present.
    pub fn validate(&self) -> Result<()> {
        if self.categories.is_empty() {
            bail!("no category");
        }
        for category in &self.categories {
            if index_of(&CATEGORIES, category).is_none() {
                bail!("unknown category `{category}`");
            }
        }
        if self.categories.len() > 1 && self.categories.iter().any(|c| c == NONE_CATEGORY) {
            bail!("`{NONE_CATEGORY}` must stand alone");
        }
        for (field, value, labels) in [
            ("intent", &self.intent, &INTENTS[..]),
            ("urgency", &self.urgency, &URGENCIES[..]),
            ("speaker", &self.speaker, &SPEAKERS[..]),
        ] {
            if index_of(labels, value).is_none() {
                bail!("unknown {field} `{value}`");
            }
        }
        Ok(())
    }

    /// Number of whitespace-separated words, the unit of the length slices.
    pub fn word_count(&self) -> usize {
        self.text.split_whitespace().count()
    }
}

/// Reads and validates a JSONL file. Blank lines are skipped; ids must be unique.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut examples = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: cannot read line", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // serde_json's message names the position of the fault, not the text around it.
        let example: Example = serde_json::from_str(&line)
            .with_context(|| format!("{}:{number}: not a valid example", path.display()))?;
        example
            .validate()
            .with_context(|| format!("{}:{number}: example `{}`", path.display(), example.id))?;
        if !seen.insert(example.id.clone()) {
            bail!("{}:{number}: duplicate id `{}`", path.display(), example.id);
        }
        examples.push(example);
    }
    if examples.is_empty() {
        bail!("{} contains no example", path.display());
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(categories: &[&str], intent: &str) -> Example {
        Example {
            id: "t-1".into(),
            text: "un message inventé".into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            intent: intent.into(),
            urgency: "low".into(),
            speaker: "parent".into(),
            tags: vec![],
        }
    }

    #[test]
    fn validate_rejects_unknown_labels_and_none_with_others() {
        assert!(example(&["harassment", "sexism"], "seek_help").validate().is_ok());
        assert!(example(&["bullying"], "seek_help").validate().is_err());
        assert!(example(&["none", "scam"], "seek_help").validate().is_err());
        assert!(example(&["scam"], "chat").validate().is_err());
        assert!(example(&[], "advice").validate().is_err());
    }

    #[test]
    fn read_examples_names_the_line_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.jsonl");
        let line = r#"{"id":"a","text":"x","categories":["none"],"intent":"greeting","urgency":"low","speaker":"other"}"#;
        std::fs::write(&path, format!("{line}\n\n{line}\n")).unwrap();
        let error = read_examples(&path).unwrap_err().to_string();
        assert!(error.contains(":3: duplicate id `a`"), "{error}");

        std::fs::write(&path, format!("{line}\n{{\"id\":\"b\"}}\n")).unwrap();
        let error = read_examples(&path).unwrap_err().to_string();
        assert!(error.contains(":2: not a valid example"), "{error}");
    }
}
