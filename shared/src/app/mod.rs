//! The HTTP app: one axum router served by both front doors (Lambda streaming and standalone).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio_util::task::TaskTracker;

use crate::config::{Config, FailMode};
use crate::error::GatewayError;
use crate::ids::{new_request_id, sane_request_id};
use crate::limits::{LimitDecision, RateLimiter};
use crate::providers::Dispatcher;
use crate::store::cache::Cached;

mod auth;
pub mod body;
mod health;
mod models;
pub mod responses;
mod stored;
mod stream;
mod templates;

pub use auth::authenticate;
pub use templates::{new_template as template_from_fields, view as template_view, MAX_TEMPLATE_BYTES};

/// How accounting writes are scheduled relative to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleMode {
    /// Standalone server: the process outlives the response, so settle in the background.
    Background,
    /// Lambda: the environment may freeze once the body ends, so settle before ending it
    /// (after the last byte of the answer has been sent).
    BeforeBodyEnds,
}

/// Counters exported in logs and `/readyz`.
#[derive(Debug, Default)]
pub struct Counters {
    pub limiter_fail_open: AtomicU64,
}

/// Everything a request needs, built once per process (cold start) and shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub cached: Arc<Cached>,
    pub limiter: Arc<dyn RateLimiter>,
    pub dispatcher: Dispatcher,
    pub settle_mode: SettleMode,
    pub tasks: TaskTracker,
    pub counters: Arc<Counters>,
    /// Circuit breakers per (provider, model), in this process.
    pub breakers: Arc<crate::routing::Breakers>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settle_mode", &self.settle_mode).finish_non_exhaustive()
    }
}

/// The request id of the current request (the caller's sane `x-request-id`, or `req_<ULID>`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/responses", post(responses::create))
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

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map_or_else(new_request_id, str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
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

/// Checks the key's windows, applying the configured fail mode when the limiter cannot answer.
/// The decision (for the `x-ratelimit-*` headers) is left in `decision`, refusals included.
pub async fn check_limits(
    state: &AppState,
    key: &crate::domain::ApiKey,
    decision: &mut Option<LimitDecision>,
) -> Result<(), GatewayError> {
    if !key.is_rate_limited() {
        return Ok(());
    }
    match state.limiter.check(&key.id, key.rpm, key.rpd).await {
        Ok(checked) => {
            *decision = Some(checked);
            crate::metrics::limiter(if checked.refused_by.is_some() { "refused" } else { "allowed" });
            match checked.refused_by {
                Some(window) => {
                    let limit = if window == crate::error::Window::Minute { key.rpm } else { key.rpd };
                    Err(GatewayError::RateLimited {
                        window,
                        limit: limit.unwrap_or(0),
                        retry_after_seconds: checked.retry_after(),
                    })
                }
                None => Ok(()),
            }
        }
        Err(err) => match state.config.rate_limit_fail_mode {
            FailMode::Open => {
                let total = state.counters.limiter_fail_open.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(key_id = %key.id, error = %err, limiter_fail_open_total = total, "rate limiter unavailable; serving (fail open)");
                crate::metrics::limiter("fail_open");
                Ok(())
            }
            FailMode::Closed => {
                crate::metrics::limiter("fail_closed");
                Err(GatewayError::StoreUnavailable(format!("rate limiter: {err}")))
            }
        },
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

/// Builds the shared state from the configuration (no I/O that can wait: clients connect lazily).
pub async fn build_state(mut config: Config, settle_mode: SettleMode) -> Result<AppState, GatewayError> {
    crate::secrets::resolve(&mut config).await;
    if config.emf_metrics {
        crate::metrics::enable();
    }
    let stores = crate::store::open(&config.store).await?;
    let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
        Some(url) => {
            let ca = match &config.redis_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| GatewayError::Internal(format!("MESH_REDIS_CA_FILE {}: {e}", path.display())))?,
                ),
                None => None,
            };
            Arc::new(
                crate::limits::redis::RedisLimiter::new(
                    url.expose(),
                    config.redis_cluster,
                    config.redis_timeout,
                    config.redis_breaker_interval,
                    ca,
                )
                .map_err(|e| GatewayError::Internal(format!("redis: {e}")))?,
            )
        }
        None => Arc::new(crate::limits::memory::MemoryLimiter::new()),
    };
    state_with(config, stores, limiter, settle_mode)
}

/// Builds the state from given adapters (tests pass their own).
pub fn state_with(
    config: Config,
    stores: crate::store::Stores,
    limiter: Arc<dyn RateLimiter>,
    settle_mode: SettleMode,
) -> Result<AppState, GatewayError> {
    let dispatcher =
        Dispatcher::new(&config.providers, config.upstream)?.with_bedrock_s3_buckets(config.bedrock_s3_buckets.clone());
    let breakers = Arc::new(crate::routing::Breakers::new(config.routing));
    Ok(AppState {
        cached: Arc::new(Cached::new(stores, config.cache_ttl)),
        config: Arc::new(config),
        limiter,
        dispatcher,
        settle_mode,
        tasks: TaskTracker::new(),
        counters: Arc::new(Counters::default()),
        breakers,
    })
}

impl AppState {
    /// Whether another instance reported this pair's breaker open (through the shared limiter
    /// backend); mirrors it locally so later checks need no round trip.
    pub async fn peer_breaker_open(&self, pair: &str) -> bool {
        match self.limiter.breaker_open_for(pair).await {
            Some(remaining) if !remaining.is_zero() => {
                self.breakers.open_from_peer(pair, remaining);
                true
            }
            _ => false,
        }
    }

    /// Tells other instances that this pair's breaker opened.
    pub fn announce_breaker_open(&self, pair: &str) {
        let limiter = self.limiter.clone();
        let pair = pair.to_owned();
        let open_for = self.breakers.policy().open_for;
        tokio::spawn(async move { limiter.open_breaker(&pair, open_for).await });
    }
}
