//! `GET /healthz` (liveness, no I/O) and `GET /readyz` (the store and the limiter answer).

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use super::{json_response, AppState, JsonReply};

pub async fn healthz() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

pub async fn readyz(State(state): State<AppState>) -> JsonReply {
    let timeout = std::time::Duration::from_secs(2);
    let store = matches!(tokio::time::timeout(timeout, state.cached.stores.health.ping()).await, Ok(Ok(())));
    let limiter = matches!(tokio::time::timeout(timeout, state.limiter.ping()).await, Ok(Ok(())));
    let status = if store && limiter { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "store": if store { "ok" } else { "unavailable" },
        "rate_limiter": if limiter { "ok" } else { "unavailable" },
    });
    JsonReply(status, body)
}
