//! Request bodies: reading, JSON parsing and validation into [`MessageInput`]s.
//!
//! Bodies are parsed into a `serde_json::Value` and checked field by field, rather than
//! deserialised with serde's derive, so that every error names the field and its fix without
//! quoting the client's values (serde's messages repeat them, and they may be message text).
//!
//! Checks, in order: Content-Type and Content-Encoding (415), size (413), UTF-8 (400) and JSON
//! syntax (400). Then the fields, in body order: shape and field types (422), entry counts (413)
//! and text empty after normalisation (422), where the first problem found is the error. Texts
//! above the character limit (413) come last, all named in one error, so that a client can fix
//! them all before it retries.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::json;
use crate::triage::classifier::MessageInput;
use crate::triage::normalize::normalize;

use super::error::ApiError;
use super::request_id;
use super::state::AppState;

/// Limits on what one request may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum request body size, in bytes.
    pub max_body_bytes: usize,
    /// Maximum length of `text` and of each `context` entry, in characters after normalisation; `None` accepts
    /// any length (the classifier splits long texts into windows).
    pub max_chars: Option<usize>,
    /// Maximum number of entries in `context`.
    pub max_context_messages: usize,
    /// Maximum number of entries in `inputs` of a batch request.
    pub max_batch_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 64 * 1024, max_chars: Some(4000), max_context_messages: 20, max_batch_inputs: 32 }
    }
}

/// Body of `POST /v1/classify`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyRequest {
    pub input: MessageInput,
    /// Request id chosen by the client, used when the x-request-id header is absent.
    pub request_id: Option<String>,
}

/// Body of `POST /v1/classify/batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub inputs: Vec<MessageInput>,
    pub request_id: Option<String>,
}

const CLASSIFY_FIELDS: &[&str] = &["text", "context", "request_id"];
const BATCH_FIELDS: &[&str] = &["inputs", "request_id"];
const INPUT_FIELDS: &[&str] = &["text", "context"];
/// Top-level fields of both request bodies, which a duplicate-key error may name.
const TOP_LEVEL_FIELDS: &[&str] = &["text", "context", "request_id", "inputs"];

impl ClassifyRequest {
    pub fn from_json(value: Value, limits: &Limits) -> Result<Self, ApiError> {
        let mut body = body_object(value, "{\"text\": \"...\"}")?;
        reject_unknown(&body, CLASSIFY_FIELDS, "")?;
        let request_id = take_request_id(&mut body)?;
        let mut lengths = LengthCheck::new(limits);
        let input = message_input(body, "", limits, &mut lengths)?;
        lengths.finish()?;
        Ok(ClassifyRequest { input, request_id })
    }
}

impl BatchRequest {
    pub fn from_json(value: Value, limits: &Limits) -> Result<Self, ApiError> {
        let mut body = body_object(value, "{\"inputs\": [{\"text\": \"...\"}]}")?;
        reject_unknown(&body, BATCH_FIELDS, "")?;
        let request_id = take_request_id(&mut body)?;
        let items = match body.remove("inputs") {
            None => {
                return Err(ApiError::field(
                    "inputs",
                    "field `inputs` is missing: send {\"inputs\": [{\"text\": \"...\"}, ...]}",
                ))
            }
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type("inputs", &other, "an array of {\"text\": \"...\"} objects")),
        };
        if items.is_empty() {
            return Err(ApiError::field("inputs", "field `inputs` is empty: send at least one {\"text\": \"...\"}"));
        }
        if items.len() > limits.max_batch_inputs {
            return Err(ApiError::BatchTooLarge { count: items.len(), limit: limits.max_batch_inputs });
        }
        let mut lengths = LengthCheck::new(limits);
        let inputs = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let prefix = format!("inputs[{i}].");
                let field = format!("inputs[{i}]");
                let item = match item {
                    Value::Object(map) => map,
                    other => return Err(wrong_type(&field, &other, "an object such as {\"text\": \"...\"}")),
                };
                reject_unknown(&item, INPUT_FIELDS, &prefix)?;
                message_input(item, &prefix, limits, &mut lengths)
            })
            .collect::<Result<_, _>>()?;
        lengths.finish()?;
        Ok(BatchRequest { inputs, request_id })
    }
}

impl FromRequest<AppState> for ClassifyRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let value = json_body(request, state).await?;
        ClassifyRequest::from_json(value, &state.config().limits)
    }
}

impl FromRequest<AppState> for BatchRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let value = json_body(request, state).await?;
        BatchRequest::from_json(value, &state.config().limits)
    }
}

/// Reads the body under the size limit and parses it as JSON.
async fn json_body(request: Request, state: &AppState) -> Result<Value, ApiError> {
    check_content_type(request.headers())?;
    check_content_encoding(request.headers())?;
    let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit: state.config().limits.max_body_bytes }
        } else {
            ApiError::UnreadableBody
        }
    })?;
    parse_json(&bytes)
}

/// Accepts a missing Content-Type and any JSON media type, with or without parameters.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Accepts no Content-Encoding header, or only `identity` codings. The body is never
/// decompressed, so a compressed body would otherwise be read as plain bytes.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let codings = value.to_str().map_err(|_| ApiError::UnsupportedContentEncoding)?;
        if !codings.split(',').all(|coding| coding.trim().eq_ignore_ascii_case("identity")) {
            return Err(ApiError::UnsupportedContentEncoding);
        }
    }
    Ok(())
}

/// Parses a body as JSON. Errors give a position, never a quote of the body.
///
/// A key repeated in one object is rejected, as [`crate::json`] explains.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::InvalidUtf8)?;
    match json::from_str(text) {
        Ok(value) => Ok(value),
        Err(json::ParseError::DuplicateKey(duplicate)) => {
            Err(ApiError::DuplicateKey { line: duplicate.line, description: duplicate.describe(TOP_LEVEL_FIELDS) })
        }
        Err(json::ParseError::Syntax(error)) => Err(ApiError::InvalidJson {
            line: error.line(),
            column: error.column(),
            too_deep: error.to_string().starts_with(RECURSION_LIMIT),
        }),
    }
}

/// Start of `serde_json`'s error for a value nested 128 levels deep or more.
const RECURSION_LIMIT: &str = "recursion limit exceeded";

fn body_object(value: Value, example: &str) -> Result<Map<String, Value>, ApiError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::field(
            "(body)",
            format!("the request body must be a JSON object, not {}: send {example}", kind(&other)),
        )),
    }
}

fn reject_unknown(map: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), ApiError> {
    let Some(key) = map.keys().find(|key| !allowed.contains(&key.as_str())) else { return Ok(()) };
    let accepted = allowed.iter().map(|name| format!("`{prefix}{name}`")).collect::<Vec<_>>().join(", ");
    // A key is repeated only when it looks like a field name: a client may have put message
    // text in a key by mistake.
    let (field, named) = if looks_like_identifier(key) {
        let field = format!("{prefix}{key}");
        let named = format!("field `{field}`");
        (field, named)
    } else {
        (format!("{prefix}(unknown)"), format!("a field{} whose name is not a known field", in_object(prefix)))
    };
    Err(ApiError::field(field, format!("{named} is not accepted: remove it (accepted fields: {accepted})")))
}

fn in_object(prefix: &str) -> String {
    match prefix.strip_suffix('.') {
        Some(object) => format!(" of `{object}`"),
        None => String::new(),
    }
}

fn looks_like_identifier(key: &str) -> bool {
    !key.is_empty() && key.len() <= 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Takes the optional `request_id` field. An invalid one gets the same error as an invalid
/// x-request-id header, 400 `invalid_request_id`, whatever its type.
fn take_request_id(body: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.remove("request_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if request_id::is_valid(&id) => Ok(Some(id)),
        Some(_) => Err(ApiError::InvalidRequestId(request_id::Location::Body)),
    }
}

/// Reads `text` and `context` from an object whose other fields were already checked, and
/// records their lengths in `lengths`.
fn message_input(
    mut map: Map<String, Value>,
    prefix: &str,
    limits: &Limits,
    lengths: &mut LengthCheck,
) -> Result<MessageInput, ApiError> {
    let text_field = format!("{prefix}text");
    let text = match map.remove("text") {
        None => {
            return Err(ApiError::field(
                &text_field,
                format!("field `{text_field}` is missing: add the message to classify as a string"),
            ))
        }
        Some(Value::String(text)) => text,
        Some(other) => return Err(wrong_type(&text_field, &other, "a string holding the message")),
    };
    let normalized = normalize(&text);
    if normalized.is_empty() {
        return Err(ApiError::EmptyText { field: text_field });
    }
    lengths.check(&normalized, &text_field);

    let context_field = format!("{prefix}context");
    let context = match map.remove("context") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(wrong_type(&context_field, &other, "an array of strings, the earlier messages oldest first"))
        }
    };
    if context.len() > limits.max_context_messages {
        return Err(ApiError::ContextTooLong {
            field: context_field,
            count: context.len(),
            limit: limits.max_context_messages,
        });
    }
    let context = context
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("{context_field}[{i}]");
            match item {
                Value::String(message) => {
                    lengths.check(&normalize(&message), &field);
                    Ok(message)
                }
                other => Err(wrong_type(&field, &other, "a string holding an earlier message")),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(MessageInput { text, context })
}

/// The texts of one request above the character limit, collected over the whole body so that
/// one error names them all.
struct LengthCheck {
    limit: Option<usize>,
    /// Field names and character counts, in request order.
    over: Vec<(String, usize)>,
}

impl LengthCheck {
    fn new(limits: &Limits) -> Self {
        LengthCheck { limit: limits.max_chars, over: Vec::new() }
    }

    /// Records the field when its normalised text is above the limit.
    fn check(&mut self, normalized: &str, field: &str) {
        let Some(limit) = self.limit else { return };
        let chars = normalized.chars().count();
        if chars > limit {
            self.over.push((field.to_string(), chars));
        }
    }

    /// Fails with [`ApiError::TextTooLong`], which names every text recorded above the limit,
    /// when there is one.
    fn finish(self) -> Result<(), ApiError> {
        let Some(limit) = self.limit else { return Ok(()) };
        match ApiError::text_too_long(self.over, limit) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn wrong_type(field: &str, value: &Value, expected: &str) -> ApiError {
    ApiError::field(field, format!("field `{field}` must be {expected}, not {}", kind(value)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn classify(value: Value) -> Result<ClassifyRequest, ApiError> {
        ClassifyRequest::from_json(value, &Limits::default())
    }

    fn batch(value: Value) -> Result<BatchRequest, ApiError> {
        BatchRequest::from_json(value, &Limits::default())
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::InvalidField { field, .. }
            | ApiError::EmptyText { field }
            | ApiError::TextTooLong { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn accepts_a_full_request() {
        let request = classify(json!({"text": "il me harcèle", "context": ["salut"], "request_id": "abc-1"})).unwrap();
        assert_eq!(request.input.text, "il me harcèle");
        assert_eq!(request.input.context, ["salut"]);
        assert_eq!(request.request_id.as_deref(), Some("abc-1"));
        assert!(classify(json!({"text": "ok", "context": null, "request_id": null})).is_ok());
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(field_of(classify(json!({})).unwrap_err()), "text");
        assert_eq!(field_of(classify(json!({"text": 3})).unwrap_err()), "text");
        assert_eq!(field_of(classify(json!({"text": " \u{200B} "})).unwrap_err()), "text");
        assert_eq!(field_of(classify(json!({"text": "a", "context": ["b", 2]})).unwrap_err()), "context[1]");
        assert_eq!(field_of(classify(json!({"text": "a", "lang": "fr"})).unwrap_err()), "lang");
        assert_eq!(field_of(batch(json!({"inputs": [{"text": "a"}, {"text": ""}]})).unwrap_err()), "inputs[1].text");
        assert_eq!(field_of(batch(json!({"inputs": [{"text": "a", "extra": 1}]})).unwrap_err()), "inputs[0].extra");
    }

    #[test]
    fn error_messages_never_quote_values_or_odd_keys() {
        let secret = "mon secret est ici";
        for value in [
            json!({"text": [secret]}),
            json!({"text": "a", "context": secret}),
            json!({ secret: "a" }),
            json!({"text": "a", "request_id": secret}),
            json!(secret),
        ] {
            let message = classify(value).unwrap_err().to_string();
            assert!(!message.contains("secret"), "{message}");
        }
        let message = parse_json(format!("{{\"text\": \"{secret}\" oops}}").as_bytes()).unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn invalid_body_request_id_is_400() {
        for id in [json!("two words"), json!(""), json!("x".repeat(request_id::MAX_LEN + 1)), json!(42)] {
            let error = classify(json!({"text": "a", "request_id": id})).unwrap_err();
            assert_eq!(error, ApiError::InvalidRequestId(request_id::Location::Body), "{id}");
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{id}");
            let error = batch(json!({"inputs": [{"text": "a"}], "request_id": id})).unwrap_err();
            assert_eq!(error.code(), "invalid_request_id", "{id}");
        }
    }

    #[test]
    fn limits_give_413_errors() {
        let limits = Limits { max_chars: Some(5), max_context_messages: 1, max_batch_inputs: 2, ..Limits::default() };
        let too_long = ClassifyRequest::from_json(json!({"text": "abcdef"}), &limits).unwrap_err();
        assert_eq!(too_long.code(), "text_too_long");
        // Length is counted after normalisation: surrounding spaces do not count.
        assert!(ClassifyRequest::from_json(json!({"text": "  abcde  "}), &limits).is_ok());
        let context = ClassifyRequest::from_json(json!({"text": "a", "context": ["b", "c"]}), &limits).unwrap_err();
        assert_eq!(context.code(), "context_too_long");
        let inputs = json!({"inputs": [{"text": "a"}, {"text": "b"}, {"text": "c"}]});
        assert_eq!(BatchRequest::from_json(inputs, &limits).unwrap_err().code(), "batch_too_large");
        let windowed = Limits { max_chars: None, ..limits };
        assert!(ClassifyRequest::from_json(json!({"text": "abcdef"}), &windowed).is_ok());
    }

    #[test]
    fn text_too_long_names_every_text() {
        let limits = Limits { max_chars: Some(5), ..Limits::default() };
        let single = json!({"text": "abcdefg", "context": ["ok", "abcdef"]});
        let error = ClassifyRequest::from_json(single, &limits).unwrap_err();
        let expected = ApiError::TextTooLong {
            field: "text".into(),
            chars: 7,
            limit: 5,
            others: vec![("context[1]".into(), 6)],
        };
        assert_eq!(error, expected);

        let inputs = json!({"inputs": [
            {"text": "court"},
            {"text": "abcdef", "context": ["abcdefgh"]},
            {"text": "ok", "context": ["abcdefghi"]},
        ]});
        let error = BatchRequest::from_json(inputs, &limits).unwrap_err();
        let ApiError::TextTooLong { field, chars, others, .. } = &error else { panic!("not text_too_long: {error:?}") };
        assert_eq!((field.as_str(), *chars), ("inputs[1].text", 6));
        let others: Vec<(&str, usize)> = others.iter().map(|(name, count)| (name.as_str(), *count)).collect();
        assert_eq!(others, [("inputs[1].context[0]", 8), ("inputs[2].context[0]", 9)]);
        let message = error.to_string();
        assert!(message.starts_with("field `inputs[1].text` has 6 characters, above the limit of 5, and so do "), "{message}");
        assert!(message.contains("`inputs[1].context[0]` (8 characters) and `inputs[2].context[0]` (9 characters)"), "{message}");
    }

    #[test]
    fn field_errors_come_before_text_too_long() {
        let limits = Limits { max_chars: Some(5), ..Limits::default() };
        // The text over the limit comes first in the body, but the 422 of a later input wins.
        let inputs = json!({"inputs": [{"text": "abcdefg"}, {"text": 3}]});
        assert_eq!(field_of(BatchRequest::from_json(inputs, &limits).unwrap_err()), "inputs[1].text");
        let inputs = json!({"inputs": [{"text": "abcdefg"}, {"text": " "}]});
        assert_eq!(BatchRequest::from_json(inputs, &limits).unwrap_err().code(), "empty_text");
    }

    #[test]
    fn json_errors_are_400() {
        assert_eq!(parse_json(b"{\"text\": ").unwrap_err().code(), "invalid_json");
        assert_eq!(parse_json(b"{\"text\": \"salut\", \"text\": \"re\"}").unwrap_err().code(), "duplicate_key");
        assert_eq!(parse_json(b"{\"items\": [{\"a\": 1, \"a\": 2}]}").unwrap_err().code(), "duplicate_key");
        let nested = parse_json(b"{\"a\": [1, -2, 2.5, true, null, {\"b\": \"c\"}], \"d\": {}}").unwrap();
        assert_eq!(nested, serde_json::json!({"a": [1, -2, 2.5, true, null, {"b": "c"}], "d": {}}));
        assert_eq!(parse_json(b"{\"text\": \"\xff\"}").unwrap_err().code(), "invalid_utf8");
        // A lone surrogate escape is valid JSON and reads as the replacement character.
        assert_eq!(parse_json(b"\"\\ud800\"").unwrap(), serde_json::json!("\u{FFFD}"));
        let shallow = parse_json(b"{\"text\": }").unwrap_err().to_string();
        assert!(!shallow.contains("deeper"), "{shallow}");
        let deep = format!("{{\"text\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        let deep = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(deep.code(), "invalid_json");
        assert!(deep.to_string().contains("nest 128 levels deep or more"), "{deep}");
        // The object and 126 arrays make 127 levels, the deepest accepted. One more is rejected.
        let ok = format!("{{\"text\": {}1{}}}", "[".repeat(126), "]".repeat(126));
        assert!(parse_json(ok.as_bytes()).is_ok());
        let over = format!("{{\"text\": {}1{}}}", "[".repeat(127), "]".repeat(127));
        assert!(parse_json(over.as_bytes()).unwrap_err().to_string().contains("128 levels"));
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_ok());
        for ok in ["application/json", "Application/JSON; charset=utf-8", "application/problem+json"] {
            headers.insert(header::CONTENT_TYPE, ok.parse().unwrap());
            assert!(check_content_type(&headers).is_ok(), "{ok}");
        }
        headers.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        assert_eq!(check_content_type(&headers).unwrap_err(), ApiError::UnsupportedMediaType);
    }

    #[test]
    fn content_encodings() {
        let mut headers = HeaderMap::new();
        assert!(check_content_encoding(&headers).is_ok());
        for ok in ["identity", "Identity", " identity , identity "] {
            headers.insert(header::CONTENT_ENCODING, ok.parse().unwrap());
            assert!(check_content_encoding(&headers).is_ok(), "{ok}");
        }
        for bad in ["gzip", "br", "deflate", "identity, gzip", "", "x-unknown"] {
            headers.insert(header::CONTENT_ENCODING, bad.parse().unwrap());
            assert_eq!(check_content_encoding(&headers).unwrap_err(), ApiError::UnsupportedContentEncoding, "{bad:?}");
        }
        headers.insert(header::CONTENT_ENCODING, "identity".parse().unwrap());
        headers.append(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(check_content_encoding(&headers).is_err(), "every header line is checked");
    }
}
