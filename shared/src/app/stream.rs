//! Streaming answers in Responses SSE: forward each provider event as it arrives, keep reading
//! the provider for its usage when the client leaves, close broken streams with
//! `response.failed`, then store the response and settle.
//!
//! Every started stream ends with exactly one terminal event and is settled, whatever the
//! provider sends; the mechanics (its own task, the drain, a pump that dies) are the shared
//! [`super::pump`]'s. A completed response is stored once its terminal event is sent, before
//! the stream ends, so a continuation can follow at once.

use std::collections::BTreeMap;

use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::pump::{Pump, StreamEnd, Wire};
use super::AppState;
use crate::accounting::Ticket;
use crate::archive::Archive;
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::assemble::REQUIRED_RESPONSE_FIELDS;
use crate::providers::EventSource;
use crate::sse;
use crate::store::Stores;

/// What the client has been sent of a Responses stream.
#[derive(Debug, Default)]
struct Sent {
    last_sequence: Option<u64>,
    /// The latest response object the provider sent (only ever an object).
    snapshot: Option<Value>,
    /// The output the client was sent, by output index: each item as added, grown by its
    /// deltas, replaced when done (`true`), so that a failure can close it and keep it.
    output: BTreeMap<u64, (Value, bool)>,
}

impl Wire for Sent {
    const LABEL: &'static str = "stream";
    const UPSTREAM_CODE: &'static str = "server_error";
    const DIED_CODE: &'static str = "server_error";

    fn usage(&self) -> TokenUsage {
        self.snapshot.as_ref().map(crate::providers::responses::usage_of).unwrap_or_default()
    }

    fn failure(&mut self, code: &str, message: &str) -> Vec<Bytes> {
        let events = failure_events(self, code, message);
        events.iter().map(|event| self.frame(event)).collect()
    }
}

impl Sent {
    /// Notes what an event says: its sequence number, the response, the output.
    fn observe(&mut self, event: &Value) {
        if let Some(sequence) = event.get("sequence_number").and_then(Value::as_u64) {
            self.last_sequence = Some(sequence);
        }
        if let Some(response @ Value::Object(_)) = event.get("response") {
            self.snapshot = Some(response.clone());
        }
        if let Some(kind) = event.get("type").and_then(Value::as_str) {
            self.note_output(kind, event);
        }
    }

    /// Follows the output an event sends (see `output`).
    fn note_output(&mut self, kind: &str, event: &Value) {
        let Some(index) = event.get("output_index").and_then(Value::as_u64) else { return };
        if kind == "response.output_item.added" || kind == "response.output_item.done" {
            if let Some(item @ Value::Object(_)) = event.get("item") {
                self.output.insert(index, (item.clone(), kind == "response.output_item.done"));
            }
            return;
        }
        let Some((item, false)) = self.output.get_mut(&index) else { return };
        let delta = event.get("delta").and_then(Value::as_str);
        let at = |name: &str| event.get(name).and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok());
        match kind {
            "response.content_part.added" => push_part(item, "content", event.get("part")),
            "response.reasoning_summary_part.added" => push_part(item, "summary", event.get("part")),
            "response.output_text.delta" => append_text(item, "content", at("content_index"), "text", delta),
            "response.refusal.delta" => append_text(item, "content", at("content_index"), "refusal", delta),
            "response.reasoning_summary_text.delta" => append_text(item, "summary", at("summary_index"), "text", delta),
            "response.function_call_arguments.delta" => {
                if let (Some(Value::String(arguments)), Some(delta)) = (item.get_mut("arguments"), delta) {
                    arguments.push_str(delta);
                }
            }
            _ => {}
        }
    }

    /// The next sequence number.
    fn next_sequence(&mut self) -> u64 {
        let sequence = self.last_sequence.map_or(0, |s| s.saturating_add(1));
        self.last_sequence = Some(sequence);
        sequence
    }

    /// One event's frame, as the SDKs need it ([`wire_shape`]); an error event is numbered like
    /// every other (the SDKs declare `sequence_number` on it).
    fn frame(&mut self, event: &Value) -> Bytes {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("error");
        let shaped;
        let event = match wire_shape(kind, event) {
            Some(fixed) => {
                shaped = fixed;
                &shaped
            }
            None => event,
        };
        let numbered;
        let event = if kind == "error" && event.get("sequence_number").is_none() {
            let mut with_number = event.clone();
            with_number["sequence_number"] = json!(self.next_sequence());
            numbered = with_number;
            &numbered
        } else {
            event
        };
        sse::encode(kind, &event.to_string())
    }
}

fn push_part(item: &mut Value, list: &str, part: Option<&Value>) {
    if let (Some(Value::Array(parts)), Some(part)) = (item.get_mut(list), part) {
        parts.push(part.clone());
    }
}

fn append_text(item: &mut Value, list: &str, index: Option<usize>, field: &str, delta: Option<&str>) {
    let (Some(index), Some(delta)) = (index, delta) else { return };
    let part = item.get_mut(list).and_then(|parts| parts.get_mut(index));
    if let Some(Value::String(text)) = part.and_then(|part| part.get_mut(field)) {
        text.push_str(delta);
    }
}

/// Streams Responses SSE to the client while a task reads the provider; the task settles.
pub fn stream_response(state: &AppState, source: EventSource, ticket: Ticket, archive: Option<Archive>) -> Response {
    let stores = state.cached.stores.clone();
    super::pump::stream_response(state, source, ticket, move |pump| pump_events(pump, stores, archive))
}

/// Reads provider events to the terminal one, forwarding each as soon as it arrives; stores a
/// completed response once its terminal event is sent. Events reach here checked
/// (`providers::check_event`): an object with a well-formed `type` and, if any, an object
/// `response`.
async fn pump_events(mut pump: Pump<Sent>, stores: Stores, archive: Option<Archive>) -> StreamEnd {
    loop {
        let event = match pump.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return pump.fail("server_error", "The provider ended the stream early.").await,
            Err(end) => return end,
        };
        let terminal = match event.get("type").and_then(Value::as_str) {
            Some("response.completed") => Some(UsageStatus::Success),
            Some("response.incomplete") => Some(UsageStatus::Incomplete),
            Some("response.failed") => Some(UsageStatus::Failed),
            _ => None,
        };
        pump.client.lock().wire.observe(&event);
        if terminal.is_some() {
            pump.count_spend();
        }
        pump.forward(|sent| sent.frame(&event)).await;
        let Some(status) = terminal else { continue };
        let end = pump.client.finish(status);
        // Stored once the client has the terminal event, before the stream (and, under Lambda,
        // the invocation) ends.
        if let (UsageStatus::Success | UsageStatus::Incomplete, Some(archive)) = (status, archive) {
            let snapshot = pump.client.lock().wire.snapshot.clone();
            if let Some(response) = snapshot {
                archive.save(&stores, response).await;
            }
        }
        return end;
    }
}

/// An event as the SDKs need it on the wire, when it must change (`None`: send it as it is).
///
/// An `error` event carries its words both flat (`code`, `message`, `param`: the SDKs' declared
/// `ResponseErrorEvent`) and nested under `error` (`{type, code, message, param}`: what OpenAI
/// sends, and what makes openai-python and openai-node raise), with credentials scrubbed; its
/// frame is `event: error`. Any other event never carries a top-level `error` key, which the
/// SDKs would take for a failure.
fn wire_shape(kind: &str, event: &Value) -> Option<Value> {
    let object = event.as_object()?;
    if kind != "error" {
        if !object.contains_key("error") {
            return None;
        }
        let mut fixed = object.clone();
        fixed.remove("error");
        return Some(Value::Object(fixed));
    }
    let nested = object.get("error").filter(|e| e.is_object());
    let word = |name: &str| {
        object
            .get(name)
            .filter(|v| !v.is_null())
            .or_else(|| nested.and_then(|e| e.get(name)).filter(|v| !v.is_null()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let message = match word("message") {
        Value::String(text) => json!(crate::scrub::credentials(&text)),
        Value::Null => json!("The provider reported an error."),
        other => json!(crate::scrub::credentials(&other.to_string())),
    };
    let (code, param) = (word("code"), word("param"));
    let error_type = match word("type") {
        Value::String(kind) if kind != "error" => json!(kind),
        _ => nested.and_then(|e| e.get("type")).cloned().unwrap_or_else(|| json!("server_error")),
    };
    let mut fixed = object.clone();
    fixed.insert("type".to_owned(), json!("error"));
    fixed.insert("code".to_owned(), code.clone());
    fixed.insert("message".to_owned(), message.clone());
    fixed.insert("param".to_owned(), param.clone());
    fixed.insert("error".to_owned(), json!({"type": error_type, "code": code, "message": message, "param": param}));
    let fixed = Value::Object(fixed);
    (fixed != *event).then_some(fixed)
}

/// The value a failed response gets for a field the SDKs require
/// ([`REQUIRED_RESPONSE_FIELDS`]) when nothing said otherwise.
fn failed_default(field: &str) -> Value {
    match field {
        "object" => json!("response"),
        "output" | "tools" => json!([]),
        "metadata" => json!({}),
        "parallel_tool_calls" => json!(true),
        "tool_choice" => json!("auto"),
        _ => Value::Null,
    }
}

/// The events closing a broken stream, numbered after the last one sent: an
/// `output_item.done` marking each item still open `incomplete`, then `response.failed` with
/// the last response the provider sent (or a bare one), failed, and the output streamed so far
/// when that response holds none.
fn failure_events(progress: &mut Sent, code: &str, message: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let open: Vec<u64> = progress.output.iter().filter(|(_, (_, done))| !done).map(|(index, _)| *index).collect();
    for index in open {
        let closed = progress.output.get_mut(&index).map(|(item, done)| {
            item["status"] = json!("incomplete");
            *done = true;
            item.clone()
        });
        if let Some(item) = closed {
            let sequence = progress.next_sequence();
            events.push(json!({"type": "response.output_item.done", "sequence_number": sequence,
                "output_index": index, "item": item}));
        }
    }
    let sequence = progress.next_sequence();
    let mut response = match progress.snapshot.clone() {
        Some(Value::Object(response)) => response,
        _ => {
            let mut bare = Map::new();
            bare.insert("object".to_owned(), json!("response"));
            bare.insert("output".to_owned(), json!([]));
            bare
        }
    };
    for field in REQUIRED_RESPONSE_FIELDS {
        let value = failed_default(field);
        response.entry(field).or_insert(value);
    }
    let sent_none = response.get("output").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if sent_none && !progress.output.is_empty() {
        let output = progress.output.values().map(|(item, _)| item.clone()).collect();
        response.insert("output".to_owned(), Value::Array(output));
    }
    response.insert("status".to_owned(), json!("failed"));
    response.insert("incomplete_details".to_owned(), Value::Null);
    response.insert("error".to_owned(), json!({"code": code, "message": crate::scrub::credentials(message)}));
    events.push(json!({"type": "response.failed", "sequence_number": sequence, "response": response}));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::pump::{watch, Client};
    use tokio::sync::mpsc;

    async fn frames(mut receiver: mpsc::Receiver<Bytes>) -> Vec<sse::SseEvent> {
        let mut parser = sse::SseParser::new();
        let mut events = Vec::new();
        while let Some(frame) = receiver.recv().await {
            events.extend(parser.feed(&frame).unwrap());
        }
        events
    }

    /// A client that was sent events up to sequence number 4, the last response with usage.
    fn client_with_usage() -> (Client<Sent>, mpsc::Receiver<Bytes>) {
        let (sender, receiver) = mpsc::channel(8);
        let client = Client::<Sent>::new(sender, std::time::Duration::from_secs(5));
        {
            let mut progress = client.lock();
            progress.wire.last_sequence = Some(4);
            let response = json!({"id": "resp_1", "object": "response", "status": "in_progress",
                "usage": {"input_tokens": 7, "output_tokens": 3}});
            progress.wire.snapshot = Some(response);
        }
        (client, receiver)
    }

    #[tokio::test]
    async fn a_pump_that_panics_still_ends_the_stream_and_settles() {
        let (client, receiver) = client_with_usage();
        let pumping = tokio::spawn(async { panic!("a bug in the pump") });
        let end = watch(pumping, &client, "req_1").await;
        drop(client);
        let events = frames(receiver).await;
        assert_eq!(events.len(), 1, "exactly one terminal event: {events:?}");
        assert_eq!(events[0].event.as_deref(), Some("response.failed"));
        let data: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(data["sequence_number"], 5);
        assert_eq!(data["response"]["id"], "resp_1");
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "server_error");
        assert_eq!(end.status, UsageStatus::Failed);
        assert_eq!((end.usage.input_tokens, end.usage.output_tokens), (7, 3), "the usage known so far");
    }

    #[test]
    fn the_usage_known_so_far_counts_cache_writes() {
        let sent = Sent {
            snapshot: Some(json!({"usage": {"input_tokens": 9, "input_tokens_details":
                {"cached_tokens": 2, "cache_write_tokens": 5}, "output_tokens": 1}})),
            ..Sent::default()
        };
        let usage = sent.usage();
        assert_eq!((usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens), (9, 2, 5));
    }

    #[tokio::test]
    async fn a_pump_that_panics_after_the_terminal_event_sends_no_second_one() {
        let (client, receiver) = client_with_usage();
        client.lock().terminal = Some(UsageStatus::Success);
        let pumping = tokio::spawn(async { panic!("a bug after the terminal event") });
        let end = watch(pumping, &client, "req_1").await;
        let usage = client.lock().wire.usage();
        drop(client);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end, StreamEnd { usage, status: UsageStatus::Success });
    }

    #[tokio::test]
    async fn a_client_that_left_gets_nothing_and_is_recorded_as_gone() {
        let (client, receiver) = client_with_usage();
        client.lock().client_gone = true;
        let pumping = tokio::spawn(async { panic!("a bug") });
        let end = watch(pumping, &client, "req_1").await;
        drop(client);
        assert!(frames(receiver).await.is_empty());
        assert_eq!(end.status, UsageStatus::ClientDisconnected);
    }

    fn last(mut events: Vec<Value>) -> Value {
        events.pop().unwrap_or_default()
    }

    #[test]
    fn a_failure_closes_the_open_items_and_keeps_the_output_streamed_so_far() {
        let mut progress = Sent::default();
        let sent = [
            json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "output": []}}),
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
            json!({"type": "response.reasoning_summary_part.added", "sequence_number": 2, "item_id": "rs_1",
                "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 3, "item_id": "rs_1",
                "output_index": 0, "summary_index": 0, "delta": "hm"}),
            json!({"type": "response.output_item.done", "sequence_number": 4, "output_index": 0,
                "item": {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]}}),
            json!({"type": "response.output_item.added", "sequence_number": 5, "output_index": 1,
                "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "sequence_number": 6, "item_id": "msg_1", "output_index": 1,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            json!({"type": "response.output_text.delta", "sequence_number": 7, "item_id": "msg_1", "output_index": 1,
                "content_index": 0, "delta": "Hel"}),
            json!({"type": "response.output_text.delta", "sequence_number": 8, "item_id": "msg_1", "output_index": 1,
                "content_index": 0, "delta": "lo"}),
            json!({"type": "response.output_item.added", "sequence_number": 9, "output_index": 2,
                "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "",
                    "status": "in_progress"}}),
            json!({"type": "response.function_call_arguments.delta", "sequence_number": 10, "item_id": "fc_1",
                "output_index": 2, "delta": "{\"a\""}),
        ];
        for event in &sent {
            progress.last_sequence = event["sequence_number"].as_u64();
            if event["type"] == "response.created" {
                progress.snapshot = Some(event["response"].clone());
            }
            progress.note_output(event["type"].as_str().unwrap(), event);
        }
        let events = failure_events(&mut progress, "server_error", "cut");
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["response.output_item.done", "response.output_item.done", "response.failed"]);
        let sequences: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(sequences, [11, 12, 13]);
        assert_eq!(events[0]["item"]["id"], "msg_1");
        assert_eq!(events[0]["item"]["status"], "incomplete");
        assert_eq!(events[0]["item"]["content"][0]["text"], "Hello");
        assert_eq!(events[1]["item"]["call_id"], "call_1");
        assert_eq!(events[1]["item"]["arguments"], "{\"a\"");
        let output = events[2]["response"]["output"].as_array().unwrap();
        let ids: Vec<&str> = output.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["rs_1", "msg_1", "fc_1"]);
        assert_eq!(output[0]["summary"][0]["text"], "hm");
        assert!(output[0].get("status").is_none(), "a finished item stays as it was");
        assert_eq!(output[1]["status"], "incomplete");
    }

    #[test]
    fn failure_events_are_well_formed_from_any_state() {
        let mut progress = Sent { last_sequence: Some(u64::MAX), ..Sent::default() };
        let event = last(failure_events(&mut progress, "server_error", "Bearer sk-abcdefgh refused"));
        assert_eq!(event["sequence_number"], u64::MAX, "no overflow");
        assert_eq!(
            event["response"],
            json!({"object": "response", "output": [], "status": "failed",
            "error": {"code": "server_error", "message": "[redacted] refused"},
            "id": null, "created_at": null, "model": null, "incomplete_details": null, "instructions": null,
            "metadata": {}, "parallel_tool_calls": true, "temperature": null, "tool_choice": "auto", "tools": [],
            "top_p": null})
        );
        // A snapshot keeps what it said; only what it lacks is added.
        let mut progress = Sent {
            snapshot: Some(
                json!({"id": "resp_1", "object": "response", "model": "m", "tools": [{"type": "function"}]}),
            ),
            ..Sent::default()
        };
        let event = last(failure_events(&mut progress, "server_error", "cut"));
        assert_eq!(event["response"]["id"], "resp_1");
        assert_eq!(event["response"]["tools"], json!([{"type": "function"}]));
        assert_eq!(event["response"]["top_p"], Value::Null);
        assert!(event.get("error").is_none(), "no top-level error key on a lifecycle event");
    }

    #[test]
    fn error_events_carry_flat_and_nested_words() {
        // OpenAI's nested shape gains the flat fields.
        let nested = json!({"type": "error", "sequence_number": 3,
            "error": {"type": "server_error", "code": "server_error", "message": "boom sk-abcdefghijkl", "param": null}});
        let fixed = wire_shape("error", &nested).unwrap();
        assert_eq!(
            fixed,
            json!({"type": "error", "sequence_number": 3, "code": "server_error", "message": "boom [redacted]",
                "param": null, "error": {"type": "server_error", "code": "server_error", "message": "boom [redacted]",
                "param": null}})
        );
        // The SDK's flat shape gains the nested object.
        let flat = json!({"type": "error", "sequence_number": 4, "code": "rate_limit_exceeded", "message": "slow down",
            "param": null});
        let fixed = wire_shape("error", &flat).unwrap();
        assert_eq!(
            fixed["error"],
            json!({"type": "server_error", "code": "rate_limit_exceeded",
            "message": "slow down", "param": null})
        );
        assert_eq!((fixed["code"].as_str(), fixed["sequence_number"].as_u64()), (Some("rate_limit_exceeded"), Some(4)));
        // Already both: sent as it is.
        assert!(wire_shape("error", &fixed).is_none());
        // Other events: never a top-level error key.
        let odd = json!({"type": "response.output_text.delta", "delta": "x", "error": {"message": "?"}});
        assert_eq!(
            wire_shape("response.output_text.delta", &odd).unwrap(),
            json!({"type": "response.output_text.delta", "delta": "x"})
        );
        assert!(wire_shape("response.output_text.delta", &json!({"type": "x", "delta": "y"})).is_none());
    }

    #[tokio::test]
    async fn an_error_event_goes_out_named_error_with_both_shapes() {
        let (sender, receiver) = mpsc::channel(8);
        let client = Client::<Sent>::new(sender, std::time::Duration::from_secs(5));
        let event = json!({"type": "error", "sequence_number": 2, "code": "server_error", "message": "boom"});
        client.deliver(|sent| sent.frame(&event)).await;
        client.lock().wire.last_sequence = Some(6);
        let unnumbered = json!({"type": "error", "error": {"type": "server_error", "message": "again"}});
        client.deliver(|sent| sent.frame(&unnumbered)).await;
        drop(client);
        let events = frames(receiver).await;
        assert_eq!(events[0].event.as_deref(), Some("error"));
        let data: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(data["error"]["message"], "boom");
        assert_eq!(data["message"], "boom");
        assert_eq!(data["sequence_number"], 2);
        let data: Value = serde_json::from_str(&events[1].data).unwrap();
        assert_eq!((data["message"].as_str(), data["sequence_number"].as_u64()), (Some("again"), Some(7)));
    }
}
