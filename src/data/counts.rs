//! Label counts of the training and evaluation sets, printed as Markdown tables for the
//! annotation guide. Every label of the scheme has a row, so a label with no example shows 0.

use std::fmt::Write;

use super::example::Example;
use crate::triage::taxonomy::{index_of, Label, CATEGORIES, INTENTS, SPEAKERS, TAGS, URGENCIES};

/// Counts of one set of valid examples, indexed like the scheme's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCounts {
    pub examples: usize,
    /// Examples per category; an example with several categories counts in each.
    pub categories: [usize; CATEGORIES.len()],
    pub intents: [usize; INTENTS.len()],
    pub urgencies: [usize; URGENCIES.len()],
    pub speakers: [usize; SPEAKERS.len()],
    pub tags: [usize; TAGS.len()],
    /// Examples without any tag.
    pub untagged: usize,
}

impl LabelCounts {
    /// Counts examples that passed the line checks; labels outside the scheme are not counted.
    pub fn count<'a>(examples: impl IntoIterator<Item = &'a Example>) -> LabelCounts {
        let mut counts = LabelCounts {
            examples: 0,
            categories: [0; CATEGORIES.len()],
            intents: [0; INTENTS.len()],
            urgencies: [0; URGENCIES.len()],
            speakers: [0; SPEAKERS.len()],
            tags: [0; TAGS.len()],
            untagged: 0,
        };
        for example in examples {
            counts.examples += 1;
            for category in &example.categories {
                increment(&mut counts.categories, index_of(&CATEGORIES, category));
            }
            increment(&mut counts.intents, index_of(&INTENTS, &example.intent));
            increment(&mut counts.urgencies, index_of(&URGENCIES, &example.urgency));
            increment(&mut counts.speakers, index_of(&SPEAKERS, &example.speaker));
            for tag in &example.tags {
                increment(&mut counts.tags, TAGS.iter().position(|t| t == tag));
            }
            if example.tags.is_empty() {
                counts.untagged += 1;
            }
        }
        counts
    }
}

fn increment(counts: &mut [usize], index: Option<usize>) {
    if let Some(index) = index {
        counts[index] += 1;
    }
}

/// Writes one table per label list (categories, intent, urgency, speaker) and one for tags,
/// with a training and an evaluation column each.
pub fn markdown_tables(train: &LabelCounts, eval: &LabelCounts) -> String {
    let examples = (train.examples, eval.examples);
    let mut out = String::from(
        "Counts cover the lines that pass every line check. A message with several categories counts once in each.\n",
    );
    let categories = label_rows(&CATEGORIES, &train.categories, &eval.categories);
    write_table(&mut out, "Categories", "category | label", &categories, examples);
    let intents = label_rows(&INTENTS, &train.intents, &eval.intents);
    write_table(&mut out, "Intent", "intent | label", &intents, examples);
    let urgencies = label_rows(&URGENCIES, &train.urgencies, &eval.urgencies);
    write_table(&mut out, "Urgency", "urgency | label", &urgencies, examples);
    let speakers = label_rows(&SPEAKERS, &train.speakers, &eval.speakers);
    write_table(&mut out, "Speaker", "speaker | label", &speakers, examples);

    let mut rows: Vec<(String, usize, usize)> =
        TAGS.iter().enumerate().map(|(i, tag)| (format!("`{tag}`"), train.tags[i], eval.tags[i])).collect();
    rows.push(("(no tag)".to_string(), train.untagged, eval.untagged));
    write_table(&mut out, "Tags", "tag", &rows, examples);
    out
}

fn label_rows(labels: &[Label], train: &[usize], eval: &[usize]) -> Vec<(String, usize, usize)> {
    labels
        .iter()
        .enumerate()
        .map(|(i, label)| (format!("`{}` | {}", label.id, label.label), train[i], eval[i]))
        .collect()
}

/// Writes a Markdown table whose rows end with a training and an evaluation count, followed by
/// the number of examples. `columns` and each row name contain the leading cells, joined by ` | `.
fn write_table(
    out: &mut String,
    title: &str,
    columns: &str,
    rows: &[(String, usize, usize)],
    examples: (usize, usize),
) {
    let leading = columns.matches(" | ").count() + 1;
    let _ = write!(out, "\n### {title}\n\n| {columns} | train | eval |\n|{}", " --- |".repeat(leading));
    let _ = writeln!(out, " ---: | ---: |");
    for (name, train, eval) in rows {
        let _ = writeln!(out, "| {name} | {train} | {eval} |");
    }
    let padding = " |".repeat(leading - 1);
    let _ = writeln!(out, "| **examples** |{padding} **{}** | **{}** |", examples.0, examples.1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(categories: &[&str], tags: &[&str]) -> Example {
        Example {
            id: "t".into(),
            text: "x".into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            intent: "seek_help".into(),
            urgency: "high".into(),
            speaker: "parent".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn counts_each_category_and_tag() {
        let examples = [example(&["harassment", "hate_speech"], &["multi"]), example(&["harassment"], &[])];
        let counts = LabelCounts::count(&examples);
        assert_eq!(counts.examples, 2);
        assert_eq!(counts.categories[index_of(&CATEGORIES, "harassment").unwrap()], 2);
        assert_eq!(counts.categories[index_of(&CATEGORIES, "hate_speech").unwrap()], 1);
        assert_eq!(counts.urgencies[index_of(&URGENCIES, "high").unwrap()], 2);
        assert_eq!(counts.tags[TAGS.iter().position(|t| *t == "multi").unwrap()], 1);
        assert_eq!(counts.untagged, 1);
    }

    #[test]
    fn tables_list_every_label() {
        let counts = LabelCounts::count(&[example(&["scam"], &["sms"])]);
        let tables = markdown_tables(&counts, &LabelCounts::count(&[]));
        assert!(tables.contains("| `scam` | Arnaque / escroquerie | 1 | 0 |"), "{tables}");
        assert!(tables.contains("| `grooming` | Pédopiégeage / exploitation sexuelle | 0 | 0 |"));
        assert!(tables.contains("| `sms` | 1 | 0 |"));
        assert!(tables.contains("| **examples** | | **1** | **0** |"), "{tables}");
        assert!(tables.contains("| **examples** | **1** | **0** |"), "{tables}");
    }
}
