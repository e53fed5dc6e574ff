//! Labeled examples of the evaluation set, read from JSONL.
//!
//! The format is that of the training data ([`crate::data::example`]): one object per line with
//! `id`, `text`, `categories`, `intent`, `urgency`, `speaker` and optional `tags`, every label
//! from the scheme in [`taxonomy`](crate::triage::taxonomy). The metrics index label lists by
//! position, so a line is checked before it is used. Unlike `data check`, the reader skips blank
//! lines. Errors name the line, the field and the example id, never the text.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub use crate::data::example::Example;
use crate::data::example::check_decoded_line;
use crate::data::lines::decode_lines;

/// Reads and checks a JSONL file. Blank lines are skipped, and ids must be unique.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let mut examples = Vec::new();
    let mut seen = HashSet::new();
    for (number, line) in decode_lines(&bytes) {
        if line.is_ok_and(|line| line.trim().is_empty()) {
            continue;
        }
        let checked = check_decoded_line(line);
        if let Some(problem) = checked.problems.first() {
            match &checked.id {
                Some(id) => bail!("{}:{number}: example `{id}`: {problem}", path.display()),
                None => bail!("{}:{number}: {problem}", path.display()),
            }
        }
        let Some(example) = checked.example else { continue };
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
        assert!(error.contains(":2: example `b`: field `text`"), "{error}");
    }

    #[test]
    fn read_examples_skips_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.jsonl");
        let line = r#"{"id":"a","text":"x","categories":["none"],"intent":"greeting","urgency":"low","speaker":"other"}"#;
        std::fs::write(&path, format!("\u{FEFF}{line}\r\n")).unwrap();
        let examples = read_examples(&path).unwrap();
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0].id, "a");
    }

    #[test]
    fn read_examples_names_invalid_utf8_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.jsonl");
        let line = r#"{"id":"a","text":"x","categories":["none"],"intent":"greeting","urgency":"low","speaker":"other"}"#;
        // The blank line 2 is skipped but counted. Line 3 has "é" in Latin-1 (0xE9) in its text.
        let mut bytes = format!("{line}\n\n").into_bytes();
        bytes.extend_from_slice(b"{\"id\":\"b\",\"text\":\"d\xe9j\xe0 vu\"}\n");
        std::fs::write(&path, bytes).unwrap();
        let error = read_examples(&path).unwrap_err().to_string();
        let expected = format!("{}:3: invalid UTF-8 at byte 20 of the line: save the file as UTF-8", path.display());
        assert_eq!(error, expected);
    }

    #[test]
    fn read_examples_rejects_invalid_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.jsonl");
        for (categories, intent, field) in [
            (r#"["bullying"]"#, "seek_help", "categories"),
            (r#"["none","scam"]"#, "seek_help", "categories"),
            (r#"["scam"]"#, "chat", "intent"),
            ("[]", "advice", "categories"),
        ] {
            let line = format!(
                r#"{{"id":"t-1","text":"un message inventé","categories":{categories},"intent":"{intent}","urgency":"low","speaker":"parent"}}"#
            );
            std::fs::write(&path, line).unwrap();
            let error = read_examples(&path).unwrap_err().to_string();
            assert!(error.contains(&format!("field `{field}`")), "{categories} {intent}: {error}");
        }
    }
}
