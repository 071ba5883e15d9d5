//! The failover loop: a plan's catalog rows in order, each tried with retries (backoff with
//! jitter, `retry-after`) while its circuit breaker allows, until one answers or the deadline.
//! The loop serves every endpoint: a [`Surface`] says what body a row's provider gets and how
//! it is called (the Responses API's in [`route`]; Chat Completions' in `chat_completions`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::plan::Plan;
use crate::config::ProviderConfig;
use crate::domain::{ApiKey, ModelPrice};
use crate::error::GatewayError;
use crate::providers::assemble::ResponseContext;
use crate::providers::{Body, Dispatcher, Reply, Route};
use crate::request::ResponsesRequest;
use crate::routing::{self, Deadline, Failure, Gate, Routing};
use crate::state::AppState;

/// What an endpoint makes of a plan for one catalog row, and how it calls that row's provider.
pub trait Surface: Sync {
    /// What a provider call produces.
    type Reply: Send;
    /// The body for one catalog row and its provider.
    fn body_for(&self, plan: &Plan, key: &ApiKey, route: &Route) -> Result<Body, GatewayError>;
    /// One attempt at the provider of a row.
    fn call(&self, attempt: Attempt<'_>) -> impl Future<Output = Result<Self::Reply, GatewayError>> + Send;
}

/// One attempt at a row's provider: who sends it, where it goes, the body it takes, the catalog
/// model the client asked for, and when it must be done.
pub struct Attempt<'a> {
    pub dispatcher: &'a Dispatcher,
    pub route: &'a Route,
    pub body: &'a Body,
    pub catalog_model: &'a str,
    pub deadline: Instant,
}

/// `POST /v1/responses`: Responses bodies, answers translated to the Responses API.
struct ResponsesSurface<'a> {
    request: &'a ResponsesRequest,
    response_id: &'a str,
}

impl Surface for ResponsesSurface<'_> {
    type Reply = Reply;

    fn body_for(&self, plan: &Plan, key: &ApiKey, route: &Route) -> Result<Body, GatewayError> {
        plan.body_for(self.request, key, &route.row, &route.provider)
    }

    async fn call(&self, at: Attempt<'_>) -> Result<Reply, GatewayError> {
        let ctx = ResponseContext::for_request(self.response_id, at.catalog_model, at.body, &self.request.body);
        at.dispatcher.call(at.route, at.body, self.request.stream, ctx, at.deadline).await
    }
}

/// The provider call that answered, with its row.
pub struct Served<R = Reply> {
    pub reply: R,
    pub row: ModelPrice,
    pub provider: Arc<ProviderConfig>,
    pub body: Body,
}

/// Tries the plan's rows in order: each with retries (backoff, jitter, `retry-after`) while its
/// breaker allows, moving on when a provider fails before answering. Stops at the deadline.
pub async fn route(
    state: &AppState,
    plan: &Plan,
    request: &ResponsesRequest,
    key: &ApiKey,
    trace: &[(&'static str, String)],
    deadline: Deadline,
    routing: &mut Routing,
) -> Result<Served, GatewayError> {
    route_via(state, plan, &ResponsesSurface { request, response_id: &plan.response_id }, key, trace, deadline, routing)
        .await
}

/// [`route`] for any endpoint's [`Surface`].
pub async fn route_via<S: Surface>(
    state: &AppState,
    plan: &Plan,
    surface: &S,
    key: &ApiKey,
    trace: &[(&'static str, String)],
    deadline: Deadline,
    routing: &mut Routing,
) -> Result<Served<S::Reply>, GatewayError> {
    let policy = *state.breakers.policy();
    let mut last_error = None;
    let mut tried_rows = 0;
    for row in &plan.rows {
        let provider = match state.dispatcher.provider(&row.provider) {
            Ok(provider) => provider,
            Err(err) => {
                last_error.get_or_insert(err);
                continue;
            }
        };
        let pair = routing::pair(&provider.name, &row.upstream_model);
        if state.breakers.gate(&pair) == Gate::Open || state.peer_breaker_open(&pair).await {
            tracing::info!(provider = %provider.name, model = %row.upstream_model, "circuit open: skipping");
            last_error.get_or_insert(GatewayError::UpstreamFailure(format!("circuit open for {pair}")));
            continue;
        }
        let route = Route { row: row.clone(), provider: provider.clone(), trace: trace.to_vec() };
        let body = match surface.body_for(plan, key, &route) {
            Ok(body) => body,
            Err(err) if tried_rows == 0 => return Err(err),
            Err(err) => {
                last_error = Some(err);
                continue;
            }
        };
        tried_rows += 1;
        for attempt in 1..=policy.attempts_per_row {
            if deadline.remaining().is_zero() {
                return Err(GatewayError::GatewayTimeout("request deadline reached".to_owned()));
            }
            routing.attempts += 1;
            routing.served_provider = Some(provider.name.clone());
            let span = tracing::info_span!("dispatch", provider = %provider.name, upstream_model = %row.upstream_model, attempt);
            let call = Attempt {
                dispatcher: &state.dispatcher,
                route: &route,
                body: &body,
                catalog_model: &plan.model,
                deadline: deadline.0,
            };
            match surface.call(call).instrument(span).await {
                Ok(reply) => {
                    state.breakers.record(&pair, true);
                    routing.fallback = tried_rows > 1;
                    return Ok(Served { reply, row: row.clone(), provider, body });
                }
                Err(err) => match routing::classify(&err) {
                    Failure::Final => return Err(err),
                    Failure::NextRow => {
                        tracing::error!(provider = %provider.name, error = %err, "provider refused the gateway's credential; trying the next row");
                        if state.breakers.record(&pair, false) {
                            state.announce_breaker_open(&pair);
                        }
                        last_error = Some(err);
                        break;
                    }
                    Failure::Retryable(after) => {
                        tracing::warn!(provider = %provider.name, model = %row.upstream_model, attempt, error = %err, "provider attempt failed");
                        if state.breakers.record(&pair, false) {
                            state.announce_breaker_open(&pair);
                        }
                        last_error = Some(err);
                        // A provider asking for a long pause is better left for the next row.
                        if after.is_some_and(|after| after > policy.backoff_max) {
                            break;
                        }
                        if attempt < policy.attempts_per_row {
                            let wait = routing::backoff(&policy, attempt, after);
                            if wait >= deadline.remaining() {
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                },
            }
        }
    }
    Err(last_error.unwrap_or_else(|| GatewayError::ProviderNotAvailable(plan.model.clone())))
}
