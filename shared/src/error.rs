//! The gateway's errors and their one rendering to HTTP (DESIGN §2's envelope).
//!
//! Every failure the client can see is a [`GatewayError`]. [`GatewayError::render`] is the only
//! place that turns one into a status, headers and a body; internal details are logged there and
//! never sent. Handlers answer errors through [`IntoResponse`], and the layer that mints the
//! request id renders them with it ([`with_request_id`]).

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::limits::Window;

/// Failures of a store adapter (DynamoDB or the embedded store).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// An error reported by a provider (a 4xx other than 401/403), kept as the provider said it but
/// for credential-like text, which is scrubbed before any client sees it.
#[derive(Debug, Clone)]
pub struct UpstreamFault {
    pub status: u16,
    pub error_type: String,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_seconds: Option<u64>,
}

/// Every error a client can receive.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: String, param: Option<String> },
    #[error("missing API key")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("key suspended")]
    KeySuspended { message: String },
    #[error("model not allowed")]
    ModelNotAllowed { model: String },
    #[error("spend limit exceeded")]
    SpendLimitExceeded { message: String },
    #[error("not found")]
    NotFound { code: &'static str, message: String, param: Option<String> },
    #[error("conflict")]
    Conflict { code: &'static str, message: String },
    #[error("forbidden")]
    Forbidden { code: &'static str, message: String },
    #[error("request too large")]
    RequestTooLarge { limit_bytes: usize },
    /// The request body did not arrive within its time bounds.
    #[error("request body timeout")]
    RequestTimeout { idle: std::time::Duration, total: std::time::Duration },
    #[error("rate limited")]
    RateLimited { window: Window, limit: u64, retry_after_seconds: u64 },
    #[error("upstream client error {}", .0.status)]
    UpstreamClient(UpstreamFault),
    #[error("upstream failure: {0}")]
    UpstreamFailure(String),
    /// The provider refused the gateway's own credential (401/403): the gateway's fault, shown
    /// as 502 `upstream_error`; retrying the same provider cannot help.
    #[error("upstream refused the gateway's credential: {0}")]
    UpstreamCredential(String),
    /// A provider 5xx that said when to come back (`retry-after`).
    #[error("upstream busy: {detail}")]
    UpstreamBusy { detail: String, retry_after_seconds: u64 },
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Too many settlements not yet written: admissions wait until the store catches up.
    #[error("settlement backlog full ({pending} pending)")]
    SettlementBacklog { pending: usize },
    #[error("provider not available: {0}")]
    ProviderNotAvailable(String),
    #[error("gateway timeout: {0}")]
    GatewayTimeout(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for GatewayError {
    fn from(err: StoreError) -> Self {
        GatewayError::StoreUnavailable(err.to_string())
    }
}

impl GatewayError {
    pub fn invalid(code: &'static str, param: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest { code, message: message.into(), param: Some(param.into()) }
    }

    /// A low-cardinality label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { code, .. }
            | GatewayError::NotFound { code, .. }
            | GatewayError::Conflict { code, .. }
            | GatewayError::Forbidden { code, .. } => code,
            GatewayError::MissingApiKey => "missing_api_key",
            GatewayError::InvalidApiKey => "invalid_api_key",
            GatewayError::KeySuspended { .. } => "key_suspended",
            GatewayError::ModelNotAllowed { .. } => "model_not_allowed",
            GatewayError::SpendLimitExceeded { .. } => "spend_limit_exceeded",
            GatewayError::RequestTooLarge { .. } => "request_too_large",
            GatewayError::RequestTimeout { .. } => "request_timeout",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::UpstreamClient(_) => "upstream_client_error",
            GatewayError::UpstreamFailure(_)
            | GatewayError::UpstreamCredential(_)
            | GatewayError::UpstreamBusy { .. } => "upstream_error",
            GatewayError::StoreUnavailable(_) | GatewayError::SettlementBacklog { .. } => "store_unavailable",
            GatewayError::ProviderNotAvailable(_) => "provider_not_available",
            GatewayError::GatewayTimeout(_) => "gateway_timeout",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::MissingApiKey | GatewayError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            GatewayError::SpendLimitExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            GatewayError::KeySuspended { .. } | GatewayError::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::Conflict { .. } => StatusCode::CONFLICT,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::UpstreamClient(fault) => {
                StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            GatewayError::UpstreamFailure(_)
            | GatewayError::UpstreamCredential(_)
            | GatewayError::UpstreamBusy { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::StoreUnavailable(_)
            | GatewayError::SettlementBacklog { .. }
            | GatewayError::ProviderNotAvailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` object of the envelope: what the client is told, never internals.
    pub fn body(&self) -> Value {
        let (error_type, code, message, param): (&str, Option<&str>, String, Option<&str>) = match self {
            GatewayError::InvalidRequest { code, message, param } => {
                ("invalid_request_error", Some(code), message.clone(), param.as_deref())
            }
            GatewayError::MissingApiKey => (
                "authentication_error",
                Some("missing_api_key"),
                "No API key provided. Send it as `Authorization: Bearer rsk_...`.".to_owned(),
                None,
            ),
            GatewayError::InvalidApiKey => {
                ("authentication_error", Some("invalid_api_key"), "Invalid API key provided.".to_owned(), None)
            }
            GatewayError::KeySuspended { message } => {
                ("permission_error", Some("key_suspended"), message.clone(), None)
            }
            GatewayError::ModelNotAllowed { model } => (
                "permission_error",
                Some("model_not_allowed"),
                format!("This API key is not allowed to use the model `{model}`."),
                Some("model"),
            ),
            GatewayError::SpendLimitExceeded { message } => {
                ("insufficient_quota", Some("spend_limit_exceeded"), message.clone(), None)
            }
            GatewayError::NotFound { code, message, param } => {
                ("invalid_request_error", Some(code), message.clone(), param.as_deref())
            }
            GatewayError::Conflict { code, message } => ("invalid_request_error", Some(code), message.clone(), None),
            GatewayError::Forbidden { code, message } => ("permission_error", Some(code), message.clone(), None),
            GatewayError::RequestTooLarge { limit_bytes } => (
                "invalid_request_error",
                Some("request_too_large"),
                format!("The request body exceeds the limit of {limit_bytes} bytes."),
                None,
            ),
            GatewayError::RequestTimeout { idle, total } => (
                "invalid_request_error",
                Some("request_timeout"),
                format!(
                    "The request body did not arrive in time: at most {} s may pass between two pieces of it and {} s for all of it.",
                    idle.as_secs(),
                    total.as_secs()
                ),
                None,
            ),
            GatewayError::RateLimited { window, limit, retry_after_seconds } => (
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                format!(
                    "Rate limit reached: {limit} requests per {} ({}). Try again in {retry_after_seconds} s.",
                    if *window == Window::Minute { "minute" } else { "day" },
                    window.label()
                ),
                None,
            ),
            // Scrubbed here as well as where faults are built: no path shows a credential.
            GatewayError::UpstreamClient(fault) => (
                fault.error_type.as_str(),
                fault.code.as_deref(),
                crate::scrub::credentials(&fault.message).into_owned(),
                fault.param.as_deref(),
            ),
            GatewayError::UpstreamFailure(_) | GatewayError::UpstreamCredential(_) | GatewayError::UpstreamBusy { .. } => {
                ("api_error", Some("upstream_error"), "The provider failed to answer the request.".to_owned(), None)
            }
            GatewayError::StoreUnavailable(_) => (
                "api_error",
                Some("store_unavailable"),
                "A storage dependency of the gateway is unavailable; try again shortly.".to_owned(),
                None,
            ),
            GatewayError::SettlementBacklog { .. } => (
                "api_error",
                Some("store_unavailable"),
                "The gateway is catching up on writing usage records; try again in 1 s.".to_owned(),
                None,
            ),
            GatewayError::ProviderNotAvailable(provider) => (
                "api_error",
                Some("provider_not_available"),
                format!("The provider `{provider}` is not configured on this gateway."),
                None,
            ),
            GatewayError::GatewayTimeout(_) => {
                ("api_error", Some("gateway_timeout"), "The provider did not answer in time.".to_owned(), None)
            }
            GatewayError::Internal(_) => {
                ("api_error", Some("internal_error"), "The gateway hit an internal error.".to_owned(), None)
            }
        };
        let mut error = json!({ "message": message, "type": error_type, "param": param, "code": code });
        if let Some(seconds) = self.retry_after_seconds() {
            error["retry_after_seconds"] = json!(seconds);
        }
        error
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after_seconds, .. } => Some(*retry_after_seconds),
            GatewayError::SettlementBacklog { .. } => Some(1),
            GatewayError::UpstreamClient(fault) if fault.status == 429 => fault.retry_after_seconds,
            _ => None,
        }
    }

    /// Renders the error as an HTTP response carrying the request id: the only place this happens.
    pub fn render(&self, request_id: &str) -> http::Response<Bytes> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(request_id, kind = self.kind(), detail = %self, "request failed");
        } else {
            tracing::info!(request_id, kind = self.kind(), "request refused");
        }
        let body = json!({ "error": self.body(), "request_id": request_id });
        let mut response = http::Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_seconds() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", value);
        }
        response
    }
}

/// An error a handler answered with, waiting for the request id to be rendered with.
#[derive(Debug, Clone)]
struct Unrendered(Arc<GatewayError>);

/// The error's status, carrying the error itself: the layer that minted the request id renders
/// it ([`with_request_id`]), so no handler needs the id to answer an error.
impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        response.extensions_mut().insert(Unrendered(Arc::new(self)));
        response
    }
}

/// Renders the error a response carries, if any ([`IntoResponse`] for [`GatewayError`]), with
/// the request id: the envelope and its headers, then the headers the handler added (limits,
/// routing, `connection: close`), under the status the handler answered with.
pub fn with_request_id(response: Response, request_id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Some(Unrendered(err)) = parts.extensions.remove::<Unrendered>() else {
        return Response::from_parts(parts, body);
    };
    let (rendered, envelope) = err.render(request_id).into_parts();
    let mut headers = rendered.headers;
    headers.extend(std::mem::take(&mut parts.headers));
    parts.headers = headers;
    Response::from_parts(parts, axum::body::Body::from(envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_carries_request_id_and_retry_after() {
        let err = GatewayError::RateLimited { window: Window::Day, limit: 10, retry_after_seconds: 42 };
        let response = err.render("req_1");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "42");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["request_id"], "req_1");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["retry_after_seconds"], 42);
        assert!(body["error"]["message"].as_str().unwrap().contains("RPD"));
    }

    #[tokio::test]
    async fn a_handler_error_is_rendered_with_the_request_id_keeping_its_status_and_headers() {
        let err = GatewayError::RateLimited { window: Window::Minute, limit: 1, retry_after_seconds: 7 };
        let expected = err.render("req_1");
        let mut answered = (http::StatusCode::IM_A_TEAPOT, err).into_response();
        answered.headers_mut().insert("x-added", HeaderValue::from_static("yes"));
        let response = with_request_id(answered, "req_1");
        assert_eq!(response.status(), 418);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["x-request-id"], "req_1");
        assert_eq!(response.headers()["x-added"], "yes");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body, expected.body(), "the envelope, byte for byte");
        let plain = with_request_id(http::StatusCode::OK.into_response(), "req_1");
        assert!(plain.headers().get("x-request-id").is_none(), "other responses pass as they are");
    }

    #[test]
    fn provider_messages_never_show_credentials() {
        let err = GatewayError::UpstreamClient(UpstreamFault {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            code: Some("context_length_exceeded".to_owned()),
            message: "Bad request for key AIzaSyA-1234567890abcdefghijklmnopqrstu".to_owned(),
            param: None,
            retry_after_seconds: None,
        });
        let response = err.render("req_1");
        let body = String::from_utf8_lossy(response.body()).into_owned();
        assert!(!body.contains("AIza"), "{body}");
        assert!(body.contains("Bad request for key [redacted]"), "{body}");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let err = GatewayError::StoreUnavailable("dynamodb at 10.0.0.1: secret table".to_owned());
        let body = err.body();
        assert!(!body["message"].as_str().unwrap().contains("10.0.0.1"));
        assert_eq!(body["code"], "store_unavailable");
    }
}
