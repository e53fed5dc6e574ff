//! The training and evaluation files read together, and the checks that span lines: duplicate
//! ids across every file, and duplicate texts within each split and between the two.
//!
//! Two texts are duplicates when they are equal after trimming, Unicode NFC normalisation and
//! lower-casing ([`normalize_text`]). A duplicate is reported at its later occurrence, in file
//! order, with the earlier one named in the message.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use unicode_normalization::UnicodeNormalization;

use super::example::{check_decoded_line, Example};
use super::lines::decode_lines;
use super::problem::{Location, Problem, ProblemKind, Violation};

/// Side of the train/evaluation split that a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Eval,
}

/// A file to check and its split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: PathBuf,
    pub split: Split,
}

/// One line of a data file, with whatever parts of it passed the line checks.
#[derive(Debug, Clone)]
pub struct Record {
    pub split: Split,
    pub location: Location,
    pub id: Option<String>,
    pub text: Option<String>,
    /// Present when the line passed every line check.
    pub example: Option<Example>,
}

/// Every line of every file, in the order of the files and of their lines.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub files: Vec<DataFile>,
    pub records: Vec<Record>,
    /// Problems found by the line checks (format and scheme).
    pub line_violations: Vec<Violation>,
}

impl Dataset {
    /// Reads and checks each line of `files`. Only I/O errors fail. Problems in the data, invalid
    /// UTF-8 included, are collected in `line_violations`.
    pub fn read(files: Vec<DataFile>) -> Result<Dataset> {
        let mut records = Vec::new();
        let mut line_violations = Vec::new();
        for file in &files {
            let bytes =
                std::fs::read(&file.path).with_context(|| format!("failed to read {}", file.path.display()))?;
            for (number, line) in decode_lines(&bytes) {
                let location = Location { path: file.path.clone(), line: number };
                let checked = check_decoded_line(line);
                line_violations.extend(
                    checked.problems.into_iter().map(|problem| Violation { location: location.clone(), problem }),
                );
                records.push(Record {
                    split: file.split,
                    location,
                    id: checked.id,
                    text: checked.text,
                    example: checked.example,
                });
            }
        }
        Ok(Dataset { files, records, line_violations })
    }

    pub fn records(&self, split: Split) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.split == split)
    }

    /// Returns the valid examples of a split.
    pub fn examples(&self, split: Split) -> impl Iterator<Item = &Example> {
        self.records(split).filter_map(|r| r.example.as_ref())
    }

    pub fn file_count(&self, split: Split) -> usize {
        self.files.iter().filter(|f| f.split == split).count()
    }

    /// Sorts violations by file (in the order given to [`Dataset::read`]) and line. Problems of
    /// one line keep their order.
    pub fn sort_violations(&self, violations: &mut [Violation]) {
        let file_order: HashMap<&PathBuf, usize> = self.files.iter().enumerate().map(|(i, f)| (&f.path, i)).collect();
        violations.sort_by_key(|v| (file_order.get(&v.location.path).copied(), v.location.line));
    }
}

/// Returns the form under which two texts count as duplicates.
pub fn normalize_text(text: &str) -> String {
    text.trim().nfc().collect::<String>().to_lowercase()
}

/// Reports every id that an earlier line, in any file, already uses.
pub fn duplicate_ids(dataset: &Dataset) -> Vec<Violation> {
    let mut first_use: HashMap<&str, &Location> = HashMap::new();
    let mut violations = Vec::new();
    for record in &dataset.records {
        let Some(id) = record.id.as_deref() else { continue };
        match first_use.get(id) {
            Some(first) => violations.push(Violation {
                location: record.location.clone(),
                problem: Problem::in_field(
                    ProblemKind::DuplicateId,
                    "id",
                    format!(
                        "id `{id}` is already used at {first}: ids must be unique across training and evaluation files, so rename one"
                    ),
                ),
            }),
            None => {
                first_use.insert(id, &record.location);
            }
        }
    }
    violations
}

/// Reports texts repeated within the training files, within the evaluation files, and evaluation
/// texts that repeat a training text.
pub fn duplicate_texts(dataset: &Dataset) -> Vec<Violation> {
    let mut first_train: HashMap<String, &Location> = HashMap::new();
    let mut first_eval: HashMap<String, &Location> = HashMap::new();
    let mut violations = Vec::new();
    let mut report = |record: &Record, message: String| {
        violations.push(Violation {
            location: record.location.clone(),
            problem: Problem::in_field(ProblemKind::DuplicateText, "text", message),
        });
    };

    // Training lines first, so that an evaluation line can be matched against all of them.
    for record in dataset.records(Split::Train) {
        let Some(text) = record.text.as_deref() else { continue };
        let key = normalize_text(text);
        match first_train.get(&key) {
            Some(first) => report(record, format!("same text as {first} (ignoring case and surrounding spaces): remove or rewrite one of the two lines")),
            None => {
                first_train.insert(key, &record.location);
            }
        }
    }
    for record in dataset.records(Split::Eval) {
        let Some(text) = record.text.as_deref() else { continue };
        let key = normalize_text(text);
        if let Some(first) = first_eval.get(&key) {
            report(record, format!("same text as {first} (ignoring case and surrounding spaces): remove or rewrite one of the two lines"));
            continue;
        }
        if let Some(train) = first_train.get(&key) {
            report(record, format!("same text as the training line {train} (ignoring case and surrounding spaces): the evaluation set must not repeat training messages, so rewrite or remove this line"));
        }
        first_eval.insert(key, &record.location);
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(split: Split, path: &str, line: usize, id: &str, text: &str) -> Record {
        Record {
            split,
            location: Location { path: PathBuf::from(path), line },
            id: Some(id.to_string()),
            text: Some(text.to_string()),
            example: None,
        }
    }

    fn dataset(records: Vec<Record>) -> Dataset {
        Dataset { files: Vec::new(), records, line_violations: Vec::new() }
    }

    #[test]
    fn normalize_ignores_case_spaces_and_composition() {
        // "é" precomposed and as "e" + combining acute accent.
        assert_eq!(normalize_text("  Aide-moi SVP \n"), "aide-moi svp");
        assert_eq!(normalize_text("J'AI PEUR É"), normalize_text("j'ai peur e\u{301}"));
        assert_ne!(normalize_text("aide moi"), normalize_text("aide  moi"));
    }

    #[test]
    fn duplicate_id_names_first_use() {
        let data = dataset(vec![
            record(Split::Train, "a.jsonl", 1, "x", "un"),
            record(Split::Eval, "e.jsonl", 4, "x", "deux"),
        ]);
        let violations = duplicate_ids(&data);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].location.to_string(), "e.jsonl:4");
        assert!(violations[0].problem.message.contains("already used at a.jsonl:1"));
    }

    #[test]
    fn eval_text_repeating_train_is_reported_once() {
        let data = dataset(vec![
            record(Split::Train, "a.jsonl", 1, "a1", "Il recommence"),
            record(Split::Train, "a.jsonl", 2, "a2", "il recommence "),
            record(Split::Eval, "e.jsonl", 1, "e1", "IL RECOMMENCE"),
            record(Split::Eval, "e.jsonl", 2, "e2", "il recommence"),
        ]);
        let found: Vec<String> = duplicate_texts(&data).iter().map(|v| v.to_string()).collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("a.jsonl:2: field `text`: same text as a.jsonl:1"));
        assert!(found[1].starts_with("e.jsonl:1: field `text`: same text as the training line a.jsonl:1"));
        assert!(found[2].starts_with("e.jsonl:2: field `text`: same text as e.jsonl:1"));
    }
}
