//! The HTTP service that chatbot backends call: routes, request validation, errors, the
//! optional API key, CORS, metrics, request ids and the access log.
//!
//! The model sits behind [`crate::infer::Engine`]; this layer never calls the classifier
//! itself. Invariants:
//! - Every error body is `{"error": {"code", "message"}}` ([`error::ApiError`]).
//! - No message text reaches a log line, a metric or an error message.
//! - A panic in a handler becomes a 500 response, and the process keeps serving.

pub mod auth;
pub mod config;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod request;
pub mod request_id;
pub mod routes;
pub mod state;

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;

/// Builds the whole service: every route inside the middleware.
pub fn router(state: AppState) -> Router {
    with_middleware(routes::routes(&state), state)
}

/// Wraps `routes` in the service's middleware, from the inside out: body limit, CORS, panic
/// catching, then request id, metrics and access log. Adds the 404 and 405 responses.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let config = state.config();
    let mut router = routes
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes));
    if !config.cors_allow_origins.is_empty() {
        router = router.layer(cors(config));
    }
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

fn cors(config: &Config) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(config.cors_allow_origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, HeaderName::from_static(request_id::HEADER)])
        .expose_headers([HeaderName::from_static(request_id::HEADER), header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600))
}

/// Builds the 500 response for a panicking handler. The payload is dropped unread, because a
/// panic message can quote the input.
fn panic_response(_payload: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal("a request handler panicked".into()).into_response()
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting connections
/// and returns once the requests in flight have their responses.
///
/// NOTE: the classify timeout starts once the body is read, so a client that sends its body
/// slowly holds a connection without limit. A reverse proxy in front should bound that.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Responses are small and sent as soon as they are ready, so Nagle's algorithm would only
    // hold the last segment back until the client acknowledges the previous one.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "failed to set TCP_NODELAY on an accepted connection, serving it with Nagle's algorithm on");
        }
    });
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
