//! What the provider scenarios check of a Responses answer, whole or streamed: the answer read
//! off the wire, the stream invariants the official SDKs rely on, and the output items the
//! translated providers produce.

use std::collections::HashMap;

use mesh::sse::SseParser;
use serde_json::{json, Value};

/// What the client got: the final Responses object (or the error envelope) and the events.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub request_id: String,
    pub events: Vec<Value>,
}

/// Reads the gateway's answer to a request sent with `stream`; a stream is checked for order
/// and consistency and its terminal event's response becomes the body.
pub async fn read_answer(response: reqwest::Response, stream: bool) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let is_stream = headers.get("content-type").is_some_and(|v| v == "text/event-stream");
    assert_eq!(is_stream, stream && status == 200, "streams answer SSE, everything else JSON");
    let bytes = response.bytes().await.unwrap();
    if !is_stream {
        return Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap(),
            request_id,
            events: Vec::new(),
        };
    }
    let mut parser = SseParser::new();
    let events: Vec<Value> = parser
        .feed(&bytes)
        .unwrap()
        .into_iter()
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), data["type"].as_str(), "event name equals the payload type");
            data
        })
        .collect();
    check_stream(&events);
    let body = events.last().unwrap()["response"].clone();
    Answer { status, headers, body, request_id, events }
}

/// The order the official SDKs rely on: created first, increasing sequence numbers, every delta
/// after its item was added at the same output index, and the deltas adding up to the final items.
fn check_stream(events: &[Value]) {
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[1]["type"], "response.in_progress");
    let terminal = events.last().unwrap()["type"].as_str().unwrap();
    assert!(["response.completed", "response.incomplete", "response.failed"].contains(&terminal), "{terminal}");
    for pair in events.windows(2) {
        assert!(pair[0]["sequence_number"].as_u64() < pair[1]["sequence_number"].as_u64());
    }
    let mut added = HashMap::new();
    let mut streamed: HashMap<String, String> = HashMap::new();
    for event in events {
        if event["type"] == "response.output_item.added" {
            added.insert(event["item"]["id"].as_str().unwrap().to_owned(), event["output_index"].clone());
        }
        if let Some(id) = event.get("item_id").and_then(Value::as_str) {
            assert_eq!(added.get(id), Some(&event["output_index"]), "{event}");
            if event["type"].as_str().unwrap().ends_with(".delta") {
                streamed.entry(id.to_owned()).or_default().push_str(event["delta"].as_str().unwrap());
            }
        }
    }
    if terminal != "response.failed" {
        for item in events.last().unwrap()["response"]["output"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap();
            let whole = match item["type"].as_str().unwrap() {
                "message" => item["content"][0]["text"].as_str().unwrap(),
                "function_call" => item["arguments"].as_str().unwrap(),
                _ => item["summary"][0]["text"].as_str().unwrap(),
            };
            assert_eq!(streamed.get(id).map(String::as_str).unwrap_or_default(), whole, "deltas add up to {item}");
        }
    }
}

/// Output items without their generated ids.
pub fn without_ids(output: &Value) -> Value {
    let mut output = output.clone();
    for item in output.as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("id");
    }
    output
}

pub fn message(text: &str) -> Value {
    json!({"type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

pub fn function_call(call_id: &str, city: &str) -> Value {
    json!({"type": "function_call", "call_id": call_id, "name": "get_weather",
        "arguments": format!("{{\"city\":\"{city}\"}}"), "status": "completed"})
}
