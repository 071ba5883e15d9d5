//! A Chat Completions client for the scenarios: posts to `/v1/chat/completions` and reads the
//! answer, whole or streamed. A stream is checked for the framing OpenAI's SDKs rely on: `data:`
//! lines only (no `event:` names), one JSON chunk each, every chunk with the same id and the
//! catalog model, and `data: [DONE]` last (unless the stream reports an error).

use std::collections::BTreeMap;

use mesh::sse::SseParser;
use serde_json::{json, Value};

use crate::Gateway;

/// What the client got.
#[derive(Debug)]
pub struct ChatAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// `x-request-id` (the gateway's own id when the client sent none: the usage record's key).
    pub request_id: String,
    /// The `chat.completion` (or the error envelope); `Null` for streams.
    pub body: Value,
    /// The streamed chunks, in order, without `[DONE]`.
    pub chunks: Vec<Value>,
    /// The stream ended with `data: [DONE]`.
    pub done: bool,
}

impl ChatAnswer {
    /// The first choice's text.
    pub fn text(&self) -> String {
        if self.chunks.is_empty() {
            return self.body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
        }
        self.deltas().filter_map(|d| d["content"].as_str().map(str::to_owned)).collect()
    }

    fn deltas(&self) -> impl Iterator<Item = &Value> {
        self.chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().into_iter().flatten())
            .filter(|choice| choice["index"] == 0)
            .map(|choice| &choice["delta"])
    }

    /// The first choice's tool calls, as a whole message lists them (streamed pieces merged).
    pub fn tool_calls(&self) -> Vec<Value> {
        if self.chunks.is_empty() {
            return self.body["choices"][0]["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
        }
        let mut calls: BTreeMap<u64, Value> = BTreeMap::new();
        for piece in self.deltas().flat_map(|d| d["tool_calls"].as_array().cloned().unwrap_or_default()) {
            let index = piece["index"].as_u64().expect("a tool call piece has an index");
            let call = calls.entry(index).or_insert_with(|| {
                assert!(piece["id"].is_string(), "a call's first piece carries its id: {piece}");
                json!({"id": piece["id"], "type": "function", "function": {"name": piece["function"]["name"], "arguments": ""}})
            });
            if let Some(fragment) = piece["function"]["arguments"].as_str() {
                let arguments = format!("{}{fragment}", call["function"]["arguments"].as_str().unwrap());
                call["function"]["arguments"] = json!(arguments);
            }
        }
        calls.into_values().collect()
    }

    pub fn finish_reason(&self) -> Option<String> {
        let reason = if self.chunks.is_empty() {
            self.body["choices"][0]["finish_reason"].as_str()
        } else {
            self.chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str())
        };
        reason.map(str::to_owned)
    }

    /// The `usage` object the client was shown (whole answers, or the usage chunk).
    pub fn usage(&self) -> Option<Value> {
        if self.chunks.is_empty() {
            return self.body.get("usage").cloned();
        }
        self.chunks.iter().find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
    }
}

/// Posts a Chat Completions request with a bearer secret.
pub async fn post_chat(gw: &Gateway, secret: &str, body: &Value) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

/// Sends a request and reads the answer.
pub async fn chat(gw: &Gateway, secret: &str, body: &Value) -> ChatAnswer {
    read(post_chat(gw, secret, body).await).await
}

/// Reads an answer off the wire, checking a stream's framing.
pub async fn read(response: reqwest::Response) -> ChatAnswer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let is_stream = headers.get("content-type").is_some_and(|v| v == "text/event-stream");
    let bytes = response.bytes().await.unwrap();
    if !is_stream {
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(&bytes)));
        return ChatAnswer { status, headers, request_id, body, chunks: Vec::new(), done: false };
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(!text.contains("event:"), "Chat Completions streams name no events: {text}");
    let mut events = SseParser::new().feed(&bytes).unwrap();
    let done = events.last().is_some_and(|e| e.data == "[DONE]");
    if done {
        events.pop();
    }
    let chunks: Vec<Value> = events
        .iter()
        .map(|event| {
            assert!(event.event.is_none());
            assert_ne!(event.data, "[DONE]", "[DONE] comes last, once");
            serde_json::from_str(&event.data).unwrap()
        })
        .collect();
    let errored = chunks.last().is_some_and(|c| c.get("error").is_some());
    assert!(done != errored, "a stream ends with [DONE] or with an error chunk: {text}");
    let first = chunks.iter().find(|c| c.get("error").is_none());
    for chunk in chunks.iter().filter(|c| c.get("error").is_none()) {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], first.unwrap()["id"], "one id per stream");
        assert!(chunk["id"].as_str().unwrap().starts_with("chatcmpl-"), "{chunk}");
    }
    ChatAnswer { status, headers, request_id, body: Value::Null, chunks, done }
}
