//! Streaming Chat Completions: `data: {chunk}` frames (no `event:` names) forwarded as they
//! arrive and closed by `data: [DONE]`. Usage is always asked of the provider and read from its
//! chunks for billing; the usage chunk (`choices: []`) and `usage` members reach the client only
//! when it asked with `stream_options.include_usage`. A client that leaves no longer gets chunks,
//! but the provider is still read (for at most the drain timeout) and what it reports is billed.
//! A broken stream ends with one `data: {"error": {...}}` frame and no `[DONE]`, as OpenAI's
//! streams report failures.
//!
//! The same guarantees as the Responses stream (`super::stream`): the pump runs in its own task;
//! should it die, the task watching it sends the error frame (unless the stream was over) and
//! settles with the usage known so far. Costs count in the spend view before `[DONE]`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AppState, SettleMode};
use crate::accounting::{settle, Ticket};
use crate::config::UpstreamTimeouts;
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::completions::relay::status_of;
use crate::providers::completions::usage_of;
use crate::providers::EventSource;

/// Chunks buffered toward a slow client before the gateway stops reading the provider.
const STREAM_BUFFER_CHUNKS: usize = 64;

/// How a stream ended, for settlement.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StreamEnd {
    usage: TokenUsage,
    status: UsageStatus,
}

/// What the client has been sent so far, shared by the pump and the task watching it.
#[derive(Debug, Default)]
struct Progress {
    usage: TokenUsage,
    /// How the choices ended so far (`None` until a `finish_reason` arrives).
    finished: Option<UsageStatus>,
    /// How the stream ended, once its last frame was sent (or would have been, had the client
    /// stayed).
    terminal: Option<UsageStatus>,
    client_gone: bool,
}

impl Progress {
    fn end(&self, status: UsageStatus) -> StreamEnd {
        let status = if self.client_gone { UsageStatus::ClientDisconnected } else { status };
        StreamEnd { usage: self.usage, status }
    }

    /// Notes a chunk's usage and finish reasons.
    fn observe(&mut self, chunk: &Value) {
        if let Some(usage) = usage_of(chunk) {
            let pick = |old: u64, new: u64| if new > 0 { new } else { old };
            let held = &mut self.usage;
            held.input_tokens = pick(held.input_tokens, usage.input_tokens);
            held.cached_input_tokens = pick(held.cached_input_tokens, usage.cached_input_tokens);
            held.cache_write_tokens = pick(held.cache_write_tokens, usage.cache_write_tokens);
            held.output_tokens = pick(held.output_tokens, usage.output_tokens);
            held.reasoning_tokens = pick(held.reasoning_tokens, usage.reasoning_tokens);
        }
        if let Some(status) = status_of(chunk.get("choices")) {
            if self.finished != Some(UsageStatus::Incomplete) {
                self.finished = Some(status);
            }
        }
    }
}

type SharedProgress = Arc<Mutex<Progress>>;

/// Counts the stream's cost in the spend view, once, before its last frame is sent.
type OnEnd = Box<dyn FnOnce(&TokenUsage) + Send>;

/// The progress, even if a panicking pump held the lock (it is plain data, always consistent).
fn lock(progress: &SharedProgress) -> MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Streams chunks to the client while a task reads the provider; the task settles.
pub fn stream_response(state: &AppState, source: EventSource, ticket: Ticket, include_usage: bool) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_CHUNKS);
    let cached = state.cached.clone();
    let settle_mode = state.settle_mode;
    let timeouts = state.dispatcher.timeouts();
    let tasks = state.tasks.clone();
    let on_end: OnEnd = {
        let (state, ticket) = (state.clone(), ticket.clone());
        Box::new(move |usage: &TokenUsage| crate::pipeline::caps::hold_spend(&state, &ticket, usage))
    };
    state.tasks.spawn(async move {
        let progress = SharedProgress::default();
        let pumping = tokio::spawn(pump(source, sender.clone(), timeouts, progress.clone(), include_usage, on_end));
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
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Waits for the pump; one that died still ends the client's stream with an error frame
/// (unless it was over) and yields the usage known so far.
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
    tracing::error!(request_id, panicked = failure.is_panic(), "the chat stream pump died; closing the stream");
    let terminal = lock(progress).terminal;
    if let Some(status) = terminal {
        return lock(progress).end(status);
    }
    fail(sender, progress, "internal_error", "The gateway failed while streaming the response.", idle).await
}

/// Reads chunks to the end marker, forwarding each as soon as it arrives (see the module docs).
async fn pump(
    mut source: EventSource,
    sender: mpsc::Sender<Bytes>,
    timeouts: UpstreamTimeouts,
    progress: SharedProgress,
    include_usage: bool,
    on_end: OnEnd,
) -> StreamEnd {
    let idle = timeouts.stream_idle;
    let mut on_end = Some(on_end);
    let mut count_spend = |progress: &SharedProgress| {
        if let Some(count) = on_end.take() {
            let usage = lock(progress).usage;
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
        let mut chunk = match next {
            Ok(Some(Value::Null)) => {
                count_spend(&progress);
                return done(&sender, &progress, idle).await;
            }
            Ok(Some(chunk)) => chunk,
            // A body that ended without `[DONE]` is over all the same once the provider said why
            // its choices stopped.
            Ok(None) if lock(&progress).finished.is_some() => {
                count_spend(&progress);
                return done(&sender, &progress, idle).await;
            }
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
        lock(&progress).observe(&chunk);
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            count_spend(&progress);
            if let Some(object) = chunk.as_object_mut() {
                object.remove("usage");
            }
            deliver(&sender, frame(&chunk), &progress, idle).await;
            let mut progress = lock(&progress);
            progress.terminal = Some(UsageStatus::Failed);
            return progress.end(UsageStatus::Failed);
        }
        if !include_usage && !strip_usage(&mut chunk) {
            continue;
        }
        if !lock(&progress).client_gone {
            deliver(&sender, frame(&chunk), &progress, idle).await;
            if lock(&progress).client_gone {
                drain_deadline = Some(tokio::time::Instant::now() + timeouts.drain);
            }
        }
    }
}

/// Removes what the client did not ask for: the usage chunk goes (`false`), other chunks lose
/// their `usage` member.
fn strip_usage(chunk: &mut Value) -> bool {
    let Some(object) = chunk.as_object_mut() else { return true };
    let no_choices = object.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
    let usage = object.remove("usage");
    !(no_choices && usage.is_some_and(|u| !u.is_null()))
}

fn frame(chunk: &Value) -> Bytes {
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Ends the stream with `data: [DONE]`.
async fn done(sender: &mpsc::Sender<Bytes>, progress: &SharedProgress, idle: std::time::Duration) -> StreamEnd {
    deliver(sender, Bytes::from_static(b"data: [DONE]\n\n"), progress, idle).await;
    let mut progress = lock(progress);
    let status = progress.finished.unwrap_or(UsageStatus::Success);
    progress.terminal = Some(status);
    progress.end(status)
}

/// Ends the stream with one error frame.
async fn fail(
    sender: &mpsc::Sender<Bytes>,
    progress: &SharedProgress,
    code: &str,
    message: &str,
    idle: std::time::Duration,
) -> StreamEnd {
    let error = json!({"error": {"message": crate::scrub::credentials(message), "type": "api_error",
        "code": code, "param": null}});
    deliver(sender, frame(&error), progress, idle).await;
    let mut progress = lock(progress);
    progress.terminal = Some(UsageStatus::Failed);
    progress.end(UsageStatus::Failed)
}

/// Sends one frame; a closed channel or a client that stops reading marks the client gone.
async fn deliver(sender: &mpsc::Sender<Bytes>, frame: Bytes, progress: &SharedProgress, idle: std::time::Duration) {
    if lock(progress).client_gone {
        return;
    }
    match tokio::time::timeout(idle, sender.send(frame)).await {
        Ok(Ok(())) => {}
        _ => lock(progress).client_gone = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(mut receiver: mpsc::Receiver<Bytes>) -> String {
        let mut text = String::new();
        while let Some(frame) = receiver.recv().await {
            text.push_str(&String::from_utf8_lossy(&frame));
        }
        text
    }

    #[test]
    fn usage_reaches_the_client_only_when_asked() {
        let mut usage_chunk = json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 3}});
        assert!(!strip_usage(&mut usage_chunk), "the usage chunk is dropped");
        let mut vllm = json!({"id": "c", "choices": null, "usage": {"prompt_tokens": 3}});
        assert!(!strip_usage(&mut vllm), "vLLM's usage chunk too");
        let mut content = json!({"id": "c", "choices": [{"delta": {"content": "x"}}], "usage": null});
        assert!(strip_usage(&mut content));
        assert_eq!(content, json!({"id": "c", "choices": [{"delta": {"content": "x"}}]}));
    }

    #[test]
    fn progress_keeps_the_latest_usage_and_incomplete_choices() {
        let mut progress = Progress::default();
        progress.observe(&json!({"choices": [{"finish_reason": "length"}]}));
        progress.observe(&json!({"choices": [{"finish_reason": "stop"}]}));
        progress.observe(&json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 2}}}));
        assert_eq!(progress.finished, Some(UsageStatus::Incomplete));
        assert_eq!(
            (progress.usage.input_tokens, progress.usage.cached_input_tokens, progress.usage.output_tokens),
            (9, 2, 4)
        );
    }

    #[tokio::test]
    async fn a_pump_that_panics_still_ends_the_stream_and_settles() {
        let progress = SharedProgress::default();
        lock(&progress).usage.input_tokens = 7;
        let (sender, receiver) = mpsc::channel(8);
        let pumping = tokio::spawn(async { panic!("a bug in the pump") });
        let end = watch(pumping, &sender, &progress, std::time::Duration::from_secs(5), "req_1").await;
        drop(sender);
        let text = frames(receiver).await;
        let data: Value = serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(data["error"]["code"], "internal_error");
        assert!(!text.contains("[DONE]"));
        assert_eq!((end.status, end.usage.input_tokens), (UsageStatus::Failed, 7));
    }

    #[tokio::test]
    async fn a_pump_that_panics_after_the_end_sends_nothing_more() {
        let progress = SharedProgress::default();
        lock(&progress).terminal = Some(UsageStatus::Incomplete);
        let (sender, receiver) = mpsc::channel(8);
        let pumping = tokio::spawn(async { panic!("a bug after [DONE]") });
        let end = watch(pumping, &sender, &progress, std::time::Duration::from_secs(5), "req_1").await;
        drop(sender);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end.status, UsageStatus::Incomplete, "as the stream ended");
    }
}
