//! `POST /v1/responses`: validate, authenticate, render the template, rebuild the conversation,
//! resolve the model, apply plugins, limit, reserve, dispatch, store and settle.

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
use serde_json::{json, Map, Value};

use super::stream::stream_response;
use super::{
    add_limit_headers, authenticate, check_limits, error_response, json_response, AppState, ClientRequestId, RequestId,
    SettleMode,
};
use crate::accounting::{settle, Ticket};
use crate::archive::{self, Archive};
use crate::catalog::{choose_model, serving_rows};
use crate::config::ProviderConfig;
use crate::conversation::{estimate_tokens, input_items, json_len, with_ids};
use crate::domain::{now_unix, ApiKey, CapMode, ModelPrice, StoredResponse, Template, UsageStatus, GLOBAL_OWNER};
use crate::error::GatewayError;
use crate::limits::LimitDecision;
use crate::money::{Nanos, TokenUsage};
use crate::plugins::{PluginContext, Selection};
use crate::providers::{Reply, Route};
use crate::request::{self, ResponsesRequest, GATEWAY_FIELDS, MAX_BODY_BYTES};
use crate::routing::{self, Deadline, Failure, Gate, Routing};
use crate::store::Reservation;
use crate::templates::{self, Rendered};

/// Providers whose API takes a `plugins` list (entries the gateway does not implement go there).
const PLUGIN_PROVIDERS: [&str; 1] = ["openrouter"];

/// What the response headers report besides the body: limits and routing.
#[derive(Debug, Default)]
struct Meta {
    limits: Option<LimitDecision>,
    routing: Routing,
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
    let budget = std::time::Instant::now() + state.config.upstream.total;
    let deadline = Deadline(platform_deadline.map_or(budget, |Extension(d)| d.0.min(budget)));
    // The work runs in its own task: a client that hangs up mid-request cancels only this
    // handler, while the provider call still finishes and its real usage is settled (and any
    // hard-cap reservation released).
    let worker_state = state.clone();
    let ids = Ids { request_id: id.0.clone(), client_request_id: client_id.0 };
    let work = state.tasks.spawn(async move {
        let mut meta = Meta::default();
        let result = handle(&worker_state, &ids, &headers, body, deadline, &mut meta).await;
        (result, meta)
    });
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
struct Ids {
    request_id: String,
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
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(GatewayError::RequestTooLarge { limit_bytes: MAX_BODY_BYTES });
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|err| {
        let too_large =
            std::error::Error::source(&err).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large || err.to_string().contains("length limit") {
            GatewayError::RequestTooLarge { limit_bytes: MAX_BODY_BYTES }
        } else {
            GatewayError::InvalidRequest {
                code: "invalid_json",
                message: "The request body could not be read.".to_owned(),
                param: None,
            }
        }
    })
}

/// The model of a request and the catalog rows that may serve it, in failover order.
struct Resolved {
    model: String,
    rows: Vec<ModelPrice>,
}

/// What a request resolved to before choosing a provider: model, candidate rows in failover
/// order, template, conversation and plugins. Each row gets its own provider body.
struct Plan {
    model: String,
    rows: Vec<ModelPrice>,
    template: Option<Template>,
    rendered: Option<Rendered>,
    chain: Vec<StoredResponse>,
    turn_items: Vec<Value>,
    plugins: Selection,
}

impl Plan {
    /// The body for one catalog row and its provider.
    fn body_for(
        &self,
        request: &ResponsesRequest,
        key: &ApiKey,
        row: &ModelPrice,
        provider: &ProviderConfig,
    ) -> Result<Map<String, Value>, GatewayError> {
        if let Some(first) = self.plugins.foreign.first() {
            if !PLUGIN_PROVIDERS.contains(&provider.name.as_str()) {
                return Err(GatewayError::invalid(
                    "unsupported_plugin",
                    "plugins",
                    format!(
                        "The plugin `{}` is not implemented by the gateway and the provider `{}` does not accept plugins.",
                        first["id"].as_str().unwrap_or_default(),
                        provider.name
                    ),
                ));
            }
        }
        let max_output_tokens = request.max_output_tokens.or(row.max_output_tokens);
        let ctx = PluginContext { context_length: row.context_length, max_output_tokens, stream: request.stream };
        let mut body = base_body(request, key, self.template.as_ref(), self.rendered.as_ref(), &self.plugins)?;
        if request.previous_response_id.is_some() || self.rendered.is_some() {
            let rest = self.turn_items.iter().map(estimate_tokens).sum::<u64>()
                + body.get("instructions").map_or(0, estimate_tokens)
                + body.get("tools").map_or(0, estimate_tokens);
            let budget = row.context_length.map(|c| c.saturating_sub(max_output_tokens.unwrap_or(0)));
            let mut input = archive::history_for(&self.chain, &provider.name, rest, budget);
            input.extend(self.turn_items.iter().cloned());
            body.insert("input".to_owned(), Value::Array(input));
            body.remove("previous_response_id");
        }
        self.plugins.before(&ctx, &mut body);
        Ok(body)
    }

    /// What to store once the turn is answered by `provider` (unless `store: false`).
    fn archive(&self, state: &AppState, request: &ResponsesRequest, key: &ApiKey, provider: &str) -> Option<Archive> {
        (request.body.get("store") != Some(&Value::Bool(false))).then(|| Archive {
            owner: key.owner.clone(),
            previous_response_id: request.previous_response_id.clone(),
            input_items: with_ids(if self.turn_items.is_empty() {
                input_items(request.body.get("input"))
            } else {
                self.turn_items.clone()
            }),
            model: self.model.clone(),
            provider: provider.to_owned(),
            ttl: state.config.response_ttl,
        })
    }

    /// Bytes sent upstream besides the request body itself: the rendered template and the
    /// rebuilt conversation (an upper bound: history is only ever cut to fit).
    fn added_bytes(&self) -> usize {
        let rendered = self
            .rendered
            .as_ref()
            .map_or(0, |r| r.system.as_deref().map_or(0, str::len) + r.messages.iter().map(json_len).sum::<usize>());
        let history: usize = self
            .chain
            .iter()
            .map(|turn| turn.input_items.iter().map(json_len).sum::<usize>() + json_len(&turn.response["output"]))
            .sum();
        rendered + history
    }
}

/// The provider call that answered, with its row.
struct Served {
    reply: Reply,
    row: ModelPrice,
    provider: Arc<ProviderConfig>,
    body: Map<String, Value>,
}

/// The fields read before the rate limits: the rest of the body is validated only for a
/// request that passed them.
#[derive(Default, serde::Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    template: Option<Value>,
}

/// A request whose ticket was not handed to settlement (an error, a panic) is settled at no cost
/// when this is dropped: its hard-cap reservation is released and, when asked, an audit record
/// of the failure is kept.
struct Unsettled {
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
    fn take(&mut self) -> Option<Ticket> {
        self.ticket.take()
    }
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
    let started = Instant::now();
    let key = authenticate(&state.cached, headers).await?;
    let bytes = read_body(headers, body).await?;
    let peek: Peek = match serde_json::from_slice(&bytes) {
        Ok(peek) => peek,
        // Not an object: the full parse says what is wrong.
        Err(_) => request::parse(&bytes).map(|_| Peek::default())?,
    };
    // The model is known before the limits unless a template may name it.
    let requested = peek.model.as_ref().and_then(Value::as_str);
    let template_named = peek.template.as_ref().is_some_and(|t| !t.is_null());
    let early = match (requested.or(key.default_model.as_deref()), template_named) {
        (Some(model), _) => Some(resolve(state, &key, model).await?),
        (None, false) => match &state.config.default_model {
            Some(model) => Some(resolve(state, &key, model).await?),
            None => None,
        },
        (None, true) => None,
    };
    let shared_spend = check_limits(state, &key, &mut meta.limits).await?;
    let request = request::parse(&bytes)?;
    let plan = plan(state, &request, &key, early).await?;
    let primary = plan.rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    let sheet = primary.sheet().ok_or_else(|| GatewayError::Internal("unpriced row".to_owned()))?;
    let debit_owner_balance = check_balance(state, &key, sheet.is_free).await?;
    let input_bytes = bytes.len() + plan.added_bytes();
    drop(bytes);
    let reservation = reserve(state, &key, &ids.request_id, &request, &plan.rows, input_bytes, shared_spend).await?;
    let mut pending = Unsettled {
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
    let served = match route(state, &plan, &request, &key, headers, deadline, &mut meta.routing).await {
        Ok(served) => served,
        Err(err) => {
            // Nothing was served: the reservation is released and a failure of the gateway or
            // the provider is kept as an audit record at no cost (when `pending` drops).
            if let (Some(provider), Some(ticket)) = (&meta.routing.served_provider, pending.ticket()) {
                ticket.provider.clone_from(provider);
            }
            pending.record = err.status().is_server_error();
            return Err(err);
        }
    };
    // Billed at the prices of the row that served.
    if let Some(ticket) = pending.ticket() {
        ticket.provider.clone_from(&served.row.provider);
        ticket.sheet = served.row.sheet().unwrap_or(ticket.sheet);
    }
    let archive = plan.archive(state, &request, &key, &served.provider.name);
    drop(request);
    tracing::debug!(request_id = %ids.request_id, key_id = %key.id, provider = %served.provider.name, "served");
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

/// The model's catalog rows, refusing a model the key may not use, an unknown model and a
/// primary provider that is not configured.
async fn resolve(state: &AppState, key: &ApiKey, model: &str) -> Result<Resolved, GatewayError> {
    if !key.allows_model(model) {
        return Err(GatewayError::ModelNotAllowed { model: model.to_owned() });
    }
    let rows = serving_rows(model, &state.cached.prices(model).await?)?;
    let primary = rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    // The primary provider must be configured; later rows are only failover targets.
    state.dispatcher.provider(&primary.provider)?;
    Ok(Resolved { model: model.to_owned(), rows })
}

/// Tries the plan's rows in order: each with retries (backoff, jitter, `retry-after`) while its
/// breaker allows, moving on when a provider fails before answering. Stops at the deadline.
async fn route(
    state: &AppState,
    plan: &Plan,
    request: &ResponsesRequest,
    key: &ApiKey,
    headers: &HeaderMap,
    deadline: Deadline,
    routing: &mut Routing,
) -> Result<Served, GatewayError> {
    let policy = *state.breakers.policy();
    let trace = trace_context(headers);
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
        let body = match plan.body_for(request, key, row, &provider) {
            Ok(body) => body,
            Err(err) if tried_rows == 0 => return Err(err),
            Err(err) => {
                last_error = Some(err);
                continue;
            }
        };
        tried_rows += 1;
        let route = Route { row: row.clone(), provider: provider.clone(), trace: trace.clone() };
        for attempt in 1..=policy.attempts_per_row {
            if deadline.remaining().is_zero() {
                return Err(GatewayError::GatewayTimeout("request deadline reached".to_owned()));
            }
            routing.attempts += 1;
            routing.served_provider = Some(provider.name.clone());
            match state.dispatcher.call(&route, &body, request.stream, &plan.model, deadline.0).await {
                Ok(reply) => {
                    state.breakers.record(&pair, true);
                    routing.fallback = tried_rows > 1;
                    return Ok(Served { reply, row: row.clone(), provider, body });
                }
                Err(err) => match routing::classify(&err) {
                    Failure::Final => return Err(err),
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

/// Finds a template by id, else by name among the owner's, then the global ones.
pub async fn find_template(state: &AppState, owner: &str, reference: &str) -> Result<Template, GatewayError> {
    let stores = &state.cached.stores;
    if let Some(template) = stores.templates.template(reference).await? {
        if template.owner == owner || template.is_global() {
            return Ok(template);
        }
    }
    for scope in [owner, GLOBAL_OWNER] {
        if let Some(template) = stores.templates.template_by_name(scope, reference).await? {
            return Ok(template);
        }
    }
    Err(GatewayError::NotFound {
        code: "template_not_found",
        message: format!("No template `{reference}` was found."),
        param: Some("template".to_owned()),
    })
}

/// Resolves the template, model (unless `early` did), candidate rows, conversation and plugins.
async fn plan(
    state: &AppState,
    request: &ResponsesRequest,
    key: &ApiKey,
    early: Option<Resolved>,
) -> Result<Plan, GatewayError> {
    let template = match &request.template {
        Some(reference) => Some(find_template(state, &key.owner, reference).await?),
        None => None,
    };
    let variables = request.body.get("variables").and_then(Value::as_object).cloned().unwrap_or_default();
    let rendered = template.as_ref().map(|t| templates::render(t, &variables)).transpose()?;
    let Resolved { model, rows } = match early {
        Some(resolved) => resolved,
        None => {
            let model = choose_model(
                request.model.as_deref(),
                key,
                template.as_ref().and_then(|t| t.model.as_deref()),
                state.config.default_model.as_deref(),
            )?;
            resolve(state, key, &model).await?
        }
    };
    let primary = rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    let ctx = PluginContext {
        context_length: primary.context_length,
        max_output_tokens: request.max_output_tokens.or(primary.max_output_tokens),
        stream: request.stream,
    };
    let plugins = Selection::from_request(request.body.get("plugins"), &ctx)?;
    let chain = match &request.previous_response_id {
        Some(previous) => archive::chain(&state.cached.stores, &key.owner, previous).await?,
        None => Vec::new(),
    };
    let turn_items: Vec<Value> = match (&rendered, request.previous_response_id.is_some()) {
        (None, false) => Vec::new(),
        _ => rendered
            .as_ref()
            .map(|r| r.messages.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(input_items(request.body.get("input")))
            .collect(),
    };
    Ok(Plan { model, rows, template, rendered, chain, turn_items, plugins })
}

/// The client's body minus gateway fields, with defaults filled in (request > key > template)
/// and the template's system text before the request's instructions.
fn base_body(
    request: &ResponsesRequest,
    key: &ApiKey,
    template: Option<&Template>,
    rendered: Option<&Rendered>,
    plugins: &Selection,
) -> Result<Map<String, Value>, GatewayError> {
    let mut body = request.body.clone();
    for field in GATEWAY_FIELDS {
        body.remove(field);
    }
    if !plugins.foreign.is_empty() {
        body.insert("plugins".to_owned(), Value::Array(plugins.foreign.clone()));
    }
    if let Some(format) = body.remove("response_format") {
        let text = body.entry("text").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(text) = text {
            if !text.contains_key("format") {
                text.insert("format".to_owned(), text_format(format));
            }
        }
    }
    let template_params = template.map(|t| &t.params);
    for params in [Some(&key.default_params), template_params].into_iter().flatten() {
        for (name, value) in params {
            if !body.contains_key(name) || body[name].is_null() {
                body.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(system) = rendered.and_then(|r| r.system.as_deref()) {
        let instructions = match body.get("instructions").and_then(Value::as_str) {
            Some(own) if !own.is_empty() => format!("{system}\n\n{own}"),
            _ => system.to_owned(),
        };
        body.insert("instructions".to_owned(), Value::String(instructions));
    }
    if !body.contains_key("user") {
        body.insert("user".to_owned(), Value::String(format!("owner:{}", key.owner)));
    }
    Ok(body)
}

/// Chat-style `response_format` → Responses `text.format`.
fn text_format(format: Value) -> Value {
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let inner = &format["json_schema"];
            let mut out = Map::new();
            out.insert("type".to_owned(), json!("json_schema"));
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = inner.get(field) {
                    out.insert(field.to_owned(), value.clone());
                }
            }
            Value::Object(out)
        }
        _ => format,
    }
}

/// Refuses paid models when the owner's prepaid balance is used up; says whether to debit it.
async fn check_balance(state: &AppState, key: &ApiKey, is_free: bool) -> Result<bool, GatewayError> {
    if is_free {
        return Ok(false);
    }
    match state.cached.balance_left(&key.owner).await? {
        None => Ok(false),
        Some(balance) if balance > 0 => Ok(true),
        Some(_) => Err(GatewayError::SpendLimitExceeded {
            message: "The prepaid balance of this account is exhausted; add funds to continue.".to_owned(),
        }),
    }
}

/// Enforces the spend cap: soft caps refuse once spent ≥ cap; hard caps reserve the worst case.
async fn reserve(
    state: &AppState,
    key: &ApiKey,
    request_id: &str,
    request: &ResponsesRequest,
    rows: &[ModelPrice],
    input_bytes: usize,
    shared_spend: Option<Nanos>,
) -> Result<Option<Nanos>, GatewayError> {
    let Some(cap) = key.spend_cap else { return Ok(None) };
    let exhausted =
        || GatewayError::SpendLimitExceeded { message: format!("This API key has reached its spend cap of ${cap}.") };
    if key.spend_cap_mode == CapMode::Soft {
        // This instance's view (stored spend and costs not yet written) or every instance's,
        // whichever knows more.
        let spent = state.cached.spent(key).max(shared_spend.unwrap_or(Nanos::ZERO));
        return if spent >= cap { Err(exhausted()) } else { Ok(None) };
    }
    // Upper bounds: a token covers at least one byte of what is sent (the body, the rendered
    // template and the rebuilt conversation); output is capped by the limit. Any row may serve
    // (failover), so the reservation covers the dearest.
    let input_bound = u64::try_from(input_bytes).unwrap_or(u64::MAX);
    let amount = rows
        .iter()
        .filter_map(|row| {
            let output_bound = request
                .max_output_tokens
                .or(key.default_params.get("max_output_tokens").and_then(Value::as_u64))
                .or(row.max_output_tokens)
                .or(row.context_length)
                .unwrap_or(128_000);
            row.sheet().map(|sheet| sheet.worst_case(input_bound, output_bound))
        })
        .max()
        .unwrap_or(Nanos::ZERO);
    if amount == Nanos::ZERO {
        return Ok(None);
    }
    let reservation = Reservation {
        id: request_id.to_owned(),
        amount,
        expires_at: now_unix() + i64::try_from(state.config.reservation_ttl.as_secs()).unwrap_or(900),
    };
    let stores = &state.cached.stores;
    if stores.keys.reserve(&key.key_hash, &reservation).await? {
        return Ok(Some(amount));
    }
    if stores.keys.release_expired(&key.key_hash, now_unix()).await? > 0
        && stores.keys.reserve(&key.key_hash, &reservation).await?
    {
        return Ok(Some(amount));
    }
    Err(GatewayError::SpendLimitExceeded {
        message: format!(
            "This API key's hard spend cap of ${cap} leaves too little for this request's worst case (${amount}); lower max_output_tokens or raise the cap."
        ),
    })
}

/// A complete JSON answer. Storing the response and accounting run after the last byte, as the
/// front door allows (in the background, or before the body ends under Lambda); a continuation
/// that races the store write finds it through [`archive::chain`]'s short wait.
fn complete_response(
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
            archive.save(&cached.stores, &response).await;
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

/// Counts a finished request's cost in this instance's spend view before its answer completes
/// (so the key's next request sees it), and in the key's shared spend when it has one.
pub(super) fn hold_spend(state: &AppState, ticket: &Ticket, usage: &TokenUsage) {
    let cost = crate::accounting::hold(&state.cached, ticket, usage);
    if ticket.share_spend && cost > Nanos::ZERO {
        let limiter = state.limiter.clone();
        let key_id = ticket.key_id.clone();
        state.tasks.spawn(async move { limiter.add_spend(&key_id, cost).await });
    }
}
