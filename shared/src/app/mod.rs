//! The HTTP app: one axum router served by both front doors (Lambda streaming and standalone).

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::error::GatewayError;
use crate::ids::{new_request_id, sane_request_id};
use crate::limits::LimitDecision;

pub use crate::pipeline::limits::check_limits;
pub use crate::state::{build_state, state_with, AppState, Counters, SettleMode};

pub mod auth;
pub mod body;
pub mod chat;
mod chat_stream;
mod health;
mod models;
pub mod responses;
mod stored;
mod stream;
mod templates;

pub use auth::authenticate;

/// The gateway's own id of the current request, `req_<ULID>`, minted for every request: usage
/// records, reservations and settlement key on it, never on anything the caller sent.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The caller's own `x-request-id`, when it sent a sane one: echoed back and logged, never used
/// to decide what is charged.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub Option<String>);

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/responses", post(responses::create))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/responses/{id}", get(stored::show).delete(stored::remove))
        .route("/v1/responses/{id}/input_items", get(stored::input_items))
        .route("/v1/templates", post(templates::create).get(templates::list))
        .route("/v1/templates/{id}", get(templates::show).patch(templates::update).delete(templates::remove))
        .route("/v1/models", get(models::list))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read (bounded in size and time) before any handler; axum's own limit is set
        // to the same cap so an extractor never answers in plain text.
        .layer(DefaultBodyLimit::max(crate::request::MAX_BODY_BYTES))
        .layer(middleware::from_fn(body::bounded))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Mints the gateway's request id; `x-request-id` echoes the caller's sane id (else ours) and
/// `x-mesh-request-id` always carries ours.
async fn request_id(mut request: Request, next: Next) -> Response {
    let ours = new_request_id();
    let client = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned);
    request.extensions_mut().insert(RequestId(ours.clone()));
    request.extensions_mut().insert(ClientRequestId(client.clone()));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(client.as_deref().unwrap_or(&ours)) {
        headers.insert("x-request-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&ours) {
        headers.insert("x-mesh-request-id", value);
    }
    response
}

async fn not_found(Extension(id): Extension<RequestId>) -> Response {
    error_response(
        &GatewayError::NotFound { code: "not_found", message: "No such route.".to_owned(), param: None },
        &id.0,
    )
}

async fn method_not_allowed(Extension(id): Extension<RequestId>) -> Response {
    let err = GatewayError::InvalidRequest {
        code: "method_not_allowed",
        message: "This method is not allowed on this route.".to_owned(),
        param: None,
    };
    let mut response = error_response(&err, &id.0);
    *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// The rendered error as an axum response.
pub fn error_response(err: &GatewayError, request_id: &str) -> Response {
    err.render(request_id).map(axum::body::Body::from).into_response()
}

/// Adds the `x-ratelimit-*` headers of a limited key.
pub fn add_limit_headers(headers: &mut HeaderMap, decision: &LimitDecision) {
    let windows = [(decision.minute, "requests"), (decision.day, "requests-day")];
    for (window, suffix) in windows {
        let Some(window) = window else { continue };
        headers.insert(
            http::HeaderName::from_bytes(format!("x-ratelimit-limit-{suffix}").as_bytes())
                .unwrap_or(http::header::WARNING),
            HeaderValue::from(window.limit),
        );
        headers.insert(
            http::HeaderName::from_bytes(format!("x-ratelimit-remaining-{suffix}").as_bytes())
                .unwrap_or(http::header::WARNING),
            HeaderValue::from(window.remaining),
        );
        if let Ok(value) = HeaderValue::from_str(&format!("{}s", window.reset_seconds)) {
            headers.insert(
                http::HeaderName::from_bytes(format!("x-ratelimit-reset-{suffix}").as_bytes())
                    .unwrap_or(http::header::WARNING),
                value,
            );
        }
    }
}

/// A JSON body with its content length.
pub fn json_response(status: http::StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}
