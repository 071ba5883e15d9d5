//! `POST /v1/responses`: validate, authenticate, render the template, rebuild the conversation,
//! resolve the model, apply plugins, limit, reserve, dispatch, store and settle.
//!
//! The stages up to the provider call ([`admit`]) and the request's own task ([`serve`]) are
//! shared with `POST /v1/chat/completions` (`super::chat`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use super::stream::stream_response;
use super::{
    add_limit_headers, authenticate, check_limits, error_response, json_response, AppState, ClientRequestId, RequestId,
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

/// The endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Responses,
    ChatCompletions,
}

/// The handler.
pub async fn create(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Extension(client_id): Extension<ClientRequestId>,
    platform_deadline: Option<Extension<Deadline>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(state, id, client_id, platform_deadline, headers, body, Endpoint::Responses).await
}

/// Runs one request of `endpoint` in its own task, then answers with its limit and routing
/// headers.
pub(super) async fn serve(
    state: AppState,
    id: RequestId,
    client_id: ClientRequestId,
    platform_deadline: Option<Extension<Deadline>>,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    let budget = std::time::Instant::now() + state.config.upstream.total;
    let deadline = Deadline(platform_deadline.map_or(budget, |Extension(d)| d.0.min(budget)));
    // The work runs in its own task: a client that hangs up mid-request cancels only this
    // handler, while the provider call still finishes and its real usage is settled (and any
    // hard-cap reservation released).
    let worker_state = state.clone();
    let ids = Ids { request_id: id.0.clone(), client_request_id: client_id.0 };
    // Every event of the request carries its ids, key and model through this span.
    let span = tracing::info_span!(
        "request",
        request_id = %ids.request_id,
        client_request_id = ids.client_request_id.as_deref().unwrap_or_default(),
        key_id = tracing::field::Empty,
        model = tracing::field::Empty,
    );
    let work = state.tasks.spawn(
        async move {
            let mut meta = Meta::default();
            let result = match endpoint {
                Endpoint::Responses => handle(&worker_state, &ids, &headers, body, deadline, &mut meta).await,
                Endpoint::ChatCompletions => {
                    super::chat::handle(&worker_state, &ids, &headers, body, deadline, &mut meta).await
                }
            };
            (result, meta)
        }
        .instrument(span),
    );
    let (result, meta) = match work.await {
        Ok(done) => done,
        Err(_) => (Err(GatewayError::Internal("request task failed".to_owned())), Meta::default()),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(err) => error_response(&err, &id.0),
    };
    if let Some(decision) = &meta.limits {
        add_limit_headers(response.headers_mut(), decision);
    }
    add_routing_headers(response.headers_mut(), &meta.routing);
    response
}

/// The gateway's id of a request and the caller's own, if it sent one.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    pub(super) request_id: String,
    client_request_id: Option<String>,
}

/// `X-Mesh-Routing-Attempts`, `X-Mesh-Routing-Fallback` and `X-Mesh-Served-Provider`.
fn add_routing_headers(headers: &mut HeaderMap, routing: &Routing) {
    if routing.attempts == 0 {
        return;
    }
    headers.insert("x-mesh-routing-attempts", HeaderValue::from(routing.attempts));
    headers
        .insert("x-mesh-routing-fallback", HeaderValue::from_static(if routing.fallback { "true" } else { "false" }));
    if let Some(provider) = routing.served_provider.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert("x-mesh-served-provider", provider);
    }
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
    pub(super) fn abandon(&mut self, err: GatewayError, routing: &Routing) -> GatewayError {
        if let (Some(provider), Some(ticket)) = (&routing.served_provider, self.ticket()) {
            ticket.provider.clone_from(provider);
        }
        self.record = err.status().is_server_error();
        err
    }

    /// Bills at the prices of the row that served.
    pub(super) fn served_by(&mut self, row: &ModelPrice) {
        if let Some(ticket) = self.ticket() {
            ticket.provider.clone_from(&row.provider);
            ticket.sheet = row.sheet().unwrap_or(ticket.sheet);
        }
    }
}

/// A request that passed every refusal before its provider call: its key, the parsed request,
/// its plan, and its ticket, settled at no cost unless handed to settlement.
pub(super) struct Admitted<R> {
    pub(super) key: Arc<ApiKey>,
    pub(super) request: R,
    pub(super) plan: Plan,
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
    ids: &Ids,
    headers: &HeaderMap,
    body: Body,
    meta: &mut Meta,
    parse: fn(&[u8]) -> Result<R, GatewayError>,
) -> Result<Admitted<R>, GatewayError> {
    let started = Instant::now();
    let key = authenticate(&state.cached, headers).instrument(tracing::info_span!("auth")).await?;
    tracing::Span::current().record("key_id", key.id.as_str());
    let bytes = read_body(headers, body).await?;
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
    Ok(Admitted { key, request: parsed, plan, pending })
}

/// The pipeline, cheapest refusals first: the key (headers only), the body (bounded), the model
/// from the cached catalog, the rate limits; only then templates, stored history and the
/// store; then the spend cap; then the provider.
async fn handle(
    state: &AppState,
    ids: &Ids,
    headers: &HeaderMap,
    body: Body,
    deadline: Deadline,
    meta: &mut Meta,
) -> Result<Response, GatewayError> {
    let Admitted { key, request, plan, mut pending } = admit(state, ids, headers, body, meta, request::parse).await?;
    let trace = trace_context(headers);
    let served = match route(state, &plan, &request, &key, &trace, deadline, &mut meta.routing).await {
        Ok(served) => served,
        Err(err) => return Err(pending.abandon(err, &meta.routing)),
    };
    pending.served_by(&served.row);
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
pub(super) fn trace_context(headers: &HeaderMap) -> Vec<(&'static str, String)> {
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
    let settlement = async move {
        if let Some((archive, response)) = stored {
            archive.save(&cached.stores, response).await;
        }
        settle(cached, ticket, usage, status).await
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
