//! `POST /v1/responses`: validate, authenticate, render the template, rebuild the conversation,
//! resolve the model, apply plugins, limit, reserve, dispatch, store and settle.
//!
//! The stages up to the provider call ([`admit`]) and the request's own task ([`serve`]) are
//! shared with `POST /v1/chat/completions` (`super::chat`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use super::stream::stream_response;
use super::{
    check_limits, json_response, AppState, Authenticated, ClientRequestId, LimitHeaders, RequestId, RoutingHeaders,
    SettleMode,
};
use crate::accounting::{settle, Ticket};
use crate::archive::Archive;
use crate::domain::{ApiKey, ModelPrice, UsageStatus};
use crate::error::GatewayError;
use crate::limits::LimitDecision;
use crate::money::TokenUsage;
use crate::pipeline::caps::{check_balance, hold_spend, reserve};
use crate::pipeline::failover::{route, Served};
use crate::pipeline::plan::{plan, resolve, Plan};
use crate::providers::Reply;
use crate::request::{self, ResponsesRequest};
use crate::routing::{Deadline, Routing};

/// What the response headers report besides the body: limits and routing.
#[derive(Debug, Default)]
pub(super) struct Meta {
    limits: Option<LimitDecision>,
    pub(super) routing: Routing,
}

/// The limit headers (of a limited key) and the routing headers, on any answer.
impl IntoResponseParts for Meta {
    type Error = Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Self::Error> {
        if let Some(decision) = self.limits {
            parts.headers_mut().extend(LimitHeaders(decision).headers());
        }
        parts.headers_mut().extend(RoutingHeaders(self.routing).headers());
        Ok(parts)
    }
}

/// The endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Responses,
    ChatCompletions,
}

/// The handler.
pub async fn create(State(state): State<AppState>, incoming: Incoming) -> Response {
    serve(state, incoming, Endpoint::Responses).await
}

/// A request to the pipeline as its handlers take it: its ids, the platform's deadline if any,
/// its key (authenticated from the headers first: a refused key costs no body read), the
/// headers, and the body, still unread (read by [`admit`] within the same bounds as every body).
pub struct Incoming {
    ids: Ids,
    platform_deadline: Option<Deadline>,
    key: Arc<ApiKey>,
    headers: HeaderMap,
    body: Body,
    started: Instant,
}

impl FromRequest<AppState> for Incoming {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        let request_id = request_id.ok_or_else(|| GatewayError::Internal("no request id".to_owned()))?;
        let client_request_id = parts.extensions.get::<ClientRequestId>().and_then(|id| id.0.clone());
        let platform_deadline = parts.extensions.get::<Deadline>().copied();
        let Authenticated(key) = Authenticated::from_request_parts(&mut parts, state).await?;
        let ids = Ids { request_id, client_request_id };
        Ok(Incoming { ids, platform_deadline, key, headers: parts.headers, body, started })
    }
}

/// Runs one request of `endpoint` in its own task, then answers with its limit and routing
/// headers.
pub(super) async fn serve(state: AppState, incoming: Incoming, endpoint: Endpoint) -> Response {
    let budget = std::time::Instant::now() + state.config.upstream.total;
    let deadline = Deadline(incoming.platform_deadline.map_or(budget, |d| d.0.min(budget)));
    // The work runs in its own task (in the request's span): a client that hangs up mid-request
    // cancels only this handler, while the provider call still finishes and its real usage is
    // settled (and any hard-cap reservation released).
    let worker_state = state.clone();
    let work = state.tasks.spawn(
        async move {
            let mut meta = Meta::default();
            let result = match endpoint {
                Endpoint::Responses => handle(&worker_state, incoming, deadline, &mut meta).await,
                Endpoint::ChatCompletions => super::chat::handle(&worker_state, incoming, deadline, &mut meta).await,
            };
            (result, meta)
        }
        .instrument(tracing::Span::current()),
    );
    let (result, meta) = match work.await {
        Ok(done) => done,
        Err(_) => (Err(GatewayError::Internal("request task failed".to_owned())), Meta::default()),
    };
    (meta, result).into_response()
}

/// The gateway's id of a request and the caller's own, if it sent one.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    pub(super) request_id: String,
    client_request_id: Option<String>,
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, GatewayError> {
    super::body::read(headers, body, super::body::BODY_IDLE_TIMEOUT, super::body::BODY_TOTAL_TIMEOUT).await
}

/// The fields read before the rate limits: the rest of the body is validated only for a
/// request that passed them.
/// Nothing is built but the model's name: the other fields stay raw text in the body.
#[derive(Default, serde::Deserialize)]
struct Peek<'a> {
    #[serde(default, borrow)]
    model: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    template: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    input: request::ItemCount,
}

impl Peek<'_> {
    /// The model when it is a string (anything else is for the full validation to refuse).
    fn model(&self) -> Option<String> {
        self.model.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    }

    fn names_template(&self) -> bool {
        self.template.is_some_and(|raw| raw.get() != "null")
    }
}

/// A request whose ticket was not handed to settlement (an error, a panic) is settled at no cost
/// when this is dropped: its hard-cap reservation is released and, when asked, an audit record
/// of the failure is kept.
pub(super) struct Unsettled {
    cached: Arc<crate::store::cache::Cached>,
    tasks: tokio_util::task::TaskTracker,
    ticket: Option<Ticket>,
    /// Record the failure even without a reservation.
    record: bool,
}

impl Unsettled {
    fn ticket(&mut self) -> Option<&mut Ticket> {
        self.ticket.as_mut()
    }

    /// Hands the ticket to settlement.
    pub(super) fn take(&mut self) -> Option<Ticket> {
        self.ticket.take()
    }

    /// Nothing was served: the reservation is released and a failure of the gateway or the
    /// provider is kept as an audit record at no cost (when this drops).
    fn abandon(&mut self, err: GatewayError, routing: &Routing) -> GatewayError {
        if let (Some(provider), Some(ticket)) = (&routing.served_provider, self.ticket()) {
            ticket.provider.clone_from(provider);
        }
        self.record = err.status().is_server_error();
        err
    }

    /// The provider's answer, billed at the prices of the row that served it; or, when none did,
    /// the error, the request abandoned ([`Self::abandon`]).
    pub(super) fn routed<R>(
        &mut self,
        result: Result<Served<R>, GatewayError>,
        routing: &Routing,
    ) -> Result<Served<R>, GatewayError> {
        match result {
            Ok(served) => {
                self.served_by(&served.row);
                Ok(served)
            }
            Err(err) => Err(self.abandon(err, routing)),
        }
    }

    /// Bills at the prices of the row that served.
    fn served_by(&mut self, row: &ModelPrice) {
        if let Some(ticket) = self.ticket() {
            ticket.provider.clone_from(&row.provider);
            ticket.sheet = row.sheet().unwrap_or(ticket.sheet);
        }
    }
}

/// A request that passed every refusal before its provider call: its ids and key, the parsed
/// request, its plan, the trace context to pass on, and its ticket, settled at no cost unless
/// handed to settlement.
pub(super) struct Admitted<R> {
    pub(super) ids: Ids,
    pub(super) key: Arc<ApiKey>,
    pub(super) request: R,
    pub(super) plan: Plan,
    pub(super) trace: Vec<(&'static str, String)>,
    pub(super) pending: Unsettled,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        if ticket.reservation.is_none() && !self.record {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(request_id = %ticket.request_id, "no runtime to settle an abandoned request on");
            return;
        };
        let settlement = settle(self.cached.clone(), ticket, TokenUsage::default(), UsageStatus::Error);
        self.tasks.spawn_on(settlement, &runtime);
    }
}

/// The stages every endpoint runs before its provider call, cheapest refusals first: the key
/// (headers only), the body (bounded), the model from the cached catalog, the rate limits; only
/// then the full parse (`parse`, the endpoint's), templates, stored history and plugins; then
/// the balance and the spend cap.
pub(super) async fn admit<R: AsRef<ResponsesRequest>>(
    state: &AppState,
    incoming: Incoming,
    meta: &mut Meta,
    parse: fn(&[u8]) -> Result<R, GatewayError>,
) -> Result<Admitted<R>, GatewayError> {
    let Incoming { ids, key, headers, body, started, .. } = incoming;
    state.cached.admit().await?;
    let bytes = read_body(&headers, body).await?;
    let peek: Peek = match serde_json::from_slice(&bytes) {
        Ok(peek) => peek,
        // Not an object: the full parse says what is wrong.
        Err(_) => parse(&bytes).map(|_| Peek::default())?,
    };
    request::check_item_count(peek.input)?;
    // The model is known before the limits unless a template may name it.
    let requested = peek.model();
    let template_named = peek.names_template();
    let early = match (requested.as_deref().or(key.default_model.as_deref()), template_named) {
        (Some(model), _) => Some(resolve(state, &key, model).await?),
        (None, false) => match &state.config.default_model {
            Some(model) => Some(resolve(state, &key, model).await?),
            None => None,
        },
        (None, true) => None,
    };
    let shared_spend = check_limits(state, &key, &mut meta.limits).instrument(tracing::info_span!("limits")).await?;
    let parsed = parse(&bytes)?;
    let request = parsed.as_ref();
    let plan = plan(state, request, &key, early).await?;
    tracing::Span::current().record("model", plan.model.as_str());
    let primary = plan.rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    let sheet = primary.sheet().ok_or_else(|| GatewayError::Internal("unpriced row".to_owned()))?;
    let debit_owner_balance = check_balance(state, &key, sheet.is_free).await?;
    let input_bytes = bytes.len() + plan.added_bytes();
    drop(bytes);
    let reservation = reserve(state, &key, &ids.request_id, request, &plan.rows, input_bytes, shared_spend).await?;
    let pending = Unsettled {
        cached: state.cached.clone(),
        tasks: state.tasks.clone(),
        ticket: Some(Ticket {
            request_id: ids.request_id.clone(),
            client_request_id: ids.client_request_id.clone(),
            key_id: key.id.clone(),
            key_hash: key.key_hash.clone(),
            owner: key.owner.clone(),
            model: plan.model.clone(),
            provider: primary.provider.clone(),
            session_id: request.session_id.clone(),
            template_id: plan.template.as_ref().map(|t| t.id.clone()),
            sheet,
            reservation,
            debit_owner_balance,
            share_spend: shared_spend.is_some(),
            started,
        }),
        record: false,
    };
    let trace = trace_context(&headers);
    Ok(Admitted { ids, key, request: parsed, plan, trace, pending })
}

/// The pipeline, cheapest refusals first: the key (headers only), the body (bounded), the model
/// from the cached catalog, the rate limits; only then templates, stored history and the
/// store; then the spend cap; then the provider.
async fn handle(
    state: &AppState,
    incoming: Incoming,
    deadline: Deadline,
    meta: &mut Meta,
) -> Result<Response, GatewayError> {
    let Admitted { key, request, plan, trace, mut pending, .. } = admit(state, incoming, meta, request::parse).await?;
    let routed = route(state, &plan, &request, &key, &trace, deadline, &mut meta.routing).await;
    let served = pending.routed(routed, &meta.routing)?;
    let archive = plan.archive(state, &request, &key, &served.provider.name);
    drop(request);
    tracing::debug!(provider = %served.provider.name, "served");
    let Served { reply, body: sent, .. } = served;
    match reply {
        Reply::Complete(mut done) => {
            let status = match done.status.as_str() {
                "incomplete" => UsageStatus::Incomplete,
                "failed" => UsageStatus::Failed,
                _ => UsageStatus::Success,
            };
            let ticket = pending.take().ok_or_else(|| GatewayError::Internal("request settled twice".to_owned()))?;
            if let Err(err) = plan.plugins.after(&sent, &mut done.response) {
                state.tasks.spawn(settle(state.cached.clone(), ticket, done.usage, UsageStatus::Error));
                return Err(err);
            }
            drop((plan, sent));
            let body =
                Bytes::from(serde_json::to_vec(&done.response).map_err(|e| GatewayError::Internal(e.to_string()))?);
            let stored = archive.map(|archive| (archive, done.response));
            Ok(complete_response(state, body, stored, ticket, done.usage, status))
        }
        Reply::Stream(source) => {
            drop((plan, sent));
            let ticket = pending.take().ok_or_else(|| GatewayError::Internal("request settled twice".to_owned()))?;
            Ok(stream_response(state, source, ticket, archive))
        }
    }
}

/// The incoming trace context, to pass on to the provider.
fn trace_context(headers: &HeaderMap) -> Vec<(&'static str, String)> {
    crate::providers::TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            (value.len() <= 512).then(|| (*name, value.to_owned()))
        })
        .collect()
}

/// A complete JSON answer. Storing the response and accounting run after the last byte, as the
/// front door allows (in the background, or before the body ends under Lambda); a continuation
/// that races the store write finds it through [`archive::chain`]'s short wait.
pub(super) fn complete_response(
    state: &AppState,
    body: Bytes,
    stored: Option<(Archive, Value)>,
    ticket: Ticket,
    usage: TokenUsage,
    status: UsageStatus,
) -> Response {
    hold_spend(state, &ticket, &usage);
    let cached = state.cached.clone();
    let settling = settle(cached.clone(), ticket, usage, status);
    let settlement = async move {
        if let Some((archive, response)) = stored {
            archive.save(&cached.stores, response).await;
        }
        settling.await
    };
    match state.settle_mode {
        SettleMode::Background => {
            state.tasks.spawn(settlement);
            json_response(StatusCode::OK, body)
        }
        SettleMode::BeforeBodyEnds => {
            // No content-length: the body is only over once the accounting tail has run, and
            // an HTTP server would stop polling a body at its declared length.
            let answer = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
            let tail =
                futures_util::stream::once(settlement).filter_map(|_| async { None::<Result<Bytes, Infallible>> });
            let mut response = Response::new(Body::from_stream(answer.chain(tail)));
            response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    }
}
