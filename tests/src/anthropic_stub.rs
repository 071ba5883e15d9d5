//! A stub of Anthropic's Messages API (<https://docs.anthropic.com/en/api/messages>): records every
//! request, checks the headers and the conversation rules Anthropic enforces, and answers in the
//! exact Messages wire format, whole or as the SSE stream Anthropic sends
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>).
//!
//! Behaviour is chosen by the upstream model id: anything else answers plain text;
//! `tools-one` calls the first tool once (and, when the last user turn holds a `tool_result`,
//! answers with text that uses it); `tools-two` makes two parallel calls; `json` answers
//! `{"answer":42}`; `history` answers with the conversation it was sent ([`transcript`]); `length` stops at `max_tokens`; `thinking` thinks (signed) before answering and
//! checks the signature of thinking sent back; `error-403`, `error-429`, `error-529`, `error-long`
//! (prompt too long) fail; a wrong `x-api-key` gets 401; `stream-error` breaks its stream with an `error` event; `fixture:<name>` replays
//! `tests/fixtures/<name>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::stub::StubRequest;

/// The credential the stub accepts in `x-api-key`.
pub const API_KEY: &str = "sk-ant-test";
/// The signature of the stub's thinking block.
pub const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds0ByxRK4TPgxBrVsXW2pxnh2IMMY4mJ4zAxCzuCd9k2kkFb6kEoYbTmuOkgXsv+pCTZVjwvlFuc3uWNR0cPbBcC/Gg==";
/// The thinking text of the `thinking` model.
pub const THINKING: &str = "The user asks for 2 + 2. That is 4.";
/// The answer of the plain text model.
pub const TEXT: &str = "Hello from Claude";

/// What every answer reports: Responses usage is 135 input (100 cached) and 15 output tokens.
pub fn usage() -> Value {
    json!({"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 15})
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<StubRequest>>,
}

/// A running stub.
#[derive(Debug)]
pub struct AnthropicStub {
    /// Base URL as the Anthropic SDK takes it (`http://127.0.0.1:PORT`, no `/v1`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnthropicStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AnthropicStub {
    pub async fn start() -> AnthropicStub {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/messages", post(respond)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind anthropic stub");
        let addr = listener.local_addr().expect("anthropic stub addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AnthropicStub { url: format!("http://{addr}"), shared, task }
    }

    pub fn requests(&self) -> Vec<StubRequest> {
        self.shared.requests.lock().expect("stub lock").clone()
    }

    pub fn last_request(&self) -> StubRequest {
        self.requests().pop().expect("the anthropic stub received a request")
    }
}

/// Anthropic's error envelope.
fn error(status: u16, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn respond(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().expect("stub lock").push(StubRequest { headers: headers.clone(), body: body.clone() });
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if headers.get("anthropic-version").and_then(|v| v.to_str().ok()) != Some("2023-06-01") {
        return error(400, "invalid_request_error", "anthropic-version: header is required");
    }
    if let Err(message) = validate(&body) {
        return error(400, "invalid_request_error", &message);
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "error-429" => {
            let mut response =
                error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit");
            response.headers_mut().insert("retry-after", http::HeaderValue::from_static("7"));
            return response;
        }
        "error-529" => return error(529, "overloaded_error", "Overloaded"),
        // Anthropic's words, with a key quoted (Anthropic does not) to prove none reaches a client.
        "error-403" => {
            return error(
                403,
                "permission_error",
                "Your API key sk-ant-api03-****WXYZ does not have permission to use the specified resource.",
            )
        }
        "error-long" => {
            return error(400, "invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum")
        }
        _ => {}
    }
    if let Some(name) = model.strip_prefix("fixture:") {
        let bytes = std::fs::read(crate::stub::fixture_path(name)).unwrap_or_default();
        return sse(bytes.chunks(7).map(Bytes::copy_from_slice).collect());
    }
    if model == "thinking" {
        if let Err(message) = check_signatures(&body) {
            return error(400, "invalid_request_error", &message);
        }
    }
    let (content, stop_reason) = scenario(&model, &body);
    let message = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage()
    });
    if body["stream"] == json!(true) {
        let frames = stream_events(&message, model == "stream-error")
            .into_iter()
            .map(|event| {
                let kind = event["type"].as_str().unwrap_or_default().to_owned();
                Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
            })
            .collect();
        return sse(frames);
    }
    (StatusCode::OK, [("content-type", "application/json"), ("request-id", "req_stub")], message.to_string())
        .into_response()
}

/// The answer's content blocks and stop reason.
fn scenario(model: &str, body: &Value) -> (Vec<Value>, &'static str) {
    let tool = body["tools"][0]["name"].as_str().unwrap_or("get_weather").to_owned();
    let results = last_tool_results(body);
    let text = |text: &str| json!({"type": "text", "text": text});
    let call = |id: &str, city: &str| json!({"type": "tool_use", "id": id, "name": tool, "input": {"city": city}});
    match model {
        "tools-one" if !results.is_empty() => {
            (vec![text(&format!("The weather in Paris: {}.", results[0]))], "end_turn")
        }
        "tools-one" => {
            (vec![text("Let me check the weather."), call("toolu_01A09q90qw90lq917835lq9", "Paris")], "tool_use")
        }
        "tools-two" if !results.is_empty() => (vec![text(&format!("Results: {}.", results.join(" / ")))], "end_turn"),
        "tools-two" => (
            vec![call("toolu_01A09q90qw90lq917835lq9", "Paris"), call("toolu_02B19r91rx91mr028946mr0", "London")],
            "tool_use",
        ),
        "json" => (vec![text(r#"{"answer":42}"#)], "end_turn"),
        "history" => (vec![text(&transcript(body))], "end_turn"),
        "length" => (vec![text("This answer is cut")], "max_tokens"),
        "thinking" => (
            vec![json!({"type": "thinking", "thinking": THINKING, "signature": SIGNATURE}), text("2 + 2 = 4.")],
            "end_turn",
        ),
        "stream-error" => (vec![text("Once upon a time")], "end_turn"),
        _ => (vec![text(TEXT)], "end_turn"),
    }
}

/// The conversation of a request in the form of [`crate::stub_models::transcript`]: `role:text`
/// per message (its text blocks joined), `function_call:NAME` per `tool_use` block and
/// `function_call_output:OUTPUT` per `tool_result` block, joined by ` | `.
pub fn transcript(body: &Value) -> String {
    let mut entries = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or_default();
        let blocks = match &message["content"] {
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            _ => Vec::new(),
        };
        let text: String = blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
        if !text.is_empty() {
            entries.push(format!("{role}:{text}"));
        }
        for block in &blocks {
            match block["type"].as_str().unwrap_or_default() {
                "tool_use" => entries.push(format!("function_call:{}", block["name"].as_str().unwrap_or_default())),
                "tool_result" => {
                    let output = match &block["content"] {
                        Value::String(text) => text.clone(),
                        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                        _ => String::new(),
                    };
                    entries.push(format!("function_call_output:{output}"));
                }
                _ => {}
            }
        }
    }
    entries.join(" | ")
}

/// The texts of the `tool_result` blocks of the last user turn.
fn last_tool_results(body: &Value) -> Vec<String> {
    let Some(last) = body["messages"].as_array().and_then(|m| m.last()) else { return Vec::new() };
    last["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| match &b["content"] {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                    _ => String::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The request rules Anthropic enforces that a translation can get wrong.
fn validate(body: &Value) -> Result<(), String> {
    if !body["model"].is_string() {
        return Err("model: Field required".to_owned());
    }
    let max_tokens = body["max_tokens"].as_u64().ok_or("max_tokens: Field required")?;
    if max_tokens == 0 {
        return Err("max_tokens: must be greater than or equal to 1".to_owned());
    }
    if body["temperature"].as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err("temperature: range: 0..1".to_owned());
    }
    if let Some(budget) = body["thinking"]["budget_tokens"].as_u64() {
        if budget < 1024 || budget >= max_tokens {
            return Err("thinking.budget_tokens: must be ≥ 1024 and less than max_tokens".to_owned());
        }
    }
    if let Some(system) = body.get("system") {
        let blocks = system.as_array().ok_or("system: expected a list of text blocks")?;
        if blocks.iter().any(|b| b["type"] != "text" || b["text"].as_str().is_none_or(str::is_empty)) {
            return Err("system: text content blocks must be non-empty".to_owned());
        }
    }
    if let Some(tools) = body.get("tools") {
        for tool in tools.as_array().ok_or("tools: expected a list")? {
            if !tool["name"].is_string() || !tool["input_schema"].is_object() || tool.get("type").is_some() {
                return Err(format!("tools: invalid custom tool {tool}"));
            }
        }
    } else if body.get("tool_choice").is_some() {
        return Err("tool_choice may only be specified while providing tools".to_owned());
    }
    let messages = body["messages"].as_array().ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let mut previous_tool_uses: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(format!(
                "messages.{i}: roles must alternate between \"user\" and \"assistant\", starting with \"user\""
            ));
        }
        let blocks = message["content"].as_array().ok_or(format!("messages.{i}.content: expected a list of blocks"))?;
        if blocks.is_empty() {
            return Err(format!("messages.{i}: all messages must have non-empty content"));
        }
        let mut seen_other = false;
        let mut tool_uses = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match (role, block["type"].as_str().unwrap_or_default()) {
                (_, "text") if block["text"].as_str().is_none_or(str::is_empty) => {
                    return Err(format!("{at}: text content blocks must be non-empty"))
                }
                (_, "text") | ("user", "image" | "document") => seen_other = true,
                ("user", "tool_result") => {
                    if seen_other {
                        return Err(format!("{at}: tool_result blocks must come first in the user message"));
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    if !previous_tool_uses.iter().any(|u| u == id) {
                        return Err(format!("{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}"));
                    }
                }
                ("assistant", "tool_use") => {
                    if !block["input"].is_object() || !block["id"].is_string() || !block["name"].is_string() {
                        return Err(format!("{at}: tool_use needs id, name and an input object"));
                    }
                    tool_uses.push(block["id"].as_str().unwrap_or_default().to_owned());
                }
                ("assistant", "thinking") if block["signature"].as_str().is_none_or(str::is_empty) => {
                    return Err(format!("{at}.signature: Field required"))
                }
                ("assistant", "thinking" | "redacted_thinking") => {}
                (role, kind) => return Err(format!("{at}: `{kind}` blocks are not allowed in {role} messages")),
            }
        }
        previous_tool_uses = tool_uses;
    }
    Ok(())
}

/// Thinking sent back must carry the signature the stub issued, with its text unchanged.
fn check_signatures(body: &Value) -> Result<(), String> {
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] == "thinking" && (block["signature"] != SIGNATURE || block["thinking"] != THINKING) {
                return Err("Invalid `signature` in `thinking` block".to_owned());
            }
        }
    }
    Ok(())
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The stream events of a message, in Anthropic's order (a `ping` after the first block starts).
/// With `break_off`, an `error` event follows the first block's first delta and the stream ends.
pub fn stream_events(message: &Value, break_off: bool) -> Vec<Value> {
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"]["output_tokens"] = json!(1);
    let mut events = vec![json!({"type": "message_start", "message": start})];
    for (index, block) in message["content"].as_array().into_iter().flatten().enumerate() {
        let delta = |delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
        let kind = block["type"].as_str().unwrap_or_default();
        let (opening, deltas) = match kind {
            "tool_use" => {
                let mut opening = block.clone();
                opening["input"] = json!({});
                let mut deltas = vec![delta(json!({"type": "input_json_delta", "partial_json": ""}))];
                deltas.extend(
                    pieces(&block["input"].to_string(), 8)
                        .into_iter()
                        .map(|p| delta(json!({"type": "input_json_delta", "partial_json": p}))),
                );
                (opening, deltas)
            }
            "thinking" => {
                let mut deltas: Vec<Value> = pieces(block["thinking"].as_str().unwrap_or_default(), 10)
                    .into_iter()
                    .map(|p| delta(json!({"type": "thinking_delta", "thinking": p})))
                    .collect();
                deltas.push(delta(json!({"type": "signature_delta", "signature": block["signature"]})));
                (json!({"type": "thinking", "thinking": "", "signature": ""}), deltas)
            }
            _ => {
                let deltas = pieces(block["text"].as_str().unwrap_or_default(), 5)
                    .into_iter()
                    .map(|p| delta(json!({"type": "text_delta", "text": p})))
                    .collect();
                (json!({"type": "text", "text": ""}), deltas)
            }
        };
        events.push(json!({"type": "content_block_start", "index": index, "content_block": opening}));
        if index == 0 {
            events.push(json!({"type": "ping"}));
        }
        if break_off {
            events.extend(deltas.into_iter().take(1));
            events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
            return events;
        }
        events.extend(deltas);
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events
        .push(json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
        "usage": {"output_tokens": message["usage"]["output_tokens"]}}));
    events.push(json!({"type": "message_stop"}));
    events
}

/// An SSE response sending the frames one by one.
fn sse(frames: Vec<Bytes>) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for frame in frames {
            if sender.send(Ok(frame)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)))
        .unwrap_or_default()
}
