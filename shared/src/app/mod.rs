//! The HTTP app: one axum router served by both front doors (Lambda streaming and standalone).

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use crate::error::GatewayError;
use crate::ids::{new_request_id, sane_request_id};

pub use crate::pipeline::limits::check_limits;
pub use crate::state::{build_state, state_with, AppState, Counters, SettleMode};

pub mod auth;
pub mod body;
pub mod chat;
mod chat_stream;
mod headers;
mod health;
mod models;
mod path_id;
mod pump;
pub mod responses;
mod stored;
mod stream;
mod templates;

pub use auth::{authenticate, Authenticated};
pub use headers::{LimitHeaders, RoutingHeaders};

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

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_MESH_REQUEST_ID: HeaderName = HeaderName::from_static("x-mesh-request-id");

/// Mints the gateway's request id; `x-request-id` echoes the caller's sane id (else ours) and
/// `x-mesh-request-id` always carries ours. Every event of the request carries its ids, and its
/// key and model once known, through the `request` span; an error a handler answered with is
/// rendered here, with our id ([`crate::error::with_request_id`]).
async fn request_id(mut request: Request, next: Next) -> Response {
    let ours = new_request_id();
    let client = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %ours,
        client_request_id = client.as_deref().unwrap_or_default(),
        key_id = tracing::field::Empty,
        model = tracing::field::Empty,
    );
    request.extensions_mut().insert(RequestId(ours.clone()));
    request.extensions_mut().insert(ClientRequestId(client.clone()));
    let answered = next.run(request).instrument(span.clone()).await;
    let mut response = span.in_scope(|| crate::error::with_request_id(answered, &ours));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(client.as_deref().unwrap_or(&ours)) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&ours) {
        headers.insert(X_MESH_REQUEST_ID.clone(), value);
    }
    response
}

async fn not_found() -> GatewayError {
    GatewayError::NotFound { code: "not_found", message: "No such route.".to_owned(), param: None }
}

async fn method_not_allowed() -> (StatusCode, GatewayError) {
    let err = GatewayError::InvalidRequest {
        code: "method_not_allowed",
        message: "This method is not allowed on this route.".to_owned(),
        param: None,
    };
    (StatusCode::METHOD_NOT_ALLOWED, err)
}

/// A JSON answer: the value's compact text, with its content type and length.
#[derive(Debug)]
pub struct JsonReply(pub StatusCode, pub Value);

impl JsonReply {
    pub fn ok(value: Value) -> Self {
        JsonReply(StatusCode::OK, value)
    }
}

impl IntoResponse for JsonReply {
    fn into_response(self) -> Response {
        json_response(self.0, Bytes::from(self.1.to_string()))
    }
}

/// A JSON body with its content length.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}
