//! Streaming answers: forward each provider event as it arrives, keep reading the provider for
//! its usage when the client leaves, close broken streams with `response.failed`, then store
//! the response and settle.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{AppState, SettleMode};
use crate::accounting::{settle, Ticket};
use crate::archive::Archive;
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::EventSource;
use crate::sse;
use crate::store::Stores;

/// Events buffered toward a slow client before the gateway stops reading the provider.
const STREAM_BUFFER_EVENTS: usize = 64;

/// What the pump learned by the end.
struct StreamEnd {
    usage: TokenUsage,
    status: UsageStatus,
}

/// Streams Responses SSE to the client while a task reads the provider; the task settles.
pub fn stream_response(state: &AppState, source: EventSource, ticket: Ticket, archive: Option<Archive>) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_EVENTS);
    let cached = state.cached.clone();
    let settle_mode = state.settle_mode;
    let timeouts = state.dispatcher.timeouts();
    let tasks = state.tasks.clone();
    state.tasks.spawn(async move {
        let end = pump(source, &sender, timeouts, &cached.stores, archive.as_ref()).await;
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
/// is still read, for at most the drain timeout, to learn the real usage. A completed response
/// is stored before its terminal event is sent, so a continuation can follow at once.
async fn pump(
    mut source: EventSource,
    sender: &mpsc::Sender<Bytes>,
    timeouts: crate::config::UpstreamTimeouts,
    stores: &Stores,
    archive: Option<&Archive>,
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
                let failure =
                    failure_event(&mut last_sequence, snapshot.as_ref(), "The provider ended the stream early.");
                deliver(sender, &failure, &mut client_gone, timeouts.stream_idle).await;
                let status = if client_gone { UsageStatus::ClientDisconnected } else { UsageStatus::Failed };
                return StreamEnd { usage: usage_of_snapshot(snapshot.as_ref()), status };
            }
            Err(fault) => {
                tracing::warn!(error = %fault, "provider stream failed");
                let failure = failure_event(&mut last_sequence, snapshot.as_ref(), &fault.to_string());
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
        let terminal = match kind.as_str() {
            "response.completed" => Some(UsageStatus::Success),
            "response.incomplete" => Some(UsageStatus::Incomplete),
            "response.failed" => Some(UsageStatus::Failed),
            _ => None,
        };
        if !client_gone {
            deliver(sender, &event, &mut client_gone, timeouts.stream_idle).await;
            if client_gone {
                drain_deadline = Some(tokio::time::Instant::now() + timeouts.drain);
            }
        }
        // Stored once the client has the terminal event, before the stream (and, under Lambda,
        // the invocation) ends.
        if let (Some(UsageStatus::Success | UsageStatus::Incomplete), Some(archive), Some(response)) =
            (terminal, archive, snapshot.as_ref())
        {
            archive.save(stores, response).await;
        }
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
fn failure_event(last_sequence: &mut Option<u64>, snapshot: Option<&Value>, message: &str) -> Value {
    let sequence = last_sequence.map_or(0, |s| s + 1);
    *last_sequence = Some(sequence);
    let mut response = snapshot.cloned().unwrap_or_else(|| json!({"object": "response", "output": []}));
    response["status"] = json!("failed");
    response["error"] = json!({"code": "upstream_error", "message": message});
    json!({"type": "response.failed", "sequence_number": sequence, "response": response})
}
