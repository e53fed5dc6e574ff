use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::data::example::{json_syntax_reason, type_name};
use crate::data::lines::decode_line;
use crate::json::{self, ParseError};
use crate::triage::classifier::{default_model_dir, Classifier, Classify, MessageInput};
use crate::triage::classification::Classification;
use crate::triage::normalize::normalize;

/// Default of `--max-chars`: an estimated 10 to 12 encoder windows of French prose, five times
/// the HTTP default, because the command line reads files that data staff prepared.
const DEFAULT_MAX_CHARS: usize = 20_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Message to classify; the result is pretty-printed. Omit it with --jsonl.
    pub message: Option<String>,

    /// Earlier messages from the same person, oldest first (repeatable; single-message mode only).
    #[arg(long)]
    pub context: Vec<String>,

    /// Read `{"text", "context"?, "id"?}` lines on stdin and write one compact JSON result per
    /// line, in order. An `id` is copied into its result. Stdin must be UTF-8, and a UTF-8
    /// byte-order mark at its start is skipped.
    #[arg(long)]
    pub jsonl: bool,

    /// Maximum characters of a message or of one context entry. A longer one stops the run
    /// with an error, before any encoder work, because the encoder reads every 512-token window
    /// of a text: a 5 MB line took minutes and hundreds of MB of memory.
    #[arg(long, env = "CYBERTRIAGE_CLI_MAX_CHARS", default_value_t = DEFAULT_MAX_CHARS)]
    pub max_chars: usize,

    /// Number of messages that go through the encoder at once.
    #[arg(long, env = "CYBERTRIAGE_BATCH_SIZE", default_value_t = 32)]
    pub batch_size: usize,

    /// Classifier model folder. Defaults to models/cybertriage-fr.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model_dir = args.model_dir.clone().unwrap_or_else(|| default_model_dir(models_dir));
    let classifier = Classifier::load(models_dir, &model_dir)?.with_batch_size(args.batch_size);

    if args.jsonl {
        if args.message.is_some() {
            bail!("pass either a message or --jsonl, not both");
        }
        if !args.context.is_empty() {
            bail!("--context applies to a single message; with --jsonl, put a \"context\" list in each line");
        }
        return classify_jsonl(&classifier, args.batch_size, args.max_chars);
    }
    let Some(text) = args.message else {
        bail!("no message given: pass one as an argument, or use --jsonl to read stdin");
    };
    let input = MessageInput { text, context: args.context };
    if let Some(reason) = over_max_chars(&input, args.max_chars) {
        bail!("{reason}");
    }
    let result = classifier.classify(std::slice::from_ref(&input)).map_err(anyhow::Error::from)?;
    let mut out = std::io::stdout().lock();
    // A reader that closes the pipe early (`| head`) is not an error.
    match writeln!(out, "{}", serde_json::to_string_pretty(&result[0])?) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        written => {
            written.context("failed to write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The fields of a `--jsonl` input line.
const JSONL_FIELDS: [&str; 3] = ["id", "text", "context"];

/// One `--jsonl` input line: the message, and an optional id copied into its result so that
/// callers can join results back to their records.
#[derive(Debug)]
struct JsonlLine {
    id: Option<serde_json::Value>,
    text: String,
    context: Vec<String>,
}

impl JsonlLine {
    /// Parses a line. Error messages name the field and the JSON type found, never a value,
    /// because the values are message text.
    fn parse(line: &str) -> std::result::Result<Self, String> {
        use serde_json::Value;
        let value: Value = json::from_str(line).map_err(|error| match error {
            // A syntax error's message names the position and the expected token, not the text.
            ParseError::Syntax(error) => {
                format!("invalid JSON at column {}: {}", error.column(), json_syntax_reason(&error))
            }
            ParseError::DuplicateKey(duplicate) => format!("{}: remove one of them", duplicate.describe(&JSONL_FIELDS)),
        })?;
        let Value::Object(mut object) = value else {
            return Err(format!("expected a JSON object, found {}", type_name(&value)));
        };
        // The unknown key is not quoted: a mistaken line may have message text as a key.
        if object.keys().any(|key| !JSONL_FIELDS.contains(&key.as_str())) {
            return Err("unknown field: a line may only have `text`, `context` and `id`".to_string());
        }
        let text = match object.remove("text") {
            Some(Value::String(text)) => text,
            Some(other) => return Err(format!("`text` must be a string, found {}", type_name(&other))),
            None => return Err("missing field `text`".to_string()),
        };
        // `null` is the same as no context, as in the HTTP API.
        let context = match object.remove("context") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries
                .into_iter()
                .enumerate()
                .map(|(index, entry)| match entry {
                    Value::String(entry) => Ok(entry),
                    other => Err(format!("`context[{index}]` must be a string, found {}", type_name(&other))),
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(other) => return Err(format!("`context` must be a list of strings, found {}", type_name(&other))),
        };
        Ok(JsonlLine { id: object.remove("id"), text, context })
    }
}

/// Reads every `--jsonl` input line and returns the ids and the inputs, in line order. Blank
/// lines are skipped. The first invalid line stops the reading with an error that names it.
fn read_jsonl(mut reader: impl BufRead, max_chars: usize) -> Result<(Vec<Option<serde_json::Value>>, Vec<MessageInput>)> {
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).context("failed to read stdin")? == 0 {
            break;
        }
        let line = decode_line(&bytes, number)
            .map_err(|error| anyhow::anyhow!("stdin line {number}: {error}: encode the input as UTF-8"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = JsonlLine::parse(line).map_err(|reason| {
            anyhow::anyhow!("stdin line {number}: {reason}. Each line must be a JSON object {{\"text\", \"context\"?, \"id\"?}}")
        })?;
        if normalize(&parsed.text).is_empty() {
            bail!(
                "stdin line {number}: invalid input: `text` is empty or only whitespace and invisible characters; give \
                 the message or remove the line"
            );
        }
        let input = MessageInput { text: parsed.text, context: parsed.context };
        if let Some(reason) = over_max_chars(&input, max_chars) {
            bail!("stdin line {number}: {reason}");
        }
        ids.push(parsed.id);
        inputs.push(input);
    }
    Ok((ids, inputs))
}

/// Returns why `input` is over `--max-chars`, naming the field and its length, or `None`.
///
/// NOTE: this counts the raw characters, while HTTP's `--max-chars` counts them after
/// normalisation, so a text padded with invisible characters can pass HTTP and fail here.
fn over_max_chars(input: &MessageInput, max_chars: usize) -> Option<String> {
    // `None` stands for `text`, `Some(i)` for `context[i]`.
    let fields = std::iter::once((None, &input.text)).chain(input.context.iter().enumerate().map(|(i, entry)| (Some(i), entry)));
    for (position, value) in fields {
        let chars = value.chars().count();
        if chars > max_chars {
            let field = position.map_or("`text`".to_string(), |i| format!("`context[{i}]`"));
            return Some(format!(
                "{field} has {chars} characters, over --max-chars {max_chars}: shorten it, split it, or raise --max-chars"
            ));
        }
    }
    None
}

/// One `--jsonl` output line: the input's id, when given, then the classification's fields in
/// the order and number format of the HTTP response.
#[derive(serde::Serialize)]
struct JsonlResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    #[serde(flatten)]
    result: &'a Classification,
}

fn classify_jsonl(classifier: &Classifier, batch_size: usize, max_chars: usize) -> Result<ExitCode> {
    let (ids, inputs) = read_jsonl(std::io::stdin().lock(), max_chars)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (chunk, chunk_ids) in inputs.chunks(batch_size).zip(ids.chunks(batch_size)) {
        for (result, id) in classifier.classify(chunk).map_err(anyhow::Error::from)?.into_iter().zip(chunk_ids) {
            serde_json::to_writer(&mut out, &JsonlResult { id: id.as_ref(), result: &result })?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Result<(Vec<Option<serde_json::Value>>, Vec<MessageInput>)> {
        read_jsonl(input, 100)
    }

    fn texts(input: &[u8]) -> Vec<String> {
        read(input).unwrap().1.into_iter().map(|input| input.text).collect()
    }

    #[test]
    fn line_endings_and_blank_lines() {
        let input = b"{\"text\": \"bonjour\"}\r\n\r\n{\"id\": 2, \"text\": \"merci\"}\n{\"text\": \"salut\"}";
        assert_eq!(texts(input), ["bonjour", "merci", "salut"]);
        let (ids, _) = read(input).unwrap();
        assert_eq!(ids, [None, Some(serde_json::json!(2)), None]);
    }

    #[test]
    fn leading_byte_order_mark_is_skipped() {
        assert_eq!(texts(b"\xef\xbb\xbf{\"text\": \"bonjour\"}\n{\"text\": \"merci\"}\n"), ["bonjour", "merci"]);
        assert_eq!(texts(b"\xef\xbb\xbf\n{\"text\": \"merci\"}\n"), ["merci"]);

        // Only at the start of the input: elsewhere it is not whitespace in JSON.
        let error = read(b"{\"text\": \"bonjour\"}\n\xef\xbb\xbf{\"text\": \"merci\"}\n").unwrap_err().to_string();
        assert!(error.starts_with("stdin line 2: invalid JSON at column 1"), "{error}");
    }

    #[test]
    fn over_max_chars_stops_the_run() {
        let long = "a".repeat(101);
        let line = format!("{{\"text\": \"bonjour\"}}\n{{\"text\": \"{long}\"}}\n");
        let error = read(line.as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with("stdin line 2: `text` has 101 characters, over --max-chars 100"), "{error}");
        assert!(!error.contains(&long), "{error}");

        let line = format!("{{\"text\": \"bonjour\", \"context\": [\"salut\", \"{long}\"]}}\n");
        let error = read(line.as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with("stdin line 1: `context[1]` has 101 characters"), "{error}");

        // The limit counts characters, not bytes.
        assert_eq!(texts(format!("{{\"text\": \"{}\"}}", "é".repeat(100)).as_bytes()).len(), 1);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let input = b"{\"text\": \"bonjour\"}\n\n{\"text\": \"il m'a \xe9crit\"}\n";
        let error = read(input).unwrap_err().to_string();
        assert_eq!(error, "stdin line 3: invalid UTF-8 at byte 18 of the line: encode the input as UTF-8");

        // The byte position counts a leading byte-order mark.
        let error = read(b"\xef\xbb\xbf{\"text\": \"\xff\"}\n").unwrap_err().to_string();
        assert!(error.starts_with("stdin line 1: invalid UTF-8 at byte 14 of the line"), "{error}");
    }
}
