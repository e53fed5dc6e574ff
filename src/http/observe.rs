//! The outermost middleware: request id, metrics and the access log.
//!
//! Every request gets exactly one access-log line, with its id, method, route template,
//! status, latency, and for classify requests the number of inputs and the batch size. The
//! line never contains the body, the raw path or the query: only values from fixed sets, numbers,
//! and the request id, whose alphabet [`request_id::is_valid`] restricts.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorRecord};
use super::request_id;
use super::state::AppState;

/// Route label of requests that matched no route; the raw path is never recorded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Set by classify handlers on their response, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyRecord {
    /// Inputs in the request.
    pub inputs: usize,
    /// Inputs in the classifier call that served the request, its own included; `None` when
    /// the request failed before reaching a model worker.
    pub batch_size: Option<usize>,
}

/// Request id sent in the body, set by handlers on their response; used when the request had
/// no x-request-id header.
#[derive(Debug, Clone)]
pub struct BodyRequestId(pub String);

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |path| path.as_str().to_string());
    let method = method_label(request.method());
    let header_id = request
        .headers()
        .get(request_id::HEADER)
        .map(|value| value.to_str().ok().filter(|id| request_id::is_valid(id)).map(str::to_string));

    let (mut response, id) = match header_id {
        Some(Some(id)) => (next.run(request).await, id),
        Some(None) => {
            let error = ApiError::InvalidRequestId(request_id::Location::Header);
            (error.into_response(), request_id::generate())
        }
        None => {
            let response = next.run(request).await;
            let id = response.extensions().get::<BodyRequestId>().map(|id| id.0.clone());
            (response, id.unwrap_or_else(request_id::generate))
        }
    };
    let value = HeaderValue::from_str(&id).expect("request ids are checked or generated as ASCII");
    response.headers_mut().insert(request_id::HEADER, value);

    let elapsed = started.elapsed();
    state.metrics().request(&route, method, response.status().as_u16(), elapsed);
    access_log(&id, method, &route, response.status(), elapsed, &response);
    response
}

/// Methods outside this set share one label, so clients cannot grow the metric series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn access_log(id: &str, method: &str, route: &str, status: StatusCode, elapsed: Duration, response: &Response) {
    let classify = response.extensions().get::<ClassifyRecord>();
    let error = response.extensions().get::<ErrorRecord>();
    let inputs = classify.map(|c| c.inputs);
    let batch_size = classify.and_then(|c| c.batch_size);
    let code = error.map(|e| e.code);
    let detail = error.and_then(|e| e.detail.as_deref());
    let duration_ms = elapsed.as_micros() as f64 / 1000.0;
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "cybertriage::access",
                $level,
                request_id = id,
                method,
                route,
                status = status.as_u16(),
                duration_ms,
                inputs,
                batch_size,
                error = code,
                detail,
                "request"
            )
        };
    }
    // Overload and timeouts are warnings. A 503 `not_ready` is routine while the model loads,
    // when a readiness probe polls /ready.
    match code {
        Some("overloaded" | "timeout") => line!(tracing::Level::WARN),
        _ if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE => line!(tracing::Level::ERROR),
        _ => line!(tracing::Level::INFO),
    }
}
