//! The conformance models of the OpenAI Responses stub ([`crate::stub`]): answers in the exact
//! wire format OpenAI sends today (openai-python 3.x types), whole or streamed, for the upstream
//! model ids the client conformance suite uses (the same ids as the Chat and Anthropic stubs):
//! - `plain`: the text [`TEXT`];
//! - `tools-one`: one call of the request's first function tool (default `get_weather`) with
//!   `{"city":"Paris"}`; when the last input item is a `function_call_output`, a text answer
//!   quoting it instead, [`crate::chat_stub::tool_answer`];
//! - `json`: the structured output `{"answer":42}`;
//! - `history`: a text listing the conversation it was sent, [`transcript`] (how a client can see
//!   that earlier turns reached the provider);
//! - `length`: [`TRUNCATED`], cut by the token limit: status `incomplete` with
//!   `incomplete_details.reason: "max_output_tokens"`, streamed up to `response.incomplete`;
//! - `stream-error`: streamed, breaks off after the first text delta with the `error` event live
//!   OpenAI sends (`{"type":"error","sequence_number":N,"error":{...}}`) and ends; whole, `plain`.
//!
//! Every answer echoes the request's fields the way OpenAI does (`previous_response_id`,
//! `instructions`, `tools`, `tool_choice`, `text`, ...), reports usage with
//! `cache_write_tokens`, and streams `logprobs: []` on text events and `name` on
//! `function_call_arguments.done`, with `sequence_number` counting from 0.

use serde_json::{json, Value};

/// The upstream model ids answered here.
pub const MODELS: [&str; 6] = ["plain", "tools-one", "json", "history", "length", "stream-error"];
/// The answer of `plain`.
pub const TEXT: &str = "Hello from the responses stub";
/// The answer of `length`, cut short.
pub const TRUNCATED: &str = "This answer was cut";
/// The message of the `error` event of `stream-error`.
pub const STREAM_ERROR: &str = "The server had an error processing your request. Sorry about that!";
/// The answer of `json`.
pub const JSON: &str = r#"{"answer":42}"#;

/// One output item of an answer.
enum Item {
    Message { id: String, text: String },
    Call { id: String, call_id: String, name: String, arguments: String },
}

impl Item {
    fn done(&self, status: &str) -> Value {
        match self {
            Item::Message { id, text } => json!({"id": id, "type": "message", "status": status,
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
                "role": "assistant"}),
            Item::Call { id, call_id, name, arguments } => json!({"id": id, "type": "function_call",
                "status": status, "arguments": arguments, "call_id": call_id, "name": name}),
        }
    }
}

/// The text of a message's `content` (a string, or parts with `text`).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// The conversation a request carries, as `role:text` entries joined by ` | ` (system and
/// developer messages left out): messages, `function_call:NAME`, `function_call_output:OUTPUT`,
/// and anything the stub cannot resolve as `TYPE:ID` (an `item_reference`), plus
/// `previous_response_id:ID` first when one was forwarded.
pub fn transcript(body: &Value) -> String {
    let mut entries = Vec::new();
    if let Some(previous) = body["previous_response_id"].as_str() {
        entries.push(format!("previous_response_id:{previous}"));
    }
    match &body["input"] {
        Value::String(text) => entries.push(format!("user:{text}")),
        Value::Array(items) => {
            for item in items {
                let kind = item["type"].as_str().unwrap_or("message");
                match kind {
                    "message" => {
                        let role = item["role"].as_str().unwrap_or_default();
                        if role != "system" && role != "developer" {
                            entries.push(format!("{role}:{}", content_text(&item["content"])));
                        }
                    }
                    "function_call" => {
                        entries.push(format!("function_call:{}", item["name"].as_str().unwrap_or_default()))
                    }
                    "function_call_output" => {
                        entries.push(format!("function_call_output:{}", content_text(&item["output"])))
                    }
                    other => entries.push(format!("{other}:{}", item["id"].as_str().unwrap_or_default())),
                }
            }
        }
        _ => {}
    }
    entries.join(" | ")
}

fn items(model: &str, body: &Value, n: u64) -> Vec<Item> {
    let message = |text: String| vec![Item::Message { id: format!("msg_conf{n:04}"), text }];
    let last = body["input"].as_array().and_then(|items| items.last()).cloned().unwrap_or(Value::Null);
    match model {
        "tools-one" if last["type"] == "function_call_output" => {
            message(crate::chat_stub::tool_answer(&content_text(&last["output"])))
        }
        "tools-one" => {
            let tool = body["tools"]
                .as_array()
                .and_then(|tools| tools.iter().find(|t| t["type"] == "function"))
                .and_then(|t| t["name"].as_str())
                .unwrap_or("get_weather");
            vec![Item::Call {
                id: format!("fc_conf{n:04}"),
                call_id: format!("call_conf{n:04}"),
                name: tool.to_owned(),
                arguments: r#"{"city":"Paris"}"#.to_owned(),
            }]
        }
        "json" => message(JSON.to_owned()),
        "length" => message(TRUNCATED.to_owned()),
        "history" => message(transcript(body)),
        _ => message(TEXT.to_owned()),
    }
}

/// The usage every answer reports: 12 input tokens (2 cached), 5 output tokens.
pub fn usage() -> Value {
    json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17})
}

/// A field of the request, or OpenAI's default.
fn echo(body: &Value, field: &str, default: Value) -> Value {
    body.get(field).filter(|v| !v.is_null()).cloned().unwrap_or(default)
}

/// The Response object, echoing the request as OpenAI does.
fn response(id: &str, model: &str, body: &Value, output: Option<&[Item]>) -> Value {
    let done = output.is_some();
    let status = match output {
        None => "in_progress",
        Some(_) if model == "length" => "incomplete",
        Some(_) => "completed",
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": 1_764_000_000,
        "status": status,
        "background": false,
        "completed_at": if status == "completed" { json!(1_764_000_001) } else { Value::Null },
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": echo(body, "instructions", Value::Null),
        "max_output_tokens": echo(body, "max_output_tokens", Value::Null),
        "max_tool_calls": null,
        "model": model,
        "output": output.map(|items| items.iter().map(|i| i.done(item_status(status))).collect::<Vec<_>>()).unwrap_or_default(),
        "parallel_tool_calls": echo(body, "parallel_tool_calls", json!(true)),
        "previous_response_id": echo(body, "previous_response_id", Value::Null),
        "prompt_cache_key": null,
        "reasoning": {"effort": null, "summary": null},
        "safety_identifier": null,
        "service_tier": "default",
        "store": echo(body, "store", json!(true)),
        "temperature": echo(body, "temperature", json!(1.0)),
        "text": echo(body, "text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
        "tool_choice": echo(body, "tool_choice", json!("auto")),
        "tools": echo(body, "tools", json!([])),
        "top_logprobs": 0,
        "top_p": echo(body, "top_p", json!(1.0)),
        "truncation": echo(body, "truncation", json!("disabled")),
        "usage": if done { usage() } else { Value::Null },
        "user": echo(body, "user", Value::Null),
        "metadata": echo(body, "metadata", json!({}))
    })
}

/// The status of the output items of a response of this status.
fn item_status(status: &str) -> &str {
    if status == "incomplete" {
        "incomplete"
    } else {
        "completed"
    }
}

/// The whole answer to a request for one of [`MODELS`].
pub fn answer(model: &str, body: &Value, n: u64) -> Value {
    let output = items(model, body, n);
    response(&format!("resp_conf{n:04}"), model, body, Some(&output))
}

/// The stream events of the same answer, in OpenAI's order.
pub fn events(model: &str, body: &Value, n: u64) -> Vec<Value> {
    let id = format!("resp_conf{n:04}");
    let output = items(model, body, n);
    let created = response(&id, model, body, None);
    let mut events = vec![
        json!({"type": "response.created", "response": created.clone()}),
        json!({"type": "response.in_progress", "response": created}),
    ];
    for (index, item) in output.iter().enumerate() {
        match item {
            Item::Message { id, text } => {
                let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let with = |kind: &str, extra: Value| {
                    let mut event = at.clone();
                    event["type"] = json!(kind);
                    for (key, value) in extra.as_object().into_iter().flatten() {
                        event[key] = value.clone();
                    }
                    event
                };
                events.push(json!({"type": "response.output_item.added", "output_index": index,
                    "item": {"id": id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}}));
                events.push(with("response.content_part.added", json!({"part": part("")})));
                let chars: Vec<char> = text.chars().collect();
                for piece in chars.chunks(6) {
                    let delta: String = piece.iter().collect();
                    events.push(with("response.output_text.delta", json!({"delta": delta, "logprobs": []})));
                }
                events.push(with("response.output_text.done", json!({"text": text, "logprobs": []})));
                events.push(with("response.content_part.done", json!({"part": part(text)})));
            }
            Item::Call { id, call_id, name, arguments } => {
                events.push(json!({"type": "response.output_item.added", "output_index": index,
                    "item": {"id": id, "type": "function_call", "status": "in_progress", "arguments": "",
                        "call_id": call_id, "name": name}}));
                let chars: Vec<char> = arguments.chars().collect();
                for piece in chars.chunks(7) {
                    events.push(json!({"type": "response.function_call_arguments.delta", "item_id": id,
                        "output_index": index, "delta": piece.iter().collect::<String>()}));
                }
                events.push(json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": index, "arguments": arguments, "name": name}));
            }
        }
        let status = if model == "length" { "incomplete" } else { "completed" };
        events.push(json!({"type": "response.output_item.done", "output_index": index, "item": item.done(status)}));
    }
    let terminal = if model == "length" { "response.incomplete" } else { "response.completed" };
    events.push(json!({"type": terminal, "response": response(&id, model, body, Some(&output))}));
    if model == "stream-error" {
        let first_delta = events.iter().position(|e| e["type"] == "response.output_text.delta").unwrap_or(0);
        events.truncate(first_delta + 1);
        events.push(json!({"type": "error", "error": {"type": "server_error", "code": "server_error",
            "message": STREAM_ERROR, "param": null}}));
    }
    for (i, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(i);
    }
    events
}
