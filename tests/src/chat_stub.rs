//! A stub of an OpenAI-compatible Chat Completions provider (Groq, Together, ...): records every
//! request and answers in the exact wire format of <https://platform.openai.com/docs/api-reference/chat>,
//! whole or streamed (`data:` chunks, the `include_usage` chunk, `[DONE]`). Behaviour is chosen
//! by the upstream model id:
//! - anything else: a plain text answer, [`CHAT_TEXT`];
//! - `tools-one`: one `get_weather` call; when the last message is a `tool` message (the second
//!   turn of a round trip), a text answer quoting that tool output instead, [`tool_answer`];
//! - `tools-two`: two parallel calls, `get_weather` and `get_time`, streamed interleaved;
//! - `json`: the structured output [`CHAT_JSON`];
//! - `length`: [`CHAT_TRUNCATED`] with `finish_reason: "length"`;
//! - `history`: the conversation it was sent, as [`transcript`] lists it;
//! - `stream-error`: streamed, breaks off after the first content chunk with the
//!   `data: {"error": {...}}` line OpenAI-compatible servers send, and ends (no `[DONE]`);
//! - `error-429` (with `retry-after: 7`) and `error-500`: OpenAI error envelopes;
//! - `fixture:NAME`: replays `tests/fixtures/NAME` in 7-byte network chunks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::stub::{fixture_path, StubRequest};

/// The plain text answer.
pub const CHAT_TEXT: &str = "Hello from the chat stub!";
/// The structured output answer.
pub const CHAT_JSON: &str = r#"{"answer":42}"#;
/// The answer cut by the token limit.
pub const CHAT_TRUNCATED: &str = "The answer is cut short because";
/// The call id of `tools-one`.
pub const CALL_ONE: &str = "call_stub_weather_1";
/// The call ids of `tools-two`.
pub const CALLS_TWO: [&str; 2] = ["call_stub_weather_2", "call_stub_time_2"];
/// The usage of every answer: 20 prompt tokens (4 cached), 10 completion tokens (2 reasoning).
pub const USAGE: [u64; 4] = [20, 4, 10, 2];

/// The text `tools-one` answers with once it has the tool's output.
pub fn tool_answer(output: &str) -> String {
    format!("The tool said: {output}")
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<StubRequest>>,
}

/// A running Chat Completions stub.
#[derive(Debug)]
pub struct ChatStub {
    /// Base URL as the OpenAI SDK takes it (`http://127.0.0.1:PORT/v1`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChatStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChatStub {
    pub async fn start() -> ChatStub {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/chat/completions", post(respond)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind chat stub");
        let addr = listener.local_addr().expect("chat stub addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ChatStub { url: format!("http://{addr}/v1"), shared, task }
    }

    pub fn requests(&self) -> Vec<StubRequest> {
        self.shared.requests.lock().expect("chat stub lock").clone()
    }

    pub fn last_request(&self) -> StubRequest {
        self.requests().pop().expect("the chat stub received a request")
    }
}

/// What the stub answers: assistant text or tool calls, and why it stopped.
#[derive(Debug)]
struct Answer {
    text: Option<String>,
    /// (id, name, argument fragments) per call.
    calls: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    finish_reason: &'static str,
}

fn answer_for(model: &str, request: &Value) -> Answer {
    let text = |t: &str, finish_reason| Answer { text: Some(t.to_owned()), calls: Vec::new(), finish_reason };
    let last = request["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    match model {
        "tools-one" if last["role"] == "tool" => {
            text(&tool_answer(last["content"].as_str().unwrap_or_default()), "stop")
        }
        "tools-one" => Answer {
            text: None,
            calls: vec![(CALL_ONE, "get_weather", vec!["{\"ci", "ty\": \"Pa", "ris\"}"])],
            finish_reason: "tool_calls",
        },
        "tools-two" => Answer {
            text: None,
            calls: vec![
                (CALLS_TWO[0], "get_weather", vec!["{\"city\"", ": \"Paris\"}"]),
                (CALLS_TWO[1], "get_time", vec!["{\"timezone\"", ": \"Europe/Paris\"}"]),
            ],
            finish_reason: "tool_calls",
        },
        "json" => text(CHAT_JSON, "stop"),
        "history" => text(&transcript(request), "stop"),
        "length" => text(CHAT_TRUNCATED, "length"),
        _ => text(CHAT_TEXT, "stop"),
    }
}

/// The conversation of a request in the form of [`crate::stub_models::transcript`]: `role:text`
/// entries joined by ` | ` (system and developer messages left out), `function_call:NAME` for
/// an assistant's tool calls and `function_call_output:OUTPUT` for `tool` messages.
pub fn transcript(request: &Value) -> String {
    let text = |content: &Value| match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    };
    let mut entries = Vec::new();
    for message in request["messages"].as_array().into_iter().flatten() {
        match message["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {}
            "tool" => entries.push(format!("function_call_output:{}", text(&message["content"]))),
            role => {
                let content = text(&message["content"]);
                if !content.is_empty() || message["tool_calls"].is_null() {
                    entries.push(format!("{role}:{content}"));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    entries.push(format!("function_call:{}", call["function"]["name"].as_str().unwrap_or_default()));
                }
            }
        }
    }
    entries.join(" | ")
}

fn usage() -> Value {
    let [prompt, cached, completion, reasoning] = USAGE;
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn error(status: StatusCode, error_type: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": error_type, "param": null, "code": code}});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn respond(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().expect("chat stub lock").push(StubRequest { headers, body: body.clone() });
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "error-429" => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "tokens",
                "rate_limit_exceeded",
                "Rate limit reached for model `error-429` on tokens per minute (TPM): Limit 6000, Used 5990, Requested 120.",
            );
            response.headers_mut().insert("retry-after", HeaderValue::from_static("7"));
            return response;
        }
        "error-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "internal_error",
                "Internal Server Error",
            )
        }
        _ => {}
    }
    if let Some(name) = model.strip_prefix("fixture:") {
        let bytes = std::fs::read(fixture_path(name)).unwrap_or_default();
        return sse(bytes.chunks(7).map(Bytes::copy_from_slice).collect());
    }
    let answer = answer_for(&model, &body);
    if body["stream"] == json!(true) && model == "stream-error" {
        let mut frames: Vec<Bytes> = stream_chunks(&model, &answer, false)
            .iter()
            .take(2)
            .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
            .collect();
        let error = json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": null}});
        frames.push(Bytes::from(format!("data: {error}\n\n")));
        return sse(frames);
    }
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let frames = stream_chunks(&model, &answer, include_usage)
            .iter()
            .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
            .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")))
            .collect();
        return sse(frames);
    }
    (
        StatusCode::OK,
        [("content-type", "application/json"), ("x-request-id", "req_chat_stub")],
        completion(&model, &answer).to_string(),
    )
        .into_response()
}

/// The `chat.completion` object.
fn completion(model: &str, answer: &Answer) -> Value {
    let mut message = json!({"role": "assistant", "content": answer.text, "refusal": null, "annotations": []});
    if !answer.calls.is_empty() {
        message["tool_calls"] = answer
            .calls
            .iter()
            .map(|(id, name, pieces)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": pieces.concat()}})
            })
            .collect();
    }
    json!({
        "id": "chatcmpl-stub0001", "object": "chat.completion", "created": 1_741_570_283, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": answer.finish_reason}],
        "usage": usage(), "service_tier": "default", "system_fingerprint": "fp_stub"
    })
}

/// The `chat.completion.chunk` objects of a streamed answer, in OpenAI's order: the role, the
/// content pieces or tool call pieces, the `finish_reason` chunk, then (if asked) the usage chunk.
fn stream_chunks(model: &str, answer: &Answer, include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": "chatcmpl-stub0001", "object": "chat.completion.chunk", "created": 1_741_570_283, "model": model,
            "system_fingerprint": "fp_stub",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks = Vec::new();
    if let Some(text) = &answer.text {
        chunks.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(6) {
            chunks.push(chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null));
        }
    }
    // Each call starts with its id and name; argument fragments then alternate between calls.
    for (index, (id, name, _)) in answer.calls.iter().enumerate() {
        let start =
            json!([{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]);
        let mut delta = json!({"tool_calls": start});
        if index == 0 {
            delta["role"] = json!("assistant");
            delta["content"] = Value::Null;
        }
        chunks.push(chunk(delta, Value::Null));
    }
    let longest = answer.calls.iter().map(|(_, _, pieces)| pieces.len()).max().unwrap_or(0);
    for round in 0..longest {
        for (index, (_, _, pieces)) in answer.calls.iter().enumerate() {
            if let Some(piece) = pieces.get(round) {
                let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
                chunks.push(chunk(delta, Value::Null));
            }
        }
    }
    chunks.push(chunk(json!({}), json!(answer.finish_reason)));
    if include_usage {
        chunks.push(json!({
            "id": "chatcmpl-stub0001", "object": "chat.completion.chunk", "created": 1_741_570_283, "model": model,
            "system_fingerprint": "fp_stub", "choices": [], "usage": usage()
        }));
    }
    chunks
}

/// An event-stream response sending `frames` as separate network chunks.
fn sse(frames: Vec<Bytes>) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for frame in frames {
            if sender.send(Ok(frame)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)))
        .unwrap_or_default()
}
