//! `POST /v1/responses`: validate, authenticate, resolve, limit, reserve, dispatch, settle.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{
    add_limit_headers, authenticate, check_limits, error_response, json_response, AppState, RequestId, SettleMode,
};
use crate::accounting::{settle, Ticket};
use crate::catalog::{choose_model, serving_rows};
use crate::domain::{now_unix, ApiKey, CapMode, UsageStatus};
use crate::error::GatewayError;
use crate::limits::LimitDecision;
use crate::money::{Nanos, TokenUsage};
use crate::providers::{EventSource, Reply, Route};
use crate::request::{self, ResponsesRequest, GATEWAY_FIELDS, MAX_BODY_BYTES};
use crate::sse;
use crate::store::Reservation;

/// Events buffered toward a slow client before the gateway stops reading the provider.
const STREAM_BUFFER_EVENTS: usize = 64;

/// Gateway plugins implemented in process (none yet); others are forwarded or refused.
const GATEWAY_PLUGINS: [&str; 0] = [];

/// The handler.
pub async fn create(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut limits = None;
    let result = handle(&state, &id.0, &headers, body, &mut limits).await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => error_response(&err, &id.0),
    };
    if let Some(decision) = &limits {
        add_limit_headers(response.headers_mut(), decision);
    }
    response
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

async fn handle(
    state: &AppState,
    request_id: &str,
    headers: &HeaderMap,
    body: Body,
    limits: &mut Option<LimitDecision>,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let bytes = read_body(headers, body).await?;
    let request = request::parse(&bytes)?;
    let key = authenticate(&state.cached, headers).await?;
    let model = choose_model(request.model.as_deref(), &key, state.config.default_model.as_deref())?;
    if !key.allows_model(&model) {
        return Err(GatewayError::ModelNotAllowed { model });
    }
    let rows = state.cached.prices(&model).await?;
    let row =
        serving_rows(&model, &rows)?.into_iter().next().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    let provider = state.dispatcher.provider(&row.provider)?;
    let upstream_body = upstream_body(&request, &key, &provider.name)?;
    check_limits(state, &key, limits).await?;
    let sheet = row.sheet().ok_or_else(|| GatewayError::Internal("unpriced row".to_owned()))?;
    let debit_owner_balance = check_balance(state, &key, sheet.is_free).await?;
    let reservation = reserve(state, &key, request_id, &request, &row, bytes.len()).await?;
    let ticket = Ticket {
        request_id: request_id.to_owned(),
        key_id: key.id.clone(),
        key_hash: key.key_hash.clone(),
        owner: key.owner.clone(),
        model: model.clone(),
        provider: row.provider.clone(),
        session_id: request.session_id.clone(),
        template_id: None,
        sheet,
        reservation,
        debit_owner_balance,
        started,
    };
    let route = Route { row, provider };
    tracing::debug!(request_id, key_id = %key.id, model = %model, provider = %route.provider.name, "dispatch");
    match state.dispatcher.call(&route, upstream_body, request.stream, &model).await {
        Ok(Reply::Complete(done)) => {
            let status = match done.status.as_str() {
                "incomplete" => UsageStatus::Incomplete,
                "failed" => UsageStatus::Failed,
                _ => UsageStatus::Success,
            };
            let body =
                Bytes::from(serde_json::to_vec(&done.response).map_err(|e| GatewayError::Internal(e.to_string()))?);
            Ok(complete_response(state, body, ticket, done.usage, status))
        }
        Ok(Reply::Stream(source)) => Ok(stream_response(state, source, ticket)),
        Err(err) => {
            // Nothing was served: release any reservation and keep an audit record at no cost.
            if ticket.reservation.is_some() || err.status().is_server_error() {
                let cached = state.cached.clone();
                let settle_ticket = ticket.clone();
                state.tasks.spawn(settle(cached, settle_ticket, TokenUsage::default(), UsageStatus::Error));
            }
            Err(err)
        }
    }
}

/// The body sent upstream: the client's, minus gateway fields, with defaults filled in.
fn upstream_body(request: &ResponsesRequest, key: &ApiKey, provider: &str) -> Result<Map<String, Value>, GatewayError> {
    let mut body = request.body.clone();
    if let Some(Value::Array(plugins)) = body.get("plugins") {
        let foreign: Vec<&Value> =
            plugins.iter().filter(|p| !p["id"].as_str().is_some_and(|id| GATEWAY_PLUGINS.contains(&id))).collect();
        if let Some(first) = foreign.first() {
            if provider != "openrouter" {
                return Err(GatewayError::invalid(
                    "unsupported_plugin",
                    "plugins",
                    format!(
                        "The plugin `{}` is not implemented by the gateway and the provider `{provider}` does not accept plugins.",
                        first["id"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    for field in GATEWAY_FIELDS {
        body.remove(field);
    }
    if let Some(format) = body.remove("response_format") {
        let text = body.entry("text").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(text) = text {
            if !text.contains_key("format") {
                text.insert("format".to_owned(), text_format(format));
            }
        }
    }
    for (name, value) in &key.default_params {
        if !body.contains_key(name) || body[name].is_null() {
            body.insert(name.clone(), value.clone());
        }
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
    match state.cached.balance(&key.owner).await? {
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
    row: &crate::domain::ModelPrice,
    body_len: usize,
) -> Result<Option<Nanos>, GatewayError> {
    let Some(cap) = key.spend_cap else { return Ok(None) };
    let exhausted =
        || GatewayError::SpendLimitExceeded { message: format!("This API key has reached its spend cap of ${cap}.") };
    if key.spend_cap_mode == CapMode::Soft {
        return if key.spent >= cap { Err(exhausted()) } else { Ok(None) };
    }
    let sheet = row.sheet().ok_or_else(|| GatewayError::Internal("unpriced row".to_owned()))?;
    // Upper bounds: a token covers at least one byte of the body; output is capped by the limit.
    let input_bound = u64::try_from(body_len).unwrap_or(u64::MAX);
    let output_bound = request
        .max_output_tokens
        .or(key.default_params.get("max_output_tokens").and_then(Value::as_u64))
        .or(row.max_output_tokens)
        .or(row.context_length)
        .unwrap_or(128_000);
    let amount = sheet.worst_case(input_bound, output_bound);
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

/// A complete JSON answer; accounting runs after the last byte according to the front door.
fn complete_response(
    state: &AppState,
    body: Bytes,
    ticket: Ticket,
    usage: TokenUsage,
    status: UsageStatus,
) -> Response {
    let cached = state.cached.clone();
    let settlement = settle(cached, ticket, usage, status);
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
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    }
}

/// What the stream pump learned by the end.
struct StreamEnd {
    usage: TokenUsage,
    status: UsageStatus,
}

/// Streams Responses SSE to the client while a task reads the provider; the task settles.
fn stream_response(state: &AppState, source: EventSource, ticket: Ticket) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_EVENTS);
    let cached = state.cached.clone();
    let settle_mode = state.settle_mode;
    let timeouts = state.dispatcher.timeouts();
    let tasks = state.tasks.clone();
    state.tasks.spawn(async move {
        let end = pump(source, &sender, timeouts).await;
        let settlement = settle(cached, ticket, end.usage, end.status);
        match settle_mode {
            SettleMode::BeforeBodyEnds => {
                settlement.await;
            }
            SettleMode::Background => {
                tasks.spawn(settlement);
            }
        }
        drop(sender);
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Reads provider events to the terminal one, forwarding each as soon as it arrives. A client
/// that leaves (or stops reading for the idle timeout) no longer gets events, but the provider
/// is still read, for at most the drain timeout, to learn the real usage.
async fn pump(
    mut source: EventSource,
    sender: &mpsc::Sender<Bytes>,
    timeouts: crate::config::UpstreamTimeouts,
) -> StreamEnd {
    let mut client_gone = false;
    let mut drain_deadline = None;
    let mut last_sequence: Option<u64> = None;
    let mut snapshot: Option<Value> = None;
    loop {
        let next = match drain_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, source.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return StreamEnd {
                        usage: usage_of_snapshot(snapshot.as_ref()),
                        status: UsageStatus::ClientDisconnected,
                    }
                }
            },
            None => source.next().await,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => {
                let failure = failure_event(
                    &mut last_sequence,
                    snapshot.as_ref(),
                    "upstream_error",
                    "The provider ended the stream early.",
                );
                deliver(sender, &failure, &mut client_gone, timeouts.stream_idle).await;
                let status = if client_gone { UsageStatus::ClientDisconnected } else { UsageStatus::Failed };
                return StreamEnd { usage: usage_of_snapshot(snapshot.as_ref()), status };
            }
            Err(fault) => {
                tracing::warn!(error = %fault, "provider stream failed");
                let failure =
                    failure_event(&mut last_sequence, snapshot.as_ref(), "upstream_error", &fault.to_string());
                deliver(sender, &failure, &mut client_gone, timeouts.stream_idle).await;
                let status = if client_gone { UsageStatus::ClientDisconnected } else { UsageStatus::Failed };
                return StreamEnd { usage: usage_of_snapshot(snapshot.as_ref()), status };
            }
        };
        if let Some(seq) = event.get("sequence_number").and_then(Value::as_u64) {
            last_sequence = Some(seq);
        }
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(response) = event.get("response") {
            snapshot = Some(response.clone());
        }
        if !client_gone {
            deliver(sender, &event, &mut client_gone, timeouts.stream_idle).await;
            if client_gone {
                drain_deadline = Some(tokio::time::Instant::now() + timeouts.drain);
            }
        }
        let terminal = match kind.as_str() {
            "response.completed" => Some(UsageStatus::Success),
            "response.incomplete" => Some(UsageStatus::Incomplete),
            "response.failed" => Some(UsageStatus::Failed),
            _ => None,
        };
        if let Some(status) = terminal {
            let status = if client_gone { UsageStatus::ClientDisconnected } else { status };
            return StreamEnd { usage: usage_of_snapshot(snapshot.as_ref()), status };
        }
    }
}

fn usage_of_snapshot(snapshot: Option<&Value>) -> TokenUsage {
    snapshot.map(crate::providers::responses::usage_of).unwrap_or_default()
}

/// Sends one event; a closed channel or a client that stops reading marks the client gone.
async fn deliver(sender: &mpsc::Sender<Bytes>, event: &Value, client_gone: &mut bool, idle: std::time::Duration) {
    if *client_gone {
        return;
    }
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("message");
    let frame = sse::encode(kind, &event.to_string());
    match tokio::time::timeout(idle, sender.send(frame)).await {
        Ok(Ok(())) => {}
        _ => *client_gone = true,
    }
}

/// A `response.failed` event closing a stream the provider broke.
fn failure_event(last_sequence: &mut Option<u64>, snapshot: Option<&Value>, code: &str, message: &str) -> Value {
    let sequence = last_sequence.map_or(0, |s| s + 1);
    *last_sequence = Some(sequence);
    let mut response = snapshot.cloned().unwrap_or_else(|| json!({"object": "response", "output": []}));
    response["status"] = json!("failed");
    response["error"] = json!({"code": code, "message": message});
    json!({"type": "response.failed", "sequence_number": sequence, "response": response})
}
