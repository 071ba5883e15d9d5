//! Streaming answers: forward each provider event as it arrives, keep reading the provider for
//! its usage when the client leaves, close broken streams with `response.failed`, then store
//! the response and settle.
//!
//! Every started stream ends with exactly one terminal event and is settled, whatever the
//! provider sends: the pump runs in its own task, and should it die (a panic) the task watching
//! it sends the client a `response.failed` (unless a terminal event already went out) and
//! settles with the usage known so far, so no hard-cap reservation is left held.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{AppState, SettleMode};
use crate::accounting::{settle, Ticket};
use crate::archive::Archive;
use crate::config::UpstreamTimeouts;
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::EventSource;
use crate::sse;
use crate::store::Stores;

/// Events buffered toward a slow client before the gateway stops reading the provider.
const STREAM_BUFFER_EVENTS: usize = 64;

/// What the pump learned by the end.
#[derive(Debug, Clone, PartialEq)]
struct StreamEnd {
    usage: TokenUsage,
    status: UsageStatus,
}

/// What the client has been sent so far, shared by the pump and the task watching it.
#[derive(Debug, Default)]
struct Progress {
    last_sequence: Option<u64>,
    /// The latest response object the provider sent (only ever an object).
    snapshot: Option<Value>,
    /// The terminal event the client was sent (or would have been, had it stayed).
    terminal: Option<UsageStatus>,
    client_gone: bool,
}

impl Progress {
    fn usage(&self) -> TokenUsage {
        self.snapshot.as_ref().map(crate::providers::responses::usage_of).unwrap_or_default()
    }

    /// The end of a stream that stopped on `status`.
    fn end(&self, status: UsageStatus) -> StreamEnd {
        let status = if self.client_gone { UsageStatus::ClientDisconnected } else { status };
        StreamEnd { usage: self.usage(), status }
    }
}

type SharedProgress = Arc<Mutex<Progress>>;

/// Counts the stream's cost in the spend view, once, before its terminal event is sent.
type OnEnd = Box<dyn FnOnce(&TokenUsage) + Send>;

/// The progress, even if a panicking pump held the lock (it is plain data, always consistent).
fn lock(progress: &SharedProgress) -> MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Streams Responses SSE to the client while a task reads the provider; the task settles.
pub fn stream_response(state: &AppState, source: EventSource, ticket: Ticket, archive: Option<Archive>) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_EVENTS);
    let cached = state.cached.clone();
    let settle_mode = state.settle_mode;
    let timeouts = state.dispatcher.timeouts();
    let tasks = state.tasks.clone();
    let on_end: OnEnd = {
        let (state, ticket) = (state.clone(), ticket.clone());
        Box::new(move |usage: &TokenUsage| crate::pipeline::caps::hold_spend(&state, &ticket, usage))
    };
    let request_span = tracing::Span::current();
    let streaming = async move {
        let progress = SharedProgress::default();
        let pumping = tokio::spawn(
            pump(source, sender.clone(), timeouts, cached.stores.clone(), archive, progress.clone(), on_end)
                .instrument(tracing::info_span!("stream")),
        );
        let end = watch(pumping, &sender, &progress, timeouts.stream_idle, &ticket.request_id).await;
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
    };
    state.tasks.spawn(streaming.instrument(request_span));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Waits for the pump. One that died (panicked, or was cancelled) still ends the client's
/// stream with one `response.failed`, unless the client had its terminal event, and yields the
/// usage known so far for settlement.
async fn watch(
    pumping: JoinHandle<StreamEnd>,
    sender: &mpsc::Sender<Bytes>,
    progress: &SharedProgress,
    idle: std::time::Duration,
    request_id: &str,
) -> StreamEnd {
    let failure = match pumping.await {
        Ok(end) => return end,
        Err(failure) => failure,
    };
    tracing::error!(request_id, panicked = failure.is_panic(), "the stream pump died; closing the stream");
    let delivered = lock(progress).terminal;
    match delivered {
        Some(status) => lock(progress).end(status),
        None => {
            fail(sender, progress, "internal_error", "The gateway failed while streaming the response.", idle).await
        }
    }
}

/// Reads provider events to the terminal one, forwarding each as soon as it arrives. A client
/// that leaves (or stops reading for the idle timeout) no longer gets events, but the provider
/// is still read, for at most the drain timeout, to learn the real usage. A completed response
/// is stored once its terminal event is sent, before the stream ends, so a continuation can
/// follow at once. Events reach here checked (`providers::check_event`): an object with a
/// well-formed `type` and, if any, an object `response`.
async fn pump(
    mut source: EventSource,
    sender: mpsc::Sender<Bytes>,
    timeouts: UpstreamTimeouts,
    stores: Stores,
    archive: Option<Archive>,
    progress: SharedProgress,
    on_end: OnEnd,
) -> StreamEnd {
    let idle = timeouts.stream_idle;
    let mut on_end = Some(on_end);
    let mut count_spend = |progress: &SharedProgress| {
        if let Some(count) = on_end.take() {
            let usage = lock(progress).usage();
            count(&usage);
        }
    };
    let mut drain_deadline = None;
    loop {
        let next = match drain_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, source.next()).await {
                Ok(next) => next,
                Err(_) => return lock(&progress).end(UsageStatus::ClientDisconnected),
            },
            None => source.next().await,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => {
                count_spend(&progress);
                return fail(&sender, &progress, "upstream_error", "The provider ended the stream early.", idle).await;
            }
            Err(fault) => {
                tracing::warn!(error = %fault, "provider stream failed");
                count_spend(&progress);
                return fail(&sender, &progress, "upstream_error", &fault.to_string(), idle).await;
            }
        };
        let terminal = match event.get("type").and_then(Value::as_str) {
            Some("response.completed") => Some(UsageStatus::Success),
            Some("response.incomplete") => Some(UsageStatus::Incomplete),
            Some("response.failed") => Some(UsageStatus::Failed),
            _ => None,
        };
        let client_gone = {
            let mut progress = lock(&progress);
            if let Some(sequence) = event.get("sequence_number").and_then(Value::as_u64) {
                progress.last_sequence = Some(sequence);
            }
            if let Some(response @ Value::Object(_)) = event.get("response") {
                progress.snapshot = Some(response.clone());
            }
            progress.client_gone
        };
        if terminal.is_some() {
            count_spend(&progress);
        }
        if !client_gone {
            deliver(&sender, &event, &progress, idle).await;
            if lock(&progress).client_gone {
                drain_deadline = Some(tokio::time::Instant::now() + timeouts.drain);
            }
        }
        let Some(status) = terminal else { continue };
        lock(&progress).terminal = Some(status);
        // Stored once the client has the terminal event, before the stream (and, under Lambda,
        // the invocation) ends.
        if let (UsageStatus::Success | UsageStatus::Incomplete, Some(archive)) = (status, archive) {
            let snapshot = lock(&progress).snapshot.clone();
            if let Some(response) = snapshot {
                archive.save(&stores, response).await;
            }
        }
        return lock(&progress).end(status);
    }
}

/// Ends the stream with one `response.failed` and says how it ended.
async fn fail(
    sender: &mpsc::Sender<Bytes>,
    progress: &SharedProgress,
    code: &str,
    message: &str,
    idle: std::time::Duration,
) -> StreamEnd {
    let failure = failure_event(&mut lock(progress), code, message);
    deliver(sender, &failure, progress, idle).await;
    let mut progress = lock(progress);
    progress.terminal = Some(UsageStatus::Failed);
    progress.end(UsageStatus::Failed)
}

/// Sends one event; a closed channel or a client that stops reading marks the client gone.
async fn deliver(sender: &mpsc::Sender<Bytes>, event: &Value, progress: &SharedProgress, idle: std::time::Duration) {
    if lock(progress).client_gone {
        return;
    }
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("error");
    let frame = sse::encode(kind, &event.to_string());
    match tokio::time::timeout(idle, sender.send(frame)).await {
        Ok(Ok(())) => {}
        _ => lock(progress).client_gone = true,
    }
}

/// A `response.failed` event closing a stream: the last response the provider sent (or a bare
/// one), failed, numbered after the last event.
fn failure_event(progress: &mut Progress, code: &str, message: &str) -> Value {
    let sequence = progress.last_sequence.map_or(0, |s| s.saturating_add(1));
    progress.last_sequence = Some(sequence);
    let mut response = match progress.snapshot.clone() {
        Some(Value::Object(response)) => response,
        _ => {
            let mut bare = Map::new();
            bare.insert("object".to_owned(), json!("response"));
            bare.insert("output".to_owned(), json!([]));
            bare
        }
    };
    response.insert("status".to_owned(), json!("failed"));
    response.insert("error".to_owned(), json!({"code": code, "message": crate::scrub::credentials(message)}));
    json!({"type": "response.failed", "sequence_number": sequence, "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(mut receiver: mpsc::Receiver<Bytes>) -> Vec<sse::SseEvent> {
        let mut parser = sse::SseParser::new();
        let mut events = Vec::new();
        while let Some(frame) = receiver.recv().await {
            events.extend(parser.feed(&frame).unwrap());
        }
        events
    }

    fn progress_with_usage() -> SharedProgress {
        let progress = SharedProgress::default();
        {
            let mut p = lock(&progress);
            p.last_sequence = Some(4);
            let response = json!({"id": "resp_1", "object": "response", "status": "in_progress",
                "usage": {"input_tokens": 7, "output_tokens": 3}});
            p.snapshot = Some(response);
        }
        progress
    }

    #[tokio::test]
    async fn a_pump_that_panics_still_ends_the_stream_and_settles() {
        let progress = progress_with_usage();
        let (sender, receiver) = mpsc::channel(8);
        let pumping = tokio::spawn(async { panic!("a bug in the pump") });
        let end = watch(pumping, &sender, &progress, std::time::Duration::from_secs(5), "req_1").await;
        drop(sender);
        let events = frames(receiver).await;
        assert_eq!(events.len(), 1, "exactly one terminal event: {events:?}");
        assert_eq!(events[0].event.as_deref(), Some("response.failed"));
        let data: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(data["sequence_number"], 5);
        assert_eq!(data["response"]["id"], "resp_1");
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "internal_error");
        assert_eq!(end.status, UsageStatus::Failed);
        assert_eq!((end.usage.input_tokens, end.usage.output_tokens), (7, 3), "the usage known so far");
    }

    #[tokio::test]
    async fn a_pump_that_panics_after_the_terminal_event_sends_no_second_one() {
        let progress = progress_with_usage();
        lock(&progress).terminal = Some(UsageStatus::Success);
        let (sender, receiver) = mpsc::channel(8);
        let pumping = tokio::spawn(async { panic!("a bug after the terminal event") });
        let end = watch(pumping, &sender, &progress, std::time::Duration::from_secs(5), "req_1").await;
        drop(sender);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end, StreamEnd { usage: lock(&progress).usage(), status: UsageStatus::Success });
    }

    #[tokio::test]
    async fn a_client_that_left_gets_nothing_and_is_recorded_as_gone() {
        let progress = progress_with_usage();
        lock(&progress).client_gone = true;
        let (sender, receiver) = mpsc::channel(8);
        let pumping = tokio::spawn(async { panic!("a bug") });
        let end = watch(pumping, &sender, &progress, std::time::Duration::from_secs(5), "req_1").await;
        drop(sender);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end.status, UsageStatus::ClientDisconnected);
    }

    #[test]
    fn failure_events_are_well_formed_from_any_state() {
        let mut progress = Progress { last_sequence: Some(u64::MAX), ..Progress::default() };
        let event = failure_event(&mut progress, "upstream_error", "Bearer sk-abcdefgh refused");
        assert_eq!(event["sequence_number"], u64::MAX, "no overflow");
        assert_eq!(
            event["response"],
            json!({"object": "response", "output": [], "status": "failed",
            "error": {"code": "upstream_error", "message": "[redacted] refused"}})
        );
    }
}
