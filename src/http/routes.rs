//! Route table and handlers. Handlers stay small: extractors validate, the engine classifies,
//! [`ApiError`] maps failures to statuses, and the access log is written by
//! [`observe`](super::observe).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::infer::{Batched, InferError};
use crate::triage::classification::Classification;
use crate::triage::taxonomy;

use super::auth::require_api_key;
use super::error::ApiError;
use super::metrics;
use super::observe::{BodyRequestId, ClassifyRecord};
use super::openapi;
use super::request::{BatchRequest, ClassifyRequest};
use super::state::AppState;

/// Routes that the API key protects, when one is set.
pub const PROTECTED_ROUTES: &[&str] = &["/v1/classify", "/v1/classify/batch", "/v1/labels", "/metrics"];
/// Routes that stay open: probes and the API description.
pub const OPEN_ROUTES: &[&str] = &["/health", "/ready", "/openapi.json", "/docs"];

/// Every route with its handler, without the outer middleware.
pub fn routes(state: &AppState) -> Router<AppState> {
    let protected = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/classify/batch", post(classify_batch))
        .route("/v1/labels", get(labels))
        .route("/metrics", get(prometheus))
        .route_layer(from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi_document))
        .route("/docs", get(docs))
}

async fn classify(State(state): State<AppState>, request: ClassifyRequest) -> Response {
    let ClassifyRequest { input, request_id } = request;
    // A single request's text is the field `text`, not `inputs[0].text`.
    let answer = state.engine().submit(vec![input], state.config().timeout).await.map_err(|error| match error {
        InferError::TooLong { inputs, limit } => ApiError::too_many_tokens(inputs, limit, |_| "text".to_string()),
        other => ApiError::from(other),
    });
    respond(answer, 1, request_id, |mut results| {
        results.pop().ok_or_else(|| ApiError::Internal("the model worker returned no result".into()))
    })
}

#[derive(Serialize)]
struct BatchResponse {
    results: Vec<Classification>,
}

async fn classify_batch(State(state): State<AppState>, request: BatchRequest) -> Response {
    let BatchRequest { inputs, request_id } = request;
    let count = inputs.len();
    let answer = state.engine().submit(inputs, state.config().timeout).await.map_err(ApiError::from);
    respond(answer, count, request_id, |results| Ok(BatchResponse { results }))
}

/// Turns an engine result into a response that carries what the access log needs.
fn respond<T: Serialize>(
    answer: Result<Batched, ApiError>,
    inputs: usize,
    request_id: Option<String>,
    body: impl FnOnce(Vec<Classification>) -> Result<T, ApiError>,
) -> Response {
    let (mut response, batch_size) = match answer {
        Ok(Batched { results, batch_size }) => match body(results) {
            Ok(body) => (Json(body).into_response(), Some(batch_size)),
            Err(error) => (error.into_response(), Some(batch_size)),
        },
        Err(error) => (error.into_response(), None),
    };
    response.extensions_mut().insert(ClassifyRecord { inputs, batch_size });
    if let Some(id) = request_id {
        response.extensions_mut().insert(BodyRequestId(id));
    }
    response
}

async fn labels() -> Json<taxonomy::Scheme> {
    Json(taxonomy::scheme())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 once the model is loaded and warmed up and every worker runs; 503 `not_ready` before,
/// while a worker restarts, and during shutdown.
async fn ready(State(state): State<AppState>) -> Response {
    let status = state.engine().status();
    match state.model() {
        Some(model) if status.is_ready() => {
            Json(json!({ "status": "ready", "model": model, "workers": status.workers })).into_response()
        }
        _ => ApiError::NotReady.into_response(),
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let body = state.metrics().encode(state.engine().status());
    ([(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE))], body).into_response()
}

async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

/// Serves the API reference page. Its content security policy forbids loading anything but
/// /openapi.json, so the page works offline and calls no other host.
async fn docs() -> Response {
    let policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";
    ([(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy))], Html(openapi::DOCS_PAGE)).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
