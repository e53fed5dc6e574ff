//! The one error type of the HTTP layer and its mapping to status codes.
//!
//! Every error response has the body `{"error": {"code", "message"}}`. The code is stable and meant for
//! programs; the message is plain English for the integrator, names the field at fault and
//! says how to fix it. No message ever quotes the request body. Internal errors return a
//! generic message; their detail goes only to the access log, through [`ErrorRecord`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::infer::{InferError, TooLongInput};

use super::request_id;

/// Seconds a client should wait before retrying after an `overloaded` response.
pub const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;
/// Seconds a client should wait before retrying after a `not_ready` response.
pub const NOT_READY_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the request body is not valid JSON{} (error at line {line}, column {column}): send a JSON object \
         such as {{\"text\": \"...\"}}",
        if *too_deep { ": its arrays and objects nest 128 levels deep or more" } else { "" }
    )]
    InvalidJson { line: usize, column: usize, too_deep: bool },

    /// `description` names the key only when it is a top-level field name, as
    /// [`crate::json::DuplicateKey::describe`] allows.
    #[error("the request body is invalid on line {line}: {description}. Send each field once")]
    DuplicateKey { line: usize, description: String },

    #[error("the request body is not valid UTF-8: encode the JSON body as UTF-8")]
    InvalidUtf8,

    #[error("the request body could not be read to its end: send the whole body, with a correct Content-Length")]
    UnreadableBody,

    /// A request id, in the header or the body, is not a valid id. Both places get the same
    /// status and code, and the message names the place.
    #[error("{}", invalid_request_id_message(*.0))]
    InvalidRequestId(request_id::Location),

    #[error("missing or wrong API key: send the header `Authorization: Bearer <key>` with the server's key")]
    Unauthorized,

    #[error("no route matches this path: see /openapi.json for the routes")]
    NotFound,

    #[error("this route does not accept this HTTP method: see /openapi.json for the methods of each route")]
    MethodNotAllowed,

    #[error(
        "the Content-Type header must be application/json: send `Content-Type: application/json`, or no \
         Content-Type header"
    )]
    UnsupportedMediaType,

    #[error(
        "the Content-Encoding header must be identity: send the body uncompressed, without a \
         Content-Encoding header"
    )]
    UnsupportedContentEncoding,

    #[error(
        "the request body is larger than the limit of {limit} bytes: shorten the text or the context, or \
         split the batch into several requests"
    )]
    BodyTooLarge { limit: usize },

    /// Texts above the character limit: `field` and `chars` name the first, `others` every other
    /// one with its characters, in request order.
    #[error("{}", over_limit_message("characters", field, *chars, *limit, others))]
    TextTooLong { field: String, chars: usize, limit: usize, others: Vec<(String, usize)> },

    #[error(
        "field `inputs` has {count} entries, above the limit of {limit}: split the batch into several \
         requests"
    )]
    BatchTooLarge { count: usize, limit: usize },

    #[error(
        "field `{field}` has {count} entries, above the limit of {limit}: send only the most recent \
         {limit} earlier messages"
    )]
    ContextTooLong { field: String, count: usize, limit: usize },

    /// Texts above the token limit: `field` and `tokens` name the first, `others` every other
    /// one with its tokens, in input order.
    #[error("{}", too_many_tokens_message(field, *tokens, *limit, others))]
    TooManyTokens { field: String, tokens: usize, limit: usize, others: Vec<(String, usize)> },

    /// A field is missing, unknown or of the wrong type. The message is complete.
    #[error("{message}")]
    InvalidField { field: String, message: String },

    #[error(
        "field `{field}` is empty once whitespace and invisible characters are removed: send a message \
         with visible characters"
    )]
    EmptyText { field: String },

    /// The classifier rejected an input; its message is meant for clients.
    #[error("the input cannot be classified: {0}")]
    InvalidInput(String),

    #[error(
        "the server is at capacity and cannot queue this request: retry after the Retry-After delay, or \
         route the person to a human listener"
    )]
    Overloaded,

    #[error(
        "the model is loading or a model worker is restarting: retry after the Retry-After delay, or route \
         the person to a human listener"
    )]
    NotReady,

    #[error(
        "the classification did not finish within the server's timeout: retry, or route the person to a \
         human listener"
    )]
    Timeout,

    /// The detail is for the log; clients get a generic message.
    #[error("internal error: the x-request-id response header identifies this request in the server log")]
    Internal(String),
}

/// Access-log record of an error response: the code, and for internal errors the detail that
/// the client does not see.
#[derive(Debug, Clone)]
pub struct ErrorRecord {
    pub code: &'static str,
    pub detail: Option<String>,
}

impl ApiError {
    /// Every code that [`ApiError::code`] returns, for the API description.
    pub const CODES: &'static [&'static str] = &[
        "invalid_json",
        "duplicate_key",
        "invalid_utf8",
        "unreadable_body",
        "invalid_request_id",
        "unauthorized",
        "not_found",
        "method_not_allowed",
        "unsupported_media_type",
        "unsupported_content_encoding",
        "body_too_large",
        "text_too_long",
        "batch_too_large",
        "context_too_long",
        "too_many_tokens",
        "invalid_field",
        "empty_text",
        "invalid_input",
        "overloaded",
        "not_ready",
        "timeout",
        "internal",
    ];

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::DuplicateKey { .. }
            | ApiError::InvalidUtf8
            | ApiError::UnreadableBody
            | ApiError::InvalidRequestId(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedContentEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::BodyTooLarge { .. }
            | ApiError::TextTooLong { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::ContextTooLong { .. }
            | ApiError::TooManyTokens { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidField { .. } | ApiError::EmptyText { .. } | ApiError::InvalidInput(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Overloaded | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::DuplicateKey { .. } => "duplicate_key",
            ApiError::InvalidUtf8 => "invalid_utf8",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::InvalidRequestId(_) => "invalid_request_id",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedContentEncoding => "unsupported_content_encoding",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::TextTooLong { .. } => "text_too_long",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::ContextTooLong { .. } => "context_too_long",
            ApiError::TooManyTokens { .. } => "too_many_tokens",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::EmptyText { .. } => "empty_text",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::Overloaded => "overloaded",
            ApiError::NotReady => "not_ready",
            ApiError::Timeout => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded => Some(OVERLOADED_RETRY_AFTER_SECS),
            ApiError::NotReady => Some(NOT_READY_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Builds the error for texts above the character limit, given as field names with their
    /// characters in request order, or returns `None` when there is none.
    pub fn text_too_long(texts: Vec<(String, usize)>, limit: usize) -> Option<Self> {
        let mut texts = texts.into_iter();
        let (field, chars) = texts.next()?;
        Some(ApiError::TextTooLong { field, chars, limit, others: texts.collect() })
    }

    /// Builds the error for the texts of [`InferError::TooLong`]. `field` returns the field name
    /// of an input's text from its index.
    pub fn too_many_tokens(inputs: Vec<TooLongInput>, limit: usize, field: impl Fn(usize) -> String) -> Self {
        let mut named = inputs.into_iter().map(|text| (field(text.input), text.tokens));
        let Some((first, tokens)) = named.next() else {
            return ApiError::Internal("the token limit was reported without any input above it".into());
        };
        ApiError::TooManyTokens { field: first, tokens, limit, others: named.collect() }
    }

    /// Builds the error for a field that is missing, unknown or of the wrong type.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField { field: field.into(), message: message.into() }
    }
}

impl From<InferError> for ApiError {
    fn from(error: InferError) -> Self {
        match error {
            InferError::Overloaded => ApiError::Overloaded,
            InferError::NotReady => ApiError::NotReady,
            InferError::Timeout => ApiError::Timeout,
            InferError::InvalidInput(message) => ApiError::InvalidInput(message),
            InferError::TooLong { inputs, limit } => {
                ApiError::too_many_tokens(inputs, limit, |input| format!("inputs[{input}].text"))
            }
            InferError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

fn invalid_request_id_message(location: request_id::Location) -> String {
    let (named, place) = match location {
        request_id::Location::Header => ("the x-request-id header", "the header"),
        request_id::Location::Body => ("field `request_id`", "the field"),
    };
    format!(
        "{named} must be a string of 1 to {} letters, digits, '-', '_', '.' or ':': send such an id, or \
         leave {place} out and the server generates one",
        request_id::MAX_LEN
    )
}

/// Writes the message of [`ApiError::TooManyTokens`].
fn too_many_tokens_message(field: &str, tokens: usize, limit: usize, others: &[(String, usize)]) -> String {
    let message = over_limit_message("tokens", field, tokens, limit, others);
    format!("{message}. Emoji and repeated accented letters can take one token each")
}

/// Writes the message of an error that names every text above a limit, so that a client can
/// fix them all before it retries. `unit` is the plural name of the counted unit.
fn over_limit_message(unit: &str, field: &str, count: usize, limit: usize, others: &[(String, usize)]) -> String {
    let first = format!("field `{field}` has {count} {unit}, above the limit of {limit}");
    if others.is_empty() {
        return format!("{first}: shorten it or split it into several messages");
    }
    let listed: Vec<String> = others.iter().map(|(name, count)| format!("`{name}` ({count} {unit})")).collect();
    let listed = match listed.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let verb = if others.len() == 1 { "does" } else { "do" };
    format!("{first}, and so {verb} {listed}: shorten each of them or split them into several messages")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self == ApiError::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // RFC 7694 recommends that a 415 caused by a content coding list the accepted codings.
        if self == ApiError::UnsupportedContentEncoding {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        let code = self.code();
        let detail = match self {
            ApiError::Internal(detail) => Some(detail),
            _ => None,
        };
        response.extensions_mut().insert(ErrorRecord { code, detail });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<ApiError> {
        vec![
            ApiError::InvalidJson { line: 1, column: 2, too_deep: false },
            ApiError::DuplicateKey { line: 1, description: "field `text` appears twice (the second ends at column 32)".into() },
            ApiError::InvalidUtf8,
            ApiError::UnreadableBody,
            ApiError::InvalidRequestId(request_id::Location::Header),
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::UnsupportedMediaType,
            ApiError::UnsupportedContentEncoding,
            ApiError::BodyTooLarge { limit: 10 },
            ApiError::TextTooLong { field: "text".into(), chars: 11, limit: 10, others: Vec::new() },
            ApiError::BatchTooLarge { count: 3, limit: 2 },
            ApiError::ContextTooLong { field: "context".into(), count: 3, limit: 2 },
            ApiError::TooManyTokens { field: "text".into(), tokens: 11, limit: 10, others: Vec::new() },
            ApiError::field("text", "field `text` is missing"),
            ApiError::EmptyText { field: "text".into() },
            ApiError::InvalidInput("reason".into()),
            ApiError::Overloaded,
            ApiError::NotReady,
            ApiError::Timeout,
            ApiError::Internal("secret detail".into()),
        ]
    }

    #[test]
    fn variants_map_to_status_and_code() {
        let expected = [400, 400, 400, 400, 400, 401, 404, 405, 415, 415, 413, 413, 413, 413, 413, 422, 422, 422, 503, 503, 504, 500];
        let variants = every_variant();
        let statuses: Vec<u16> = variants.iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(statuses, expected);
        let codes: Vec<_> = variants.iter().map(ApiError::code).collect();
        assert_eq!(codes, ApiError::CODES, "CODES lists every code once, in variant order");
    }

    #[test]
    fn too_many_tokens_names_every_text() {
        let too_long = |indices: &[usize]| {
            let inputs = indices.iter().map(|&input| TooLongInput { input, tokens: 2000 + input }).collect();
            ApiError::from(InferError::TooLong { inputs, limit: 1536 })
        };

        let single = too_long(&[1]).to_string();
        assert!(single.starts_with("field `inputs[1].text` has 2001 tokens, above the limit of 1536: shorten it"), "{single}");

        let pair = too_long(&[1, 3]).to_string();
        assert!(pair.starts_with("field `inputs[1].text` has 2001 tokens, above the limit of 1536,"), "{pair}");
        assert!(pair.contains("and so does `inputs[3].text` (2003 tokens): shorten each of them"), "{pair}");

        let three_texts = too_long(&[0, 2, 5]).to_string();
        assert!(three_texts.contains("and so do `inputs[2].text` (2002 tokens) and `inputs[5].text` (2005 tokens):"), "{three_texts}");
        let four_texts = too_long(&[0, 1, 2, 3]).to_string();
        assert!(four_texts.contains("`inputs[1].text` (2001 tokens), `inputs[2].text` (2002 tokens) and `inputs[3].text`"), "{four_texts}");

        assert_eq!(too_long(&[]).code(), "internal", "an empty list is a bug, not a client error");
    }

    #[test]
    fn text_too_long_names_every_text() {
        assert_eq!(ApiError::text_too_long(Vec::new(), 10), None);

        let single = ApiError::text_too_long(vec![("text".into(), 11)], 10).unwrap().to_string();
        assert_eq!(single, "field `text` has 11 characters, above the limit of 10: shorten it or split it into several messages");

        let pair = ApiError::text_too_long(vec![("text".into(), 11), ("context[2]".into(), 12)], 10).unwrap();
        assert_eq!(pair.code(), "text_too_long");
        let pair = pair.to_string();
        assert!(pair.starts_with("field `text` has 11 characters, above the limit of 10,"), "{pair}");
        assert!(pair.ends_with("and so does `context[2]` (12 characters): shorten each of them or split them into several messages"), "{pair}");
        assert!(!pair.contains("token"), "{pair}");
    }

    #[test]
    fn invalid_request_id_names_its_location() {
        let header = ApiError::InvalidRequestId(request_id::Location::Header);
        let body = ApiError::InvalidRequestId(request_id::Location::Body);
        assert_eq!(header.status(), body.status());
        assert_eq!(header.code(), body.code());
        assert!(header.to_string().starts_with("the x-request-id header must be"), "{header}");
        assert!(body.to_string().starts_with("field `request_id` must be"), "{body}");
    }

    #[test]
    fn internal_detail_stays_out_of_the_body() {
        let response = ApiError::Internal("secret detail".into()).into_response();
        assert_eq!(response.extensions().get::<ErrorRecord>().unwrap().detail.as_deref(), Some("secret detail"));
        assert!(!ApiError::Internal("secret detail".into()).to_string().contains("secret"));
    }

    #[test]
    fn overload_and_not_ready_say_when_to_retry() {
        for error in [ApiError::Overloaded, ApiError::NotReady] {
            assert!(error.into_response().headers().contains_key(header::RETRY_AFTER));
        }
        let response = ApiError::Unauthorized.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = ApiError::UnsupportedContentEncoding.into_response();
        assert_eq!(response.headers()[header::ACCEPT_ENCODING], "identity");
    }
}
