//! A stub of Google's Gemini API (<https://ai.google.dev/api/generate-content>):
//! `POST /v1beta/models/{model}:generateContent` and `...:streamGenerateContent?alt=sse`. It
//! records every request, checks `x-goog-api-key`, refuses (as Gemini 3 does) a model turn whose
//! first function call lacks a thought signature, and answers in Gemini's wire format.
//!
//! Behaviour is chosen by the model id: `tools-one` (one function call, or a text answer quoting
//! the function response when the last user turn holds one), `tools-two` (two function calls),
//! `json` (the text `{"answer":42}`), `length` (cut by `MAX_TOKENS`), `history` (the conversation
//! it was sent, [`transcript`]), `stream-error` (a stream that breaks off after its first piece
//! with the `data: {"error": {...}}` event Gemini sends), `error-429`, `error-500`;
//! any other model answers [`TEXT`]. Streams send the text in pieces of [`PIECE`] characters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

/// The API key the stub accepts.
pub const API_KEY: &str = "AIza-test";
/// The plain answer.
pub const TEXT: &str = "Hello from Gemini";
/// Characters per streamed text piece.
pub const PIECE: usize = 6;
/// The thought signature on the first function call of `tools-one` and `tools-two`.
pub const SIGNATURE: &str = "CiQBVKhc7mYv2W0hn1sQ8uQ+stub";
/// Token counts of every answer: 12 prompt tokens (4 of them cached), 5 answer tokens and 2
/// thinking tokens.
pub fn usage_metadata() -> Value {
    json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "cachedContentTokenCount": 4,
        "thoughtsTokenCount": 2, "totalTokenCount": 19,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]})
}

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct GeminiRequest {
    /// The model of the path (`gemini-2.5-flash` in `models/gemini-2.5-flash:generateContent`).
    pub model: String,
    /// `generateContent` or `streamGenerateContent`.
    pub method: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<GeminiRequest>>,
}

/// A running stub.
#[derive(Debug)]
pub struct GeminiStub {
    /// Base URL as Google's SDKs take it (`http://127.0.0.1:PORT`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GeminiStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GeminiStub {
    pub async fn start() -> GeminiStub {
        let shared = Arc::new(Shared::default());
        // axum cannot route on the `:` inside the last segment: take the segment whole.
        let app = Router::new().route("/v1beta/models/{target}", post(respond)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gemini stub");
        let addr = listener.local_addr().expect("gemini stub addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GeminiStub { url: format!("http://{addr}"), shared, task }
    }

    pub fn requests(&self) -> Vec<GeminiRequest> {
        self.shared.requests.lock().expect("stub lock").clone()
    }

    pub fn last_request(&self) -> GeminiRequest {
        self.requests().pop().expect("the gemini stub received a request")
    }
}

/// Gemini's error envelope.
fn error(status: StatusCode, google_status: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": google_status}});
    (status, [("content-type", "application/json; charset=UTF-8")], body.to_string()).into_response()
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (model, method) = target.split_once(':').unwrap_or((target.as_str(), ""));
    let (model, method) = (model.to_owned(), method.to_owned());
    shared.requests.lock().expect("stub lock").push(GeminiRequest {
        model: model.clone(),
        method: method.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.");
    }
    let stream = match method.as_str() {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Method `{method}` is not found.")),
    };
    if !body.get("contents").is_some_and(Value::is_array) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        );
    }
    if let Some(name) = unsigned_function_call(&body) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("Function call `{name}` is missing a thought_signature in functionCall parts."),
        );
    }
    match model.as_str() {
        "error-429" => {
            let body = json!({"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
                "status": "RESOURCE_EXHAUSTED", "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}});
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "application/json; charset=UTF-8"), ("retry-after", "7")],
                body.to_string(),
            )
                .into_response();
        }
        "error-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            )
        }
        _ => {}
    }
    let (parts, finish) = script(&model, &body);
    if !stream {
        let answer = json!({
            "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage_metadata(),
            "modelVersion": model,
            "responseId": "stubResponseId01",
        });
        return (StatusCode::OK, [("content-type", "application/json; charset=UTF-8")], answer.to_string())
            .into_response();
    }
    let mut chunks = chunks(&model, parts, finish);
    if model == "stream-error" {
        chunks.truncate(1);
        chunks.push(json!({"error": {"code": 500, "message": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}}));
    }
    if query.as_deref() != Some("alt=sse") {
        // Without `alt=sse` Gemini streams one JSON array of the chunks.
        return (
            StatusCode::OK,
            [("content-type", "application/json; charset=UTF-8")],
            Value::Array(chunks).to_string(),
        )
            .into_response();
    }
    sse(chunks)
}

/// The name of a function call that opens a model turn without a thought signature.
fn unsigned_function_call(body: &Value) -> Option<String> {
    let contents = body.get("contents")?.as_array()?;
    contents.iter().filter(|c| c["role"] == "model").find_map(|content| {
        let parts = content["parts"].as_array()?;
        let first = parts.iter().find(|p| p.get("functionCall").is_some())?;
        first.get("thoughtSignature").is_none().then(|| first["functionCall"]["name"].as_str().unwrap_or("").to_owned())
    })
}

/// The function response in the last user turn, if it holds one.
fn function_response(body: &Value) -> Option<Value> {
    let last = body["contents"].as_array()?.last()?;
    if last["role"] != "user" {
        return None;
    }
    last["parts"].as_array()?.iter().find_map(|p| p.get("functionResponse").cloned())
}

/// The conversation of a request in the form of [`crate::stub_models::transcript`]: `role:text`
/// per turn (`model` turns as `assistant`, their text parts joined), `function_call:NAME` per
/// `functionCall` and `function_call_output:RESULT` per `functionResponse`, joined by ` | `.
pub fn transcript(body: &Value) -> String {
    let mut entries = Vec::new();
    for content in body["contents"].as_array().into_iter().flatten() {
        let role = if content["role"] == "model" { "assistant" } else { content["role"].as_str().unwrap_or("user") };
        let parts = content["parts"].as_array().cloned().unwrap_or_default();
        let text: String =
            parts.iter().filter(|p| p.get("thought").is_none()).filter_map(|p| p["text"].as_str()).collect();
        if !text.is_empty() {
            entries.push(format!("{role}:{text}"));
        }
        for part in &parts {
            if let Some(call) = part.get("functionCall") {
                entries.push(format!("function_call:{}", call["name"].as_str().unwrap_or_default()));
            }
            if let Some(response) = part.get("functionResponse") {
                let result = &response["response"]["result"];
                let output = result.as_str().map_or_else(|| response["response"].to_string(), str::to_owned);
                entries.push(format!("function_call_output:{output}"));
            }
        }
    }
    entries.join(" | ")
}

/// The parts of the answer and its finish reason.
fn script(model: &str, body: &Value) -> (Vec<Value>, &'static str) {
    match model {
        "tools-one" => match function_response(body) {
            Some(response) => (vec![json!({"text": format!("Tool said: {}", response["response"]["result"])})], "STOP"),
            None => (
                vec![
                    json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}),
                ],
                "STOP",
            ),
        },
        "tools-two" => (
            vec![
                json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}),
                json!({"functionCall": {"name": "get_time", "args": {"timezone": "Europe/Paris"}}}),
            ],
            "STOP",
        ),
        "json" => (vec![json!({"text": "{\"answer\":42}"})], "STOP"),
        "history" => (vec![json!({"text": transcript(body)})], "STOP"),
        "length" => (vec![json!({"text": "Once upon a time"})], "MAX_TOKENS"),
        _ => (vec![json!({"text": TEXT})], "STOP"),
    }
}

/// The answer as stream chunks: text in pieces, each function call whole, the finish reason and
/// the full usage on the last chunk (earlier ones carry the prompt count only).
fn chunks(model: &str, parts: Vec<Value>, finish: &str) -> Vec<Value> {
    let mut pieces = Vec::new();
    for part in parts {
        match part.get("text").and_then(Value::as_str) {
            Some(text) => {
                let chars: Vec<char> = text.chars().collect();
                pieces.extend(chars.chunks(PIECE).map(|c| vec![json!({"text": c.iter().collect::<String>()})]));
            }
            None => match pieces.last_mut() {
                Some(last) if last.iter().all(|p: &Value| p.get("functionCall").is_some()) => last.push(part),
                _ => pieces.push(vec![part]),
            },
        }
    }
    let total = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            let usage = if i + 1 == total {
                candidate["finishReason"] = json!(finish);
                usage_metadata()
            } else {
                json!({"promptTokenCount": 12, "totalTokenCount": 12})
            };
            json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "stubResponseId01"})
        })
        .collect()
}

/// Sends the chunks as `data:` events, CRLF-framed as Google does, a few milliseconds apart.
fn sse(chunks: Vec<Value>) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for chunk in chunks {
            if sender.send(Ok(Bytes::from(format!("data: {chunk}\r\n\r\n")))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap_or_default()
}
