//! The `chat` provider API end to end: a Responses client talks to Mesh, Mesh talks Chat
//! Completions to a stub provider (`groq`), whole and streamed: plain text, a two-turn function
//! calling round trip, parallel calls, structured output, truncation and upstream errors, each
//! checked for the exact output, the recorded and priced usage, and what reached the provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use futures_util::StreamExt;
use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::UsageStatus;
use mesh::sse::SseParser;
use mesh_tests::chat_stub::{tool_answer, ChatStub, CALLS_TWO, CALL_ONE, CHAT_JSON, CHAT_TEXT, CHAT_TRUNCATED};
use mesh_tests::{Gateway, GatewayOptions, StubRequest};
use serde_json::{json, Value};

/// Catalog id → the stub's upstream model id (which picks its behaviour).
const MODELS: [(&str, &str); 8] = [
    ("groq/llama-3.3-70b", "llama-3.3-70b-versatile"),
    ("groq/tools-one", "tools-one"),
    ("groq/tools-two", "tools-two"),
    ("groq/json", "json"),
    ("groq/length", "length"),
    ("groq/error-429", "error-429"),
    ("groq/error-500", "error-500"),
    ("groq/replay", "fixture:chat-tool-calls.sse"),
];

/// 20 input tokens at $0.59/Mtok + 10 output tokens at $0.79/Mtok, in nano-USD (no cached price:
/// cached tokens bill at the input price).
const COST: u64 = 20 * 590 + 10 * 790;

struct Setup {
    gw: Gateway,
    chat: ChatStub,
    secret: String,
}

async fn setup() -> Setup {
    let chat = ChatStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "groq".into(),
            api: ProviderApi::Chat,
            base_url: chat.url.clone(),
            api_key: Some(Secret::new("gsk-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    for (model, upstream) in MODELS {
        gw.put_row(model, "groq", upstream, "0.59", "0.79", None).await;
    }
    let (secret, _) = gw.create_key(|_| {}).await;
    Setup { gw, chat, secret }
}

/// What the client got from one call.
struct Outcome {
    status: u16,
    headers: http::HeaderMap,
    request_id: String,
    /// The final Responses object (the terminal event's, when streamed) or the error body.
    body: Value,
    /// Streamed events (empty for whole answers).
    events: Vec<Value>,
}

impl Setup {
    async fn call(&self, body: Value, stream: bool) -> Outcome {
        let mut body = body;
        body["stream"] = json!(stream);
        let response = self.gw.post(&self.secret, &body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
        let is_stream = headers.get("content-type").is_some_and(|v| v == "text/event-stream");
        if !is_stream {
            let body = response.json().await.unwrap();
            return Outcome { status, headers, request_id, body, events: Vec::new() };
        }
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            for event in parser.feed(&chunk.unwrap()).unwrap() {
                let payload: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.event.as_deref(), payload["type"].as_str(), "event name is the payload type");
                events.push(payload);
            }
        }
        check_stream(&events);
        let body = events.last().unwrap()["response"].clone();
        Outcome { status, headers, request_id, body, events }
    }
}

/// The stream invariants the SDKs rely on, and that the deltas add up to the final output.
fn check_stream(events: &[Value]) {
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], ["response.created", "response.in_progress"], "{kinds:?}");
    assert!(
        matches!(*kinds.last().unwrap(), "response.completed" | "response.incomplete" | "response.failed"),
        "{kinds:?}"
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i, "sequence numbers count up from 0");
    }
    let mut added = HashMap::new();
    let mut text: HashMap<String, String> = HashMap::new();
    let mut arguments: HashMap<String, String> = HashMap::new();
    for event in events {
        if event["type"] == "response.output_item.added" {
            added.insert(event["item"]["id"].as_str().unwrap().to_owned(), event["output_index"].clone());
        }
        if let Some(id) = event.get("item_id").and_then(Value::as_str) {
            assert_eq!(added.get(id), Some(&event["output_index"]), "delta after its item was added: {event}");
            let delta = event["delta"].as_str().unwrap_or_default();
            match event["type"].as_str().unwrap() {
                "response.output_text.delta" => text.entry(id.to_owned()).or_default().push_str(delta),
                "response.function_call_arguments.delta" => arguments.entry(id.to_owned()).or_default().push_str(delta),
                _ => {}
            }
        }
    }
    let last = &events.last().unwrap()["response"];
    for item in last["output"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        match item["type"].as_str().unwrap() {
            "message" => assert_eq!(text.get(id).map(String::as_str), item["content"][0]["text"].as_str()),
            "function_call" => assert_eq!(arguments.get(id).map(String::as_str), item["arguments"].as_str()),
            _ => {}
        }
    }
}

/// Output items without their generated ids.
fn output(response: &Value) -> Value {
    let mut items = response["output"].as_array().cloned().unwrap_or_default();
    for item in &mut items {
        let id = item.as_object_mut().unwrap().remove("id").unwrap();
        let prefix = if item["type"] == "message" { "msg_" } else { "fc_" };
        assert!(id.as_str().unwrap().starts_with(prefix), "{id}");
    }
    Value::Array(items)
}

fn text_output(text: &str) -> Value {
    json!([{"type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}])
}

fn function_call(call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"})
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
            "additionalProperties": false}, "strict": true})
}

fn chat_weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
            "additionalProperties": false}, "strict": true}})
}

/// The usage object of every stub answer, and its usage record: recorded, priced, settled.
async fn check_usage(setup: &Setup, outcome: &Outcome, model: &str, status: UsageStatus) {
    assert_eq!(
        outcome.body["usage"],
        json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 30})
    );
    let record = setup.gw.usage_of(&outcome.request_id).await;
    assert_eq!((record.model.as_str(), record.provider.as_str()), (model, "groq"));
    let tokens = record.tokens;
    assert_eq!(
        (tokens.input_tokens, tokens.cached_input_tokens, tokens.output_tokens, tokens.reasoning_tokens),
        (20, 4, 10, 2)
    );
    assert_eq!(record.cost.0, COST);
    assert_eq!(record.status, status);
}

/// What every Chat request carries: the credential, the upstream model, the stream flags.
fn check_sent(sent: &StubRequest, upstream: &str, stream: bool) {
    assert_eq!(sent.headers["authorization"], "Bearer gsk-test");
    assert_eq!(sent.body["model"], upstream);
    assert!(sent.body.get("user").is_none(), "Mesh invents no user");
    assert!(sent.body.get("safety_identifier").is_none(), "no tag a compatible server might refuse");
    if stream {
        assert_eq!(sent.body["stream"], true);
        assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    } else {
        assert!(sent.body.get("stream").is_none() && sent.body.get("stream_options").is_none(), "{}", sent.body);
    }
    for responses_only in ["input", "instructions", "max_output_tokens", "text", "store", "metadata", "reasoning"] {
        assert!(sent.body.get(responses_only).is_none(), "`{responses_only}` is not a Chat field: {}", sent.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text() {
    let s = setup().await;
    for stream in [false, true] {
        let outcome = s
            .call(
                json!({"model": "groq/llama-3.3-70b", "input": "Say hello", "instructions": "Be brief.",
                    "temperature": 0.3, "metadata": {"team": "a"}}),
                stream,
            )
            .await;
        assert_eq!(outcome.status, 200, "{}", outcome.body);
        assert_eq!(outcome.body["status"], "completed");
        assert_eq!(outcome.body["model"], "groq/llama-3.3-70b");
        assert_eq!(outcome.body["instructions"], "Be brief.");
        assert_eq!(output(&outcome.body), text_output(CHAT_TEXT));
        if stream {
            assert_eq!(outcome.events.last().unwrap()["type"], "response.completed");
        }
        check_usage(&s, &outcome, "groq/llama-3.3-70b", UsageStatus::Success).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "llama-3.3-70b-versatile", stream);
        assert_eq!(
            sent.body["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])
        );
        assert_eq!(sent.body["temperature"], 0.3);
    }
    assert_eq!(s.chat.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calling_round_trip() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "What is the weather in Paris?"});
        let first =
            s.call(json!({"model": "groq/tools-one", "input": [question], "tools": [weather_tool()]}), stream).await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["status"], "completed");
        let call = function_call(CALL_ONE, "get_weather", "{\"city\": \"Paris\"}");
        assert_eq!(output(&first.body), json!([call]));
        check_usage(&s, &first, "groq/tools-one", UsageStatus::Success).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "tools-one", stream);
        assert_eq!(sent.body["tools"], json!([chat_weather_tool()]));
        assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "What is the weather in Paris?"}]));

        // Second turn: the call as the client got it (with its `fc_` id) and its output.
        let returned_call = first.body["output"][0].clone();
        let output_item = json!({"type": "function_call_output", "call_id": CALL_ONE, "output": "18C and sunny"});
        let second = s
            .call(
                json!({"model": "groq/tools-one", "input": [question, returned_call, output_item],
                    "tools": [weather_tool()]}),
                stream,
            )
            .await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(output(&second.body), text_output(&tool_answer("18C and sunny")));
        check_usage(&s, &second, "groq/tools-one", UsageStatus::Success).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "tools-one", stream);
        assert_eq!(
            sent.body["messages"],
            json!([
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": CALL_ONE, "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": CALL_ONE, "content": "18C and sunny"}
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parallel_tool_calls() {
    let s = setup().await;
    let time_tool = json!({"type": "function", "name": "get_time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}});
    for stream in [false, true] {
        let outcome = s
            .call(
                json!({"model": "groq/tools-two", "input": "Weather and time in Paris?",
                    "tools": [weather_tool(), time_tool], "tool_choice": "required", "parallel_tool_calls": true}),
                stream,
            )
            .await;
        assert_eq!(outcome.status, 200, "{}", outcome.body);
        assert_eq!(outcome.body["status"], "completed");
        assert_eq!(
            output(&outcome.body),
            json!([
                function_call(CALLS_TWO[0], "get_weather", "{\"city\": \"Paris\"}"),
                function_call(CALLS_TWO[1], "get_time", "{\"timezone\": \"Europe/Paris\"}")
            ])
        );
        check_usage(&s, &outcome, "groq/tools-two", UsageStatus::Success).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "tools-two", stream);
        assert_eq!(sent.body["tool_choice"], "required");
        assert_eq!(sent.body["parallel_tool_calls"], true);
        assert_eq!(
            sent.body["tools"][1],
            json!({"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output() {
    let s = setup().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
        "additionalProperties": false});
    for stream in [false, true] {
        let outcome = s
            .call(
                json!({"model": "groq/json", "input": "What is six times seven?",
                    "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}}}),
                stream,
            )
            .await;
        assert_eq!(outcome.status, 200, "{}", outcome.body);
        assert_eq!(output(&outcome.body), text_output(CHAT_JSON));
        assert_eq!(outcome.body["text"]["format"]["name"], "answer", "the format is echoed back");
        check_usage(&s, &outcome, "groq/json", UsageStatus::Success).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "json", stream);
        assert_eq!(
            sent.body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_truncation() {
    let s = setup().await;
    for stream in [false, true] {
        let outcome = s
            .call(json!({"model": "groq/length", "input": "Tell me a long story", "max_output_tokens": 10}), stream)
            .await;
        assert_eq!(outcome.status, 200, "{}", outcome.body);
        assert_eq!(outcome.body["status"], "incomplete");
        assert_eq!(outcome.body["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(outcome.body["max_output_tokens"], 10);
        // The message the limit cut is kept, marked incomplete.
        let mut cut = text_output(CHAT_TRUNCATED);
        cut[0]["status"] = json!("incomplete");
        assert_eq!(output(&outcome.body), cut);
        if stream {
            assert_eq!(outcome.events.last().unwrap()["type"], "response.incomplete");
        }
        check_usage(&s, &outcome, "groq/length", UsageStatus::Incomplete).await;
        let sent = s.chat.last_request();
        check_sent(&sent, "length", stream);
        assert_eq!(sent.body["max_tokens"], 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors() {
    let s = setup().await;
    for stream in [false, true] {
        let limited = s.call(json!({"model": "groq/error-429", "input": "hi"}), stream).await;
        assert_eq!(limited.status, 429, "{}", limited.body);
        assert_eq!(limited.headers["retry-after"], "7");
        assert_eq!(limited.headers["content-type"], "application/json", "refused before the first byte");
        let error = &limited.body["error"];
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert_eq!(error["type"], "tokens");
        assert_eq!(error["retry_after_seconds"], 7);
        assert!(error["message"].as_str().unwrap().starts_with("Rate limit reached for model `error-429`"));
        assert_eq!(limited.body["request_id"], limited.request_id);

        let failed = s.call(json!({"model": "groq/error-500", "input": "hi"}), stream).await;
        assert_eq!(failed.status, 502, "{}", failed.body);
        assert_eq!(failed.body["error"]["code"], "upstream_error");
        assert_eq!(failed.body["error"]["type"], "api_error");
        assert!(!failed.body.to_string().contains("Internal Server Error"), "provider internals stay inside");
        let record = s.gw.usage_of(&failed.request_id).await;
        assert_eq!(record.status, UsageStatus::Error);
        assert_eq!(record.cost.0, 0, "nothing served, nothing charged");
        check_sent(&s.chat.last_request(), "error-500", stream);
    }
    // Per mode: the 429 asks for a 7 s pause, longer than the retry budget, so it is not retried;
    // the 500 is retried once on the same row (there is no other row to fail over to).
    assert_eq!(s.chat.requests().len(), 6, "retries follow the routing policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tools_are_refused_before_the_provider() {
    let s = setup().await;
    let outcome = s
        .call(
            json!({"model": "groq/llama-3.3-70b", "input": "news?", "tools": [{"type": "web_search_preview"}]}),
            false,
        )
        .await;
    assert_eq!(outcome.status, 400);
    assert_eq!(outcome.body["error"]["code"], "unsupported_tool");
    assert_eq!(outcome.body["error"]["param"], "tools[0].type");
    assert!(outcome.body["error"]["message"].as_str().unwrap().contains("`groq`"));
    let outcome = s.call(json!({"model": "groq/llama-3.3-70b", "input": "hi", "background": true}), false).await;
    assert_eq!(outcome.status, 400);
    assert_eq!(outcome.body["error"]["code"], "unsupported_parameter");
    assert_eq!(outcome.body["error"]["param"], "background");
    assert!(s.chat.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_stream_replayed_in_small_chunks() {
    let s = setup().await;
    let outcome = s.call(json!({"model": "groq/replay", "input": "weather in Paris and Bogotá?"}), true).await;
    assert_eq!(outcome.status, 200);
    assert_eq!(
        output(&outcome.body),
        json!([
            function_call("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", "{\"location\": \"Paris, France\"}"),
            function_call("call_ABCDEFGHIJKLMNOPQRSTUVWX", "get_weather", "{\"location\": \"Bogot\u{e1}, Colombia\"}")
        ])
    );
    let record = s.gw.usage_of(&outcome.request_id).await;
    // 82 input (64 cached, billed at the input price) × 590 + 49 output × 790 nano-USD.
    assert_eq!(
        (record.tokens.input_tokens, record.tokens.cached_input_tokens, record.tokens.output_tokens),
        (82, 64, 49)
    );
    assert_eq!(record.cost.0, 82 * 590 + 49 * 790);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk() {
    let s = setup().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/chat_scenarios.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            format!("{}/v1", s.gw.url),
            s.secret.clone(),
            "groq/llama-3.3-70b".to_owned(),
            CHAT_TEXT.to_owned(),
            "groq/tools-one".to_owned(),
            CALL_ONE.to_owned(),
            tool_answer("18C and sunny"),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("chat-scenarios-ok"), "{stdout}");
    // Plain text ×3 and the round trip's two turns ×2 reached the provider.
    assert_eq!(s.chat.requests().len(), 7);
}
