//! Per-request CPU cost of the Bedrock path: Converse request translation, SigV4 signing, and
//! decoding a ConverseStream (event-stream frames → deltas → Responses events).
//!
//! Run: `cargo bench -p mesh --bench translate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::SystemTime;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mesh::config::{ProviderApi, ProviderConfig};
use mesh::domain::ModelPrice;
use mesh::providers::assemble::{Assembler, ResponseContext};
use mesh::providers::bedrock::{self, Bedrock, EventStreamParser};
use mesh::providers::Translator;
use serde_json::{json, Map, Value};

fn provider() -> ProviderConfig {
    ProviderConfig {
        name: "bedrock".to_owned(),
        api: ProviderApi::Bedrock,
        base_url: "https://bedrock-runtime.us-east-1.amazonaws.com".to_owned(),
        api_key: None,
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row() -> ModelPrice {
    serde_json::from_value(json!({"model": "anthropic/claude-sonnet-4.6", "provider": "bedrock",
        "upstream_model": "global.anthropic.claude-sonnet-4-6", "max_output_tokens": 64000}))
    .unwrap()
}

/// A ten-turn agent conversation with two tools and a function round trip.
fn body() -> Map<String, Value> {
    let mut input = vec![json!({"role": "user", "content": "Plan a trip to Paris and Rome."})];
    for i in 0..4 {
        input.push(json!({"type": "function_call", "call_id": format!("tooluse_{i}"), "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
        input.push(
            json!({"type": "function_call_output", "call_id": format!("tooluse_{i}"), "output": "18C and sunny"}),
        );
    }
    input.push(json!({"role": "assistant", "content": [{"type": "output_text", "text": "Both look good."}]}));
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    json!({"instructions": "You are a travel agent.", "input": input, "max_output_tokens": 2048,
        "tools": [{"type": "function", "name": "get_weather", "parameters": schema, "strict": true},
                  {"type": "function", "name": "book_hotel", "parameters": schema}]})
    .as_object()
    .cloned()
    .unwrap()
}

fn frame(event: &str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(":event-type", HeaderValue::String(event.to_owned().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
    let mut bytes = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes).unwrap();
    bytes
}

/// A 200-delta text answer as ConverseStream sends it.
fn stream() -> Vec<u8> {
    let mut bytes = frame("messageStart", json!({"role": "assistant"}));
    for _ in 0..200 {
        bytes.extend(frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "word "}, "p": "abcdefgh"}),
        ));
    }
    bytes.extend(frame("contentBlockStop", json!({"contentBlockIndex": 0})));
    bytes.extend(frame("messageStop", json!({"stopReason": "end_turn"})));
    bytes.extend(frame("metadata", json!({"usage": {"inputTokens": 10, "outputTokens": 200, "totalTokens": 210}})));
    bytes
}

fn benches(c: &mut Criterion) {
    let (provider, row, body) = (provider(), row(), body());
    c.bench_function("bedrock/request_translation", |b| {
        b.iter(|| Bedrock::default().request(&provider, &row, &body, true).unwrap());
    });
    let credentials = aws_credential_types::Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "bench");
    let request = Bedrock::default().request(&provider, &row, &body, true).unwrap();
    c.bench_function("bedrock/sigv4_sign", |b| {
        b.iter(|| {
            let mut signed = mesh::providers::UpstreamRequest {
                url: request.url.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
            };
            bedrock::sign(&mut signed, &credentials, "us-east-1", SystemTime::now()).unwrap();
        });
    });
    let bytes = stream();
    let mut group = c.benchmark_group("bedrock/stream_decode");
    group.throughput(Throughput::Elements(200));
    group.bench_function("200_deltas_in_1KiB_chunks", |b| {
        b.iter(|| {
            let mut parser = EventStreamParser::default();
            let mut decoder = Bedrock::default().decoder();
            let mut assembler = Assembler::new(ResponseContext::new("anthropic/claude-sonnet-4.6", &Map::new()));
            let mut events = 0;
            for chunk in bytes.chunks(1024) {
                for event in parser.feed(chunk).unwrap() {
                    for delta in decoder.decode(event).unwrap() {
                        events += assembler.push(delta).len();
                    }
                }
            }
            events
        });
    });
    group.finish();
}

criterion_group!(translate, benches);
criterion_main!(translate);
