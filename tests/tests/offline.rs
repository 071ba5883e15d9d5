//! The built-in offline provider (`echo`) end to end through the gateway: answers computed from
//! the input and billed exactly, paced streaming, schema-valid function calls and structured
//! output, and each fault mode (by model and by request field) handled as a real provider's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh::config::{ProviderApi, ProviderConfig};
use mesh::domain::UsageStatus;
use mesh::sse::SseParser;
use mesh_tests::{Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

fn echo_provider() -> ProviderConfig {
    ProviderConfig {
        name: "echo".to_owned(),
        api: ProviderApi::Echo,
        base_url: String::new(),
        api_key: None,
        api_key_secret_arn: None,
        token_delay: Duration::from_millis(40),
    }
}

async fn start(configure: fn(&mut mesh::config::Config)) -> (Gateway, String) {
    let options =
        GatewayOptions { providers: vec![echo_provider()], configure, ..GatewayOptions::on(StoreKind::Local) };
    let gw = Gateway::start(options).await;
    for (model, upstream) in [
        ("mesh/echo", "echo"),
        ("mesh/echo-rate-limit", "echo:rate_limit"),
        ("mesh/echo-server-error", "echo:server_error"),
        ("mesh/echo-slow", "echo:slow_first_byte"),
    ] {
        gw.put_row(model, "echo", upstream, "0.10", "0.40", None).await;
    }
    let (secret, _) = gw.create_key(|k| k.default_model = Some("mesh/echo".to_owned())).await;
    (gw, secret)
}

/// Reads a stream whole: the events and the times their chunks arrived.
async fn read_stream(response: reqwest::Response) -> (Vec<Value>, Vec<Instant>) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        arrivals.push(Instant::now());
        for event in parser.feed(&chunk.unwrap()).unwrap() {
            events.push(serde_json::from_str::<Value>(&event.data).unwrap());
        }
    }
    (events, arrivals)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_bills_without_a_provider_account() {
    let (gw, secret) = start(|_| {}).await;
    // The seed's example: no model (the key's default), a plain question.
    let response = gw.post(&secret, &json!({"input": "What is the capital of France?"})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "mesh/echo");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], "What is the capital of France?");
    assert_eq!(body["usage"]["input_tokens"], 8);
    assert_eq!(body["usage"]["output_tokens"], 6);
    let record = gw.usage_of(&request_id).await;
    assert_eq!((record.provider.as_str(), record.status), ("echo", UsageStatus::Success));
    // 8 input tokens at $0.10/Mtok + 6 output tokens at $0.40/Mtok, in nano-USD.
    assert_eq!(record.cost.0, 8 * 100 + 6 * 400);

    // max_output_tokens cuts the echo: incomplete, billed for what was produced.
    let body: Value =
        gw.post(&secret, &json!({"input": "one two three four", "max_output_tokens": 2})).await.json().await.unwrap();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["output"][0]["content"][0]["text"], "one two ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_one_token_at_a_time() {
    let (gw, secret) = start(|_| {}).await;
    let response = gw.post(&secret, &json!({"input": "a b c d e f g h", "stream": true})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (events, arrivals) = read_stream(response).await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h"]);
    assert_eq!(kinds(&events).last(), Some(&"response.completed"));
    // Eight tokens 40 ms apart: the chunks arrive spread over time, not in one buffer at the end.
    assert!(arrivals.len() >= 8, "{} chunks", arrivals.len());
    assert!(*arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(7 * 40));
    assert_eq!(gw.usage_of(&request_id).await.tokens.output_tokens, 8);

    // A request can ask for its own pace (none here): same events.
    let response =
        gw.post(&secret, &json!({"input": "a b c", "stream": true, "metadata": {"echo_token_delay_ms": "0"}})).await;
    let (events, _) = read_stream(response).await;
    assert_eq!(kinds(&events).iter().filter(|k| **k == "response.output_text.delta").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_and_structured_output_follow_their_schemas() {
    let (gw, secret) = start(|_| {}).await;
    let tools = json!([{"type": "function", "name": "get_weather", "strict": true, "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": false
    }}]);
    let body: Value =
        gw.post(&secret, &json!({"input": "Weather in Paris?", "tools": tools})).await.json().await.unwrap();
    let call = &body["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")));
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Weather in Paris?", "unit": "celsius"}));
    // The call answered: the next turn is text.
    let input = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "18C and sunny"}
    ]);
    let body: Value = gw.post(&secret, &json!({"input": input, "tools": tools})).await.json().await.unwrap();
    assert_eq!(body["output"][0]["content"][0]["text"], "18C and sunny");

    let format = json!({"format": {"type": "json_schema", "name": "city", "strict": true, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "rank": {"type": "integer", "minimum": 1}},
        "required": ["name", "rank"], "additionalProperties": false
    }}});
    let body: Value = gw.post(&secret, &json!({"input": "Lima", "text": format})).await.json().await.unwrap();
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), json!({"name": "Lima", "rank": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_behave_like_a_real_providers() {
    let (gw, secret) = start(|config| {
        config.upstream.first_byte = Duration::from_millis(500);
        config.routing.backoff_max = Duration::from_millis(50);
    })
    .await;
    // 429 with retry-after: retried on the row, then surfaced with its status and retry-after.
    let response = gw.post(&secret, &json!({"model": "mesh/echo-rate-limit", "input": "x"})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-mesh-routing-attempts"], "1", "a long retry-after moves on at once");
    assert_eq!(response.headers()["retry-after"], "1");
    // A 5xx: retried, then 502 upstream_error.
    let response = gw.post(&secret, &json!({"model": "mesh/echo-server-error", "input": "x"})).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-mesh-routing-attempts"], "2");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_error");
    // A first byte later than the provider timeout: 504 after the retries.
    let response = gw.post(&secret, &json!({"model": "mesh/echo-slow", "input": "x"})).await;
    assert_eq!(response.status(), 504);
    // The same faults by request field, on the ordinary model.
    let response = gw.post(&secret, &json!({"input": "x", "metadata": {"echo_fault": "server_error"}})).await;
    assert_eq!(response.status(), 502);
    // A stream cut after half its tokens ends with response.failed, keeps what was streamed, and
    // is recorded as failed.
    let response =
        gw.post(&secret, &json!({"input": "a b c d", "stream": true, "metadata": {"echo_fault": "stream_cut"}})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (events, _) = read_stream(response).await;
    let kinds = kinds(&events);
    assert_eq!(kinds.iter().filter(|k| **k == "response.output_text.delta").count(), 2, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"response.failed"));
    assert_eq!(kinds.iter().filter(|k| k.starts_with("response.failed")).count(), 1);
    assert_eq!(gw.usage_of(&request_id).await.status, UsageStatus::Failed);
}
