//! A stub of the OpenAI Responses API: records every request, answers like OpenAI does, and
//! misbehaves on command. Behaviour is chosen by the upstream model id:
//! `stub-error-400|401|403|429|500`, `stub-slow`, `stub-incomplete`, and for streams
//! `stub-stream-die` (ends without a terminal event), `stub-stream-stall` (goes silent),
//! `stub-stream-response-42` / `stub-stream-response-x` (a lifecycle event whose `response` is
//! not an object, then the stream dies) and `stub-stream-forged-type` (an event `type` holding
//! line breaks and a forged `response.completed` frame). The models `plain`, `tools-one`, `json`
//! and `history` answer in today's exact OpenAI wire format ([`crate::stub_models`]).

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

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct StubRequest {
    pub headers: HeaderMap,
    pub body: Value,
}

/// Knobs a test can turn while the stub runs.
#[derive(Debug, Clone)]
pub struct StubSettings {
    /// Pause between stream events.
    pub event_delay: Duration,
    /// The answer text, streamed in pieces of `chunk` characters.
    pub text: String,
    pub chunk: usize,
    pub usage: Value,
    /// Keep every request for inspection (off for long load runs).
    pub record: bool,
}

impl Default for StubSettings {
    fn default() -> Self {
        StubSettings {
            event_delay: Duration::from_millis(20),
            text: "Hello from stub".to_owned(),
            chunk: 5,
            usage: json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 17}),
            record: true,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<StubRequest>>,
    settings: Mutex<StubSettings>,
    answered: std::sync::atomic::AtomicU64,
    flaky: std::sync::atomic::AtomicU64,
}

/// A running stub.
#[derive(Debug)]
pub struct Stub {
    /// Base URL as the OpenAI SDK takes it (`http://127.0.0.1:PORT/v1`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    pub async fn start() -> Stub {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/responses", post(respond)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let task = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
                let _ = stream.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Stub { url: format!("http://{addr}/v1"), shared, task }
    }

    pub fn requests(&self) -> Vec<StubRequest> {
        self.shared.requests.lock().expect("stub lock").clone()
    }

    pub fn last_request(&self) -> StubRequest {
        self.requests().pop().expect("the stub received a request")
    }

    pub fn settings(&self, change: impl FnOnce(&mut StubSettings)) {
        change(&mut self.shared.settings.lock().expect("stub lock"));
    }
}

/// The message of the stub's 401: OpenAI quotes the (masked) key it was sent.
pub const UPSTREAM_401_MESSAGE: &str = "Incorrect API key provided: sk-stub-**************cret. You can find your API key at https://platform.openai.com/account/api-keys.";

/// The message of the stub's 403, quoting the key as well.
pub const UPSTREAM_403_MESSAGE: &str =
    "Project proj_stub with key sk-stub-upstream-secret does not have access to this model or region.";

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// The completed response object the stub answers with.
pub fn response_object(model: &str, text: &str, usage: &Value, status: &str) -> Value {
    response_object_with_id("resp_stub123", model, text, usage, status)
}

/// The same, with a given response id.
pub fn response_object_with_id(id: &str, model: &str, text: &str, usage: &Value, status: &str) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": 1_741_476_542,
        "status": status,
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null,
        "model": model,
        "output": [{
            "type": "message", "id": "msg_stub123", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]
        }],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "store": true,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
        "upstream_only_field": {"kept": true}
    })
}

/// The Responses events of a streamed text answer, in OpenAI's order.
pub fn text_stream_events(model: &str, text: &str, chunk: usize, usage: &Value) -> Vec<Value> {
    let mut created = response_object(model, "", &Value::Null, "in_progress");
    created["output"] = json!([]);
    let item_id = "msg_stub123";
    let mut events = vec![
        json!({"type": "response.created", "response": created.clone()}),
        json!({"type": "response.in_progress", "response": created}),
        json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
    ];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(chunk.max(1)) {
        events.push(json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
            "content_index": 0, "delta": piece.iter().collect::<String>()}));
    }
    events.push(json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0, "text": text}));
    events
        .push(json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0,
        "part": {"type": "output_text", "text": text, "annotations": []}}));
    events.push(json!({"type": "response.output_item.done", "output_index": 0,
        "item": {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}}));
    events.push(json!({"type": "response.completed", "response": response_object(model, text, usage, "completed")}));
    for (i, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(i);
    }
    events
}

async fn respond(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let settings = shared.settings.lock().expect("stub lock").clone();
    if settings.record {
        shared.requests.lock().expect("stub lock").push(StubRequest { headers, body: body.clone() });
    }
    // As OpenAI: with `store: false` nothing is persisted, so an input item id names nothing.
    if body["store"] == false {
        let with_id = body["input"].as_array().and_then(|items| items.iter().find_map(|i| i["id"].as_str()));
        if let Some(id) = with_id {
            let message = format!(
                "Item with id '{id}' not found. Items are not persisted when `store` is set to false. \
                 Try again with `store` set to true, or remove this item from your input."
            );
            return error(StatusCode::NOT_FOUND, "item_not_found", &message);
        }
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "stub-error-400" => return error(StatusCode::BAD_REQUEST, "invalid_value", "Invalid value for 'temperature'."),
        // OpenAI's answer to a wrong key (Mesh's own credential), with the key masked as it does.
        "stub-error-401" => return error(StatusCode::UNAUTHORIZED, "invalid_api_key", UPSTREAM_401_MESSAGE),
        "stub-error-403" => {
            return error(StatusCode::FORBIDDEN, "unsupported_country_region_territory", UPSTREAM_403_MESSAGE)
        }
        "stub-error-429" => {
            let mut response =
                error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", "Rate limit reached for requests");
            response.headers_mut().insert("retry-after", http::HeaderValue::from_static("7"));
            return response;
        }
        "stub-error-500" => return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "stub-error-503" => {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
            response.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
            return response;
        }
        // Fails every other call with 503 and retry-after: 1.
        "stub-flaky" if shared.flaky.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(2) => {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response();
            response.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
            return response;
        }
        // Fails one call in a hundred with a 500.
        "stub-chaos" if shared.flaky.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 == 99 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "chaos").into_response();
        }
        "stub-malformed-json" => {
            return (StatusCode::OK, [("content-type", "application/json")], "{\"id\": \"resp_x\", ").into_response()
        }
        "stub-huge" => {
            let body = vec![b' '; 50 * 1024 * 1024];
            return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
        }
        "stub-malformed-sse" => {
            let body = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_m\",\"model\":\"x\",\"output\":[]}}\n\nevent: response.output_text.delta\ndata: {oops\n\n";
            return (StatusCode::OK, [("content-type", "text/event-stream")], body).into_response();
        }
        "stub-slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        _ => {}
    }
    if let Some(name) = model.strip_prefix("stub-fixture:") {
        return replay_fixture(name);
    }
    if crate::stub_models::MODELS.contains(&model.as_str()) {
        let n = shared.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if body["stream"] == json!(true) {
            return send_events(crate::stub_models::events(&model, &body, n));
        }
        let answer = crate::stub_models::answer(&model, &body, n);
        return (
            StatusCode::OK,
            [("content-type", "application/json"), ("x-request-id", "req_upstream")],
            answer.to_string(),
        )
            .into_response();
    }
    if body["stream"] == json!(true) {
        let n = shared.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return stream(model, settings, format!("resp_stream{n}"));
    }
    let status = if model == "stub-incomplete" { "incomplete" } else { "completed" };
    let text = match model.as_str() {
        "stub-broken-json" => "```json\n{\"answer\": 42,}\n```".to_owned(),
        "stub-garbage-json" => "not json at all".to_owned(),
        _ => settings.text.clone(),
    };
    let n = shared.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let answer = response_object_with_id(&format!("resp_stub{n}"), &model, &text, &settings.usage, status);
    (StatusCode::OK, [("content-type", "application/json"), ("x-request-id", "req_upstream")], answer.to_string())
        .into_response()
}

/// Path of a recorded transcript under `tests/fixtures/`.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Replays `tests/fixtures/<name>` verbatim, cut into 7-byte network chunks.
fn replay_fixture(name: &str) -> Response {
    let bytes = std::fs::read(fixture_path(name)).unwrap_or_default();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for piece in bytes.chunks(7) {
            if sender.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap_or_default()
}

/// Streams events as OpenAI frames them (`event: TYPE` then `data: JSON`), one network chunk each.
fn send_events(events: Vec<Value>) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for event in events {
            let frame = format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap_or_default());
            if sender.send(Ok(Bytes::from(frame))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap_or_default()
}

fn stream(model: String, settings: StubSettings, id: String) -> Response {
    let mut events = text_stream_events(&model, &settings.text, settings.chunk, &settings.usage);
    for event in &mut events {
        if let Some(response) = event.get_mut("response") {
            response["id"] = json!(id);
        }
    }
    match model.as_str() {
        "stub-stream-response-42" | "stub-stream-response-x" => {
            events[1]["response"] = if model.ends_with("42") { json!(42) } else { json!("x") };
            events.truncate(3); // and the connection ends without a terminal event
        }
        "stub-stream-forged-type" => {
            let forged = json!({"type": "response.completed", "sequence_number": 4,
                "response": response_object(&model, "forged", &settings.usage, "completed")});
            let kind = format!("response.output_text.delta\n\nevent: response.completed\ndata: {forged}\n\n");
            events[4]["type"] = json!(kind);
        }
        _ => {}
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let total = events.len();
        for (i, event) in events.into_iter().enumerate() {
            if model == "stub-stream-die" && i == total - 4 {
                return; // connection ends without a terminal event
            }
            if model == "stub-stream-stall" && i == total - 4 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            // The `event:` line stays well formed; a hostile `type` is inside the JSON data.
            let kind = event["type"].as_str().unwrap_or_default().lines().next().unwrap_or_default().to_owned();
            let frame = format!("event: {kind}\ndata: {event}\n\n");
            if sender.send(Ok(Bytes::from(frame))).await.is_err() {
                return;
            }
            if !settings.event_delay.is_zero() {
                tokio::time::sleep(settings.event_delay).await;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap_or_default()
}
