//! The message mix of the benchmarks: invented French helpline messages in
//! `benches/messages.jsonl`, compiled into the binary so that `cybertriage bench` works from
//! any directory.
//!
//! Each line is `{"id", "kind", "text", "context"?}`. `kind` is `short` (a chat line, about 10
//! to 30 tokens), `paragraph` (75 to 270 tokens) or `long` (more than 512 tokens, so the
//! classifier reads it as several windows). The file's proportions are the load benchmark's
//! mix. Errors name the line, never its text.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::triage::classifier::MessageInput;

/// The committed mix, `benches/messages.jsonl`.
pub const DEFAULT_MESSAGES: &str = include_str!("../../../benches/messages.jsonl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Short,
    Paragraph,
    Long,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Short, Kind::Paragraph, Kind::Long];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Paragraph => "paragraph",
            Kind::Long => "long",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchMessage {
    pub id: String,
    pub kind: Kind,
    pub text: String,
    /// Earlier messages from the same person, oldest first.
    #[serde(default)]
    pub context: Vec<String>,
}

/// Body of `POST /v1/classify`. `context` is left out when empty.
#[derive(Serialize)]
struct ClassifyBody<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    context: &'a [String],
}

impl BenchMessage {
    pub fn input(&self) -> MessageInput {
        MessageInput { text: self.text.clone(), context: self.context.clone() }
    }

    /// JSON body of `POST /v1/classify` for this message.
    pub fn classify_body(&self) -> Vec<u8> {
        serde_json::to_vec(&ClassifyBody { text: &self.text, context: &self.context })
            .expect("a struct of strings always serialises")
    }
}

/// Parses JSONL text, skipping blank lines.
pub fn parse(text: &str) -> Result<Vec<BenchMessage>> {
    let mut messages = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let message: BenchMessage = serde_json::from_str(line).map_err(|error| {
            // serde's message can quote the offending value, so only its position is kept.
            anyhow::anyhow!(
                "line {}: expected {{\"id\", \"kind\": \"short\"|\"paragraph\"|\"long\", \"text\", \"context\"?}} \
                 (column {})",
                index + 1,
                error.column()
            )
        })?;
        if message.text.trim().is_empty() {
            bail!("line {}: `text` is empty", index + 1);
        }
        messages.push(message);
    }
    if messages.is_empty() {
        bail!("no messages: the file has no JSON line");
    }
    Ok(messages)
}

/// Reads `path`, or the committed mix when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Vec<BenchMessage>> {
    match path {
        None => parse(DEFAULT_MESSAGES).context("benches/messages.jsonl (compiled in) is invalid"),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
            parse(&text).with_context(|| format!("{} is invalid", path.display()))
        }
    }
}

/// Messages of one kind without context, in file order.
pub fn plain_of_kind(messages: &[BenchMessage], kind: Kind) -> Vec<&BenchMessage> {
    messages.iter().filter(|m| m.kind == kind && m.context.is_empty()).collect()
}

/// Returns the fixed single message of the benchmarks: the first short message without context.
pub fn single(messages: &[BenchMessage]) -> Result<&BenchMessage> {
    plain_of_kind(messages, Kind::Short).into_iter().next().context("the mix has no short message without context")
}

/// Builds a batch of `size` messages without context: a quarter paragraphs, the rest short
/// messages, each list taken in file order and repeated if too short. Long messages are left
/// out, because they are windowed rather than read as one sequence. `benches/peer/compare.py` builds the
/// same batch.
pub fn mixed_batch(messages: &[BenchMessage], size: usize) -> Result<Vec<&BenchMessage>> {
    let shorts = plain_of_kind(messages, Kind::Short);
    let paragraphs = plain_of_kind(messages, Kind::Paragraph);
    if shorts.is_empty() || paragraphs.is_empty() {
        bail!("the mix needs short and paragraph messages without context");
    }
    let paragraph_count = size / 4;
    let mut batch: Vec<&BenchMessage> = paragraphs.iter().cycle().take(paragraph_count).copied().collect();
    batch.extend(shorts.iter().cycle().take(size - paragraph_count).copied());
    Ok(batch)
}

/// Number of messages of each kind.
pub fn counts(messages: &[BenchMessage]) -> Vec<(Kind, usize)> {
    Kind::ALL.iter().map(|&kind| (kind, messages.iter().filter(|m| m.kind == kind).count())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_mix_has_every_kind() {
        let messages = load(None).unwrap();
        for (kind, count) in counts(&messages) {
            assert!(count > 0, "no {} message", kind.name());
        }
        assert!(single(&messages).unwrap().kind == Kind::Short);
    }

    #[test]
    fn mixed_batch_is_a_quarter_paragraphs() {
        let messages = load(None).unwrap();
        let batch = mixed_batch(&messages, 32).unwrap();
        assert_eq!(batch.len(), 32);
        assert_eq!(batch.iter().filter(|m| m.kind == Kind::Paragraph).count(), 8);
        assert!(batch.iter().all(|m| m.kind != Kind::Long && m.context.is_empty()));
    }

    #[test]
    fn parse_error_names_the_line_not_the_text() {
        let error = parse("{\"id\": \"a\", \"kind\": \"short\", \"text\": \"x\"}\n{\"id\": \"b\", \"kind\": \"huge\", \"text\": \"secret words\"}")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("line 2:"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn body_leaves_out_empty_context() {
        let message = BenchMessage { id: "a".into(), kind: Kind::Short, text: "salut".into(), context: vec![] };
        assert_eq!(message.classify_body(), br#"{"text":"salut"}"#);
        let with_context = BenchMessage { context: vec!["avant".into()], ..message };
        assert_eq!(with_context.classify_body(), br#"{"text":"salut","context":["avant"]}"#);
    }
}
