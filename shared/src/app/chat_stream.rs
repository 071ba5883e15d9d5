//! Streaming Chat Completions: `data: {chunk}` frames (no `event:` names) forwarded as they
//! arrive and closed by `data: [DONE]`. Usage is always asked of the provider and read from its
//! chunks for billing; the usage chunk (`choices: []`) and `usage` members reach the client only
//! when it asked with `stream_options.include_usage`. A client that leaves no longer gets chunks,
//! but the provider is still read (for at most the drain timeout) and what it reports is billed.
//! A broken stream ends with one `data: {"error": {...}}` frame and no `[DONE]`, as OpenAI's
//! streams report failures.
//!
//! The same guarantees as the Responses stream, from the same pump ([`super::pump`]): should it
//! die, the task watching it sends the error frame (unless the stream was over) and settles with
//! the usage known so far. Costs count in the spend view before `[DONE]`.

use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::pump::{Client, Pump, StreamEnd, Wire};
use super::AppState;
use crate::accounting::Ticket;
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::completions::relay::status_of;
use crate::providers::completions::usage_of;
use crate::providers::EventSource;

/// What the client has been sent of a Chat Completions stream.
#[derive(Debug, Default)]
struct Sent {
    usage: TokenUsage,
    /// How the choices ended so far (`None` until a `finish_reason` arrives).
    finished: Option<UsageStatus>,
}

impl Wire for Sent {
    const LABEL: &'static str = "chat stream";
    const UPSTREAM_CODE: &'static str = "upstream_error";
    const DIED_CODE: &'static str = "internal_error";

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn failure(&mut self, code: &str, message: &str) -> Vec<Bytes> {
        let error = json!({"error": {"message": crate::scrub::credentials(message), "type": "api_error",
            "code": code, "param": null}});
        vec![frame(&error)]
    }
}

impl Sent {
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

/// Streams chunks to the client while a task reads the provider; the task settles.
pub fn stream_response(state: &AppState, source: EventSource, ticket: Ticket, include_usage: bool) -> Response {
    super::pump::stream_response(state, source, ticket, move |pump| pump_chunks(pump, include_usage))
}

/// Reads chunks to the end marker, forwarding each as soon as it arrives (see the module docs).
async fn pump_chunks(mut pump: Pump<Sent>, include_usage: bool) -> StreamEnd {
    loop {
        let mut chunk = match pump.next().await {
            Ok(Some(Value::Null)) => {
                pump.count_spend();
                return done(&pump.client).await;
            }
            Ok(Some(chunk)) => chunk,
            // A body that ended without `[DONE]` is over all the same once the provider said why
            // its choices stopped.
            Ok(None) if pump.client.lock().wire.finished.is_some() => {
                pump.count_spend();
                return done(&pump.client).await;
            }
            Ok(None) => return pump.fail(Sent::UPSTREAM_CODE, "The provider ended the stream early.").await,
            Err(end) => return end,
        };
        pump.client.lock().wire.observe(&chunk);
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            pump.count_spend();
            if let Some(object) = chunk.as_object_mut() {
                object.remove("usage");
            }
            pump.client.deliver(|_| frame(&chunk)).await;
            return pump.client.finish(UsageStatus::Failed);
        }
        if !include_usage && !strip_usage(&mut chunk) {
            continue;
        }
        pump.forward(|_| frame(&chunk)).await;
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
async fn done(client: &Client<Sent>) -> StreamEnd {
    client.deliver(|_| Bytes::from_static(b"data: [DONE]\n\n")).await;
    let status = client.lock().wire.finished.unwrap_or(UsageStatus::Success);
    client.finish(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::pump::watch;
    use tokio::sync::mpsc;

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
        let mut progress = Sent::default();
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
        let (sender, receiver) = mpsc::channel(8);
        let client = Client::<Sent>::new(sender, std::time::Duration::from_secs(5));
        client.lock().wire.usage.input_tokens = 7;
        let pumping = tokio::spawn(async { panic!("a bug in the pump") });
        let end = watch(pumping, &client, "req_1").await;
        drop(client);
        let text = frames(receiver).await;
        let data: Value = serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(data["error"]["code"], "internal_error");
        assert!(!text.contains("[DONE]"));
        assert_eq!((end.status, end.usage.input_tokens), (UsageStatus::Failed, 7));
    }

    #[tokio::test]
    async fn a_pump_that_panics_after_the_end_sends_nothing_more() {
        let (sender, receiver) = mpsc::channel(8);
        let client = Client::<Sent>::new(sender, std::time::Duration::from_secs(5));
        client.lock().terminal = Some(UsageStatus::Incomplete);
        let pumping = tokio::spawn(async { panic!("a bug after [DONE]") });
        let end = watch(pumping, &client, "req_1").await;
        drop(client);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end.status, UsageStatus::Incomplete, "as the stream ended");
    }
}
