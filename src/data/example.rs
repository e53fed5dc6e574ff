//! Labeled messages, one JSON object per line of a JSONL file.
//!
//! A line contains `id`, `text`, `categories` (1 to 3 category ids, `none` only alone), `intent`,
//! `urgency`, `speaker` and an optional `tags` list, and no other field. No key appears twice.
//! Every label must come from the scheme in [`taxonomy`](crate::triage::taxonomy).
//! [`check_line`] lists every problem of a line with the field it is in, so that a writer fixes
//! a file in one pass; [`parse_examples`] stops at the first one. A file that passes `data check`
//! therefore reads without error.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lines::{decode_lines, InvalidUtf8};
use super::problem::{Problem, ProblemKind};
use crate::json::{self, DuplicateKey, ParseError};
use crate::triage::taxonomy::{index_of, Label, CATEGORIES, INTENTS, NONE_CATEGORY, SPEAKERS, TAGS, URGENCIES};

/// The fields of a line, in the order of the format.
pub const FIELDS: [&str; 7] = ["id", "text", "categories", "intent", "urgency", "speaker", "tags"];

/// Maximum number of categories of one message.
pub const MAX_CATEGORIES: usize = 3;

/// One labeled message. Every label id is in the scheme once [`check_line`] accepts the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub categories: Vec<String>,
    pub intent: String,
    pub urgency: String,
    pub speaker: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Example {
    /// Number of whitespace-separated words, the unit of the eval's length slices.
    pub fn word_count(&self) -> usize {
        self.text.split_whitespace().count()
    }
}

/// Outcome of checking one line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckedLine {
    /// The example, present only when `problems` is empty.
    pub example: Option<Example>,
    /// The non-blank id, even when other fields are invalid, for the duplicate-id check.
    pub id: Option<String>,
    /// The non-blank text, even when other fields are invalid, for the duplicate-text checks.
    pub text: Option<String>,
    pub problems: Vec<Problem>,
}

/// Checks one line against the format and the scheme.
pub fn check_line(line: &str) -> CheckedLine {
    let mut checked = CheckedLine::default();
    if line.trim().is_empty() {
        checked.problems.push(Problem::in_line(ProblemKind::InvalidJson, "blank line: remove it"));
        return checked;
    }
    // A line that does not parse gets this one problem, because its fields cannot be read.
    let value: Value = match json::from_str(line) {
        Ok(value) => value,
        Err(ParseError::Syntax(error)) => {
            checked.problems.push(json_problem(&error));
            return checked;
        }
        Err(ParseError::DuplicateKey(duplicate)) => {
            checked.problems.push(duplicate_key_problem(&duplicate));
            return checked;
        }
    };
    let Value::Object(object) = value else {
        let message = format!("expected a JSON object, found {}: write one example object per line", type_name(&value));
        checked.problems.push(Problem::in_line(ProblemKind::Schema, message));
        return checked;
    };

    let mut fields = FieldChecker { object: &object, problems: Vec::new() };
    fields.reject_unknown_fields();
    let id = fields.required_string("id");
    let text = fields.required_string("text");
    let categories = fields.string_list("categories", Presence::Required);
    if let Some(categories) = &categories {
        fields.check_categories(categories);
    }
    let intent = fields.required_string("intent").filter(|v| fields.known_label("intent", v, &INTENTS));
    let urgency = fields.required_string("urgency").filter(|v| fields.known_label("urgency", v, &URGENCIES));
    let speaker = fields.required_string("speaker").filter(|v| fields.known_label("speaker", v, &SPEAKERS));
    let tags = fields.string_list("tags", Presence::Optional);
    if let Some(tags) = &tags {
        fields.check_tags(tags);
    }
    checked.problems = fields.problems;
    checked.id = id.filter(|id| !id.trim().is_empty());
    checked.text = text.filter(|text| !text.trim().is_empty());

    if checked.problems.is_empty() {
        if let (Some(id), Some(text), Some(categories), Some(intent), Some(urgency), Some(speaker)) =
            (&checked.id, &checked.text, categories, intent, urgency, speaker)
        {
            checked.example = Some(Example {
                id: id.clone(),
                text: text.clone(),
                categories,
                intent,
                urgency,
                speaker,
                tags: tags.unwrap_or_default(),
            });
        }
    }
    checked
}

/// Checks one line as [`decode_lines`] returns it. A line that is not UTF-8 gets one problem of
/// kind [`ProblemKind::InvalidJson`], because JSON text must be UTF-8 (RFC 8259, section 8.1).
pub fn check_decoded_line(line: Result<&str, InvalidUtf8>) -> CheckedLine {
    match line {
        Ok(line) => check_line(line),
        Err(error) => CheckedLine {
            problems: vec![Problem::in_line(ProblemKind::InvalidJson, format!("{error}: save the file as UTF-8"))],
            ..CheckedLine::default()
        },
    }
}

/// Parses the bytes of the JSONL file at `path` into examples, and fails at the first invalid
/// line, naming the file, the line and the field. The caller reads the file, so that it can
/// also hash the same bytes. Cross-line checks (duplicate ids and texts) are `data check`'s job.
pub fn parse_examples(path: &Path, bytes: &[u8]) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (number, line) in decode_lines(bytes) {
        let checked = check_decoded_line(line);
        if let Some(problem) = checked.problems.first() {
            bail!("{}:{number}: {problem}", path.display());
        }
        examples.extend(checked.example);
    }
    Ok(examples)
}

fn json_problem(error: &serde_json::Error) -> Problem {
    Problem::in_line(
        ProblemKind::InvalidJson,
        format!(
            "invalid JSON at column {}: {}: write one complete JSON object per line, with no line break inside",
            error.column(),
            json_syntax_reason(error)
        ),
    )
}

fn duplicate_key_problem(duplicate: &DuplicateKey) -> Problem {
    Problem::in_line(ProblemKind::Schema, format!("{}: remove one of them", duplicate.describe(&FIELDS)))
}

/// Returns serde_json's reason for a syntax error in one JSONL line. serde_json ends its message
/// with "at line 1 column N", and within one line only the column means something.
pub(crate) fn json_syntax_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    message.rsplit_once(" at line ").map_or(message.clone(), |(reason, _)| reason.to_string())
}

/// Returns the JSON type of a value with its article, as error messages name it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn label_ids(labels: &[Label]) -> String {
    labels.iter().map(|l| l.id).collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}

/// Checks the fields of one parsed line and collects their problems.
struct FieldChecker<'a> {
    object: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

/// Tells whether a key or label value reads as an identifier (at most 40 lower-case ASCII
/// letters, digits, `_` or `-`), which error messages may print. Anything else may be message
/// text pasted in the wrong place, so messages give its length instead.
fn looks_like_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 40
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Returns `value` in backquotes when it looks like a name, or else its length.
fn shown(value: &str) -> String {
    if looks_like_name(value) {
        format!("`{value}`")
    } else {
        format!("a value of {} characters", value.chars().count())
    }
}

impl FieldChecker<'_> {
    fn push(&mut self, kind: ProblemKind, field: &str, message: String) {
        self.problems.push(Problem::in_field(kind, field, message));
    }

    fn reject_unknown_fields(&mut self) {
        let unknown: Vec<String> = self.object.keys().filter(|k| !FIELDS.contains(&k.as_str())).cloned().collect();
        for field in unknown {
            let hint = format!("the fields are {}, so fix its spelling or remove it", FIELDS.join(", "));
            if looks_like_name(&field) {
                self.push(ProblemKind::Schema, &field, format!("unknown field: {hint}"));
            } else {
                // A key that is not name-like may be a pasted message, so it is not printed.
                let message = format!("unknown field whose key is not a field name ({} characters): {hint}", field.chars().count());
                self.problems.push(Problem::in_line(ProblemKind::Schema, message));
            }
        }
    }

    /// Returns the field's string, or records why it is missing, mistyped or empty.
    fn required_string(&mut self, field: &str) -> Option<String> {
        match self.object.get(field) {
            None => {
                let message = format!("missing: add it, because every line needs {}", FIELDS[..6].join(", "));
                self.push(ProblemKind::Schema, field, message);
                None
            }
            Some(Value::String(value)) if value.trim().is_empty() => {
                let message = match field {
                    "id" => "empty: give the example an id that no other line uses".to_string(),
                    "text" => "empty: write the message, or remove the line".to_string(),
                    _ => format!("empty: give the {field} id"),
                };
                self.push(ProblemKind::Schema, field, message);
                Some(value.clone())
            }
            Some(Value::String(value)) => Some(value.clone()),
            Some(other) => {
                let message = format!("expected a string, found {}", type_name(other));
                self.push(ProblemKind::Schema, field, message);
                None
            }
        }
    }

    /// Returns the field's list of strings, or records why it is missing or mistyped.
    fn string_list(&mut self, field: &str, presence: Presence) -> Option<Vec<String>> {
        let items = match self.object.get(field) {
            None if presence == Presence::Optional => return None,
            None => {
                self.push(ProblemKind::Schema, field, "missing: give a list of 1 to 3 category ids".to_string());
                return None;
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                let hint = match presence {
                    Presence::Required => "such as [\"harassment\"]",
                    Presence::Optional => "such as [\"sms\"], or omit the field",
                };
                let message = format!("expected a list of strings {hint}, found {}", type_name(other));
                self.push(ProblemKind::Schema, field, message);
                return None;
            }
        };
        let mut strings = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            match item {
                Value::String(value) => strings.push(value.clone()),
                other => {
                    let message = format!("item {} is {}: every item must be a string", position + 1, type_name(other));
                    self.push(ProblemKind::Schema, field, message);
                }
            }
        }
        (strings.len() == items.len()).then_some(strings)
    }

    /// Returns whether `value` is an id of `labels`, and records the problem when it is not.
    fn known_label(&mut self, field: &str, value: &str, labels: &[Label]) -> bool {
        if index_of(labels, value).is_some() {
            return true;
        }
        // `required_string` has already reported an empty value.
        if !value.trim().is_empty() {
            let message = format!("{} is not a valid {field}: use one of {}", shown(value), label_ids(labels));
            self.push(ProblemKind::UnknownLabel, field, message);
        }
        false
    }

    fn check_categories(&mut self, categories: &[String]) {
        const FIELD: &str = "categories";
        if categories.is_empty() {
            let message = "empty list: give 1 to 3 categories, or [\"none\"] when the message raises no concern";
            self.push(ProblemKind::CategoryList, FIELD, message.to_string());
            return;
        }
        for (position, category) in categories.iter().enumerate() {
            if index_of(&CATEGORIES, category).is_none() {
                let message = format!("{} is not a valid category: use one of {}", shown(category), label_ids(&CATEGORIES));
                self.push(ProblemKind::UnknownLabel, FIELD, message);
            } else if categories[..position].contains(category) {
                let message = format!("`{category}` is listed twice: list each category once");
                self.push(ProblemKind::CategoryList, FIELD, message);
            }
        }
        if categories.len() > 1 && categories.iter().any(|c| c == NONE_CATEGORY) {
            let others: Vec<String> = categories.iter().filter(|c| *c != NONE_CATEGORY).map(|c| shown(c)).collect();
            let message = format!(
                "`{NONE_CATEGORY}` is listed with {}, but `{NONE_CATEGORY}` stands alone: keep either `{NONE_CATEGORY}` or the other categories",
                others.join(", ")
            );
            self.push(ProblemKind::CategoryList, FIELD, message);
        }
        if categories.len() > MAX_CATEGORIES {
            let message =
                format!("{} categories listed: keep the {MAX_CATEGORIES} main concerns at most", categories.len());
            self.push(ProblemKind::CategoryList, FIELD, message);
        }
    }

    fn check_tags(&mut self, tags: &[String]) {
        for (position, tag) in tags.iter().enumerate() {
            if !TAGS.contains(&tag.as_str()) {
                let message = format!("{} is not a valid tag: use one of {}", shown(tag), TAGS.join(", "));
                self.push(ProblemKind::UnknownLabel, "tags", message);
            } else if tags[..position].contains(tag) {
                let message = format!("`{tag}` is listed twice: list each tag once");
                self.push(ProblemKind::UnknownLabel, "tags", message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"id":"t-1","text":"ils m'insultent sur snap","categories":["harassment"],"intent":"seek_help","urgency":"medium","speaker":"young_person","tags":["sms"]}"#;

    fn fields_at_fault(line: &str) -> Vec<Option<String>> {
        check_line(line).problems.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn valid_line_gives_example() {
        let checked = check_line(VALID);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        let example = checked.example.expect("example");
        assert_eq!(example.categories, ["harassment"]);
        assert_eq!(example.tags, ["sms"]);
    }

    #[test]
    fn tags_are_optional() {
        let line = VALID.replace(r#","tags":["sms"]"#, "");
        let example = check_line(&line).example.expect("example");
        assert!(example.tags.is_empty());
    }

    #[test]
    fn every_problem_of_a_line_is_listed() {
        let line = r#"{"id":"","text":"x","categories":["none","scam"],"intent":3,"urgency":"urgent","speaker":"parent","extra":1}"#;
        let fields = fields_at_fault(line);
        for field in ["extra", "id", "intent", "urgency", "categories"] {
            assert!(fields.contains(&Some(field.to_string())), "{field} missing from {fields:?}");
        }
        assert!(check_line(line).example.is_none());
    }

    #[test]
    fn sentence_like_keys_and_labels_are_not_printed() {
        let sentence = "ma soeur se scarifie";
        let cases = [
            VALID.replace(r#""tags""#, &format!(r#""{sentence}":1,"tags""#)),
            VALID.replace(r#"["harassment"]"#, &format!(r#"["{sentence}"]"#)),
            VALID.replace(r#""medium""#, &format!(r#""{sentence}""#)),
            VALID.replace(r#"["sms"]"#, &format!(r#"["{sentence}"]"#)),
            VALID.replace(r#"["harassment"]"#, &format!(r#"["none","{sentence}"]"#)),
        ];
        for line in cases {
            let problems = check_line(&line).problems;
            assert!(!problems.is_empty(), "no problem found in {line}");
            for problem in problems {
                assert!(!problem.to_string().contains(sentence), "printed: {problem}");
            }
        }
        let named = check_line(&VALID.replace(r#""tags""#, r#""extra_field":1,"tags""#)).problems;
        assert_eq!(named[0].field.as_deref(), Some("extra_field"), "a name-like key is still named");
        let label = check_line(&VALID.replace("medium", "urgent")).problems;
        assert!(label[0].message.starts_with("`urgent` is not a valid urgency"), "{}", label[0].message);
    }

    #[test]
    fn id_and_text_survive_label_errors() {
        let checked = check_line(&VALID.replace("medium", "urgent"));
        assert_eq!(checked.id.as_deref(), Some("t-1"));
        assert_eq!(checked.text.as_deref(), Some("ils m'insultent sur snap"));
        assert!(checked.example.is_none());
    }

    #[test]
    fn invalid_utf8_line_is_one_problem() {
        let checked = check_decoded_line(Err(InvalidUtf8 { byte: 12 }));
        assert_eq!(checked.problems.len(), 1);
        assert_eq!(checked.problems[0].kind, ProblemKind::InvalidJson);
        assert_eq!(checked.problems[0].to_string(), "invalid UTF-8 at byte 12 of the line: save the file as UTF-8");
        assert!(checked.id.is_none());
        assert!(checked.example.is_none());
    }

    #[test]
    fn training_reader_skips_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, format!("\u{FEFF}{VALID}\r\n{}\r\n", VALID.replace("t-1", "t-2"))).unwrap();
        let examples = parse_examples(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].id, "t-1");
        assert_eq!(examples[1].id, "t-2");
    }

    #[test]
    fn training_reader_rejects_invalid_utf8_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        // Line 2 has the id `t-é` with "é" in Latin-1, the single byte 0xE9, which is not UTF-8.
        let mut bytes = format!("{VALID}\n").into_bytes();
        bytes.extend_from_slice(&VALID.as_bytes()[..9]);
        bytes.push(0xE9);
        bytes.extend_from_slice(&VALID.as_bytes()[10..]);
        std::fs::write(&path, bytes).unwrap();
        let error = parse_examples(&path, &std::fs::read(&path).unwrap()).unwrap_err().to_string();
        let expected = format!("{}:2: invalid UTF-8 at byte 10 of the line: save the file as UTF-8", path.display());
        assert_eq!(error, expected);
    }

    #[test]
    fn invalid_json_names_the_column() {
        let problems = check_line(r#"{"id": "a",}"#).problems;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::InvalidJson);
        assert!(problems[0].message.starts_with("invalid JSON at column 12: "), "{}", problems[0].message);
    }

    #[test]
    fn repeated_key_is_one_problem() {
        let line = VALID.replacen('{', r#"{"urgency":"critical","#, 1);
        let checked = check_line(&line);
        assert!(checked.example.is_none());
        assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
        assert_eq!(checked.problems[0].kind, ProblemKind::Schema);
        let message = &checked.problems[0].message;
        assert!(message.starts_with("field `urgency` appears twice (the second ends at column "), "{message}");
        assert!(message.ends_with(": remove one of them"), "{message}");

        // A repeated key that is not a field name may be message text, so it is not quoted.
        let line = VALID.replacen('{', r#"{"il me suit partout":1,"il me suit partout":2,"#, 1);
        let message = &check_line(&line).problems[0].message;
        assert!(message.starts_with("a key appears twice in one object"), "{message}");
        assert!(!message.contains("suit"), "{message}");
    }

    #[test]
    fn serde_agrees_with_check_line() {
        let example: Example = serde_json::from_str(VALID).unwrap();
        assert_eq!(Some(example), check_line(VALID).example);
    }
}
