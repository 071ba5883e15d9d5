//! Streaming through the standalone front door: framing and order, no buffering, model
//! rewriting, transcript replay, and accounting when the client leaves or the provider breaks
//! or misbehaves (events that are not what they claim, forged frames).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh::domain::UsageStatus;
use mesh::sse::{SseEvent, SseParser};
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

/// Reads a whole SSE response: each event with the time it arrived.
async fn read_events(response: reqwest::Response) -> Vec<(Instant, SseEvent)> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        let now = Instant::now();
        events.extend(parser.feed(&chunk).unwrap().into_iter().map(|e| (now, e)));
    }
    events
}

fn payloads(events: &[(Instant, SseEvent)]) -> Vec<Value> {
    events.iter().map(|(_, e)| serde_json::from_str(&e.data).unwrap()).collect()
}

async fn framing_order_and_accounting(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o-2024-08-06", "2.50", "10.00", Some("1.25")).await;
    let (secret, key) = gw.create_key(|k| k.rpm = Some(100)).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "100", "limit headers on streams too");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = read_events(response).await;
    let data = payloads(&events);
    let kinds: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(kinds.contains(&"response.output_text.delta"));
    for ((_, event), payload) in events.iter().zip(&data) {
        assert_eq!(event.event.as_deref(), payload["type"].as_str(), "event name equals the payload type");
        assert_ne!(event.data, "[DONE]");
    }
    let sequence: Vec<u64> = data.iter().map(|d| d["sequence_number"].as_u64().unwrap()).collect();
    assert!(sequence.windows(2).all(|w| w[0] < w[1]), "increasing sequence numbers: {sequence:?}");
    assert_eq!(data[0]["response"]["model"], "openai/gpt-4o");
    assert_eq!(data.last().unwrap()["response"]["model"], "openai/gpt-4o");
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from stub");
    assert_eq!(gw.stub.last_request().body["stream"], true);

    let record = gw.usage_of(&request_id).await;
    assert_eq!(record.status, UsageStatus::Success);
    assert_eq!(record.cost.0, 77_500, "priced exactly as the non-streaming path");
    gw.settled().await;
    assert_eq!(gw.key(&key.id).await.spent.0, 77_500);
}
on_both_stores!(framing_on, framing_order_and_accounting);

#[tokio::test]
async fn events_arrive_as_the_provider_sends_them() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let gap = Duration::from_millis(150);
    gw.stub.settings(|s| s.event_delay = gap);
    let sent = Instant::now();
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})).await;
    let events = read_events(response).await;
    let first = events[0].0.duration_since(sent);
    let last = events.last().unwrap().0.duration_since(sent);
    // The stub spends (n-1) gaps producing the stream: a buffering gateway would deliver the first
    // event only after all of them. Delivered unbuffered, the first event precedes the last by
    // nearly that whole time, and every event arrives in its own chunk.
    let producing = gap * u32::try_from(events.len() - 1).unwrap();
    assert!(last - first >= producing - gap, "first at {first:?}, last at {last:?}, producing took {producing:?}");
    let distinct: std::collections::BTreeSet<Instant> = events.iter().map(|(t, _)| *t).collect();
    assert_eq!(distinct.len(), events.len(), "each event arrived on its own");
}

#[tokio::test]
async fn transcript_replay_with_tool_calls() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "stub-fixture:responses-function-call.sse", "2.50", "10.00", Some("1.25")).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "weather?", "stream": true})).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let got = payloads(&read_events(response).await);

    let fixture = std::fs::read(mesh_tests::stub::fixture_path("responses-function-call.sse")).unwrap();
    let mut parser = SseParser::new();
    let mut expected: Vec<Value> =
        parser.feed(&fixture).unwrap().into_iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    // Mesh shows its own response id, the same in every event.
    let ours = got[0]["response"]["id"].clone();
    assert!(ours.as_str().unwrap().starts_with("resp_01"), "{ours}");
    // Item ids are Mesh's too: each provider id becomes one id that names the response.
    let mut mine: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    let mut same_item = |upstream: &mut Value, got: &Value| {
        let Some(upstream_id) = upstream.as_str().map(str::to_owned) else { return };
        let got_id = got.as_str().unwrap();
        assert_eq!(mesh::ids::response_of_item(got_id).as_deref(), ours.as_str(), "{got_id} names its response");
        assert_eq!(mine.entry(upstream_id).or_insert_with(|| got.clone()), got, "one Mesh id per provider item");
        *upstream = got.clone();
    };
    assert_eq!(got.len(), expected.len());
    for (event, got) in expected.iter_mut().zip(&got) {
        if let Some(response) = event.get_mut("response") {
            response["model"] = json!("openai/gpt-4o");
            response["id"] = ours.clone();
            response["previous_response_id"] = Value::Null;
            response["store"] = json!(true);
            if let Some(output) = response["output"].as_array_mut() {
                for (i, item) in output.iter_mut().enumerate() {
                    same_item(&mut item["id"], &got["response"]["output"][i]["id"]);
                }
            }
        }
        if event.get("item").is_some() {
            same_item(&mut event["item"]["id"], &got["item"]["id"]);
        }
        if event.get("item_id").is_some() {
            same_item(&mut event["item_id"], &got["item_id"]);
        }
    }
    assert_eq!(got, expected, "every event reaches the client unchanged but for the fields and ids Mesh owns");
    let record = gw.usage_of(&request_id).await;
    // 163 × 2.50 + 128 × 1.25 + 23 × 10 = 407.5 + 160 + 230 = 797.5 → 797 500 nano-USD.
    assert_eq!(
        (record.tokens.input_tokens, record.tokens.cached_input_tokens, record.tokens.output_tokens),
        (291, 128, 23)
    );
    assert_eq!(record.cost.0, 797_500);
}

#[tokio::test]
async fn client_disconnect_still_charges_the_real_usage() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    gw.stub.settings(|s| s.event_delay = Duration::from_millis(40));
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut body = response.bytes_stream();
    let _first = body.next().await.unwrap().unwrap();
    drop(body); // the client leaves after the first chunk
    let record = gw.usage_of(&request_id).await;
    assert_eq!(record.status, UsageStatus::ClientDisconnected);
    assert_eq!(record.tokens.output_tokens, 5, "the gateway read on to the provider's usage");
    assert_eq!(record.cost.0, 77_500);
    gw.settled().await;
    assert_eq!(gw.key(&key.id).await.spent.0, 77_500, "charged once");
    assert_eq!(gw.usage_of_key(&key.id).await.len(), 1);
}

async fn failure_case(upstream: &str) -> (Vec<Value>, mesh::domain::UsageRecord) {
    let gw = Gateway::start(GatewayOptions {
        configure: |c| c.upstream.stream_idle = Duration::from_millis(300),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", upstream, "2.50", "10.00", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let data = payloads(&read_events(response).await);
    (data, gw.usage_of(&request_id).await)
}

#[tokio::test]
async fn provider_dying_mid_stream_ends_with_response_failed() {
    let (data, record) = failure_case("stub-stream-die").await;
    let last = data.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["model"], "openai/gpt-4o");
    let sequence: Vec<u64> = data.iter().map(|d| d["sequence_number"].as_u64().unwrap()).collect();
    assert!(sequence.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(record.status, UsageStatus::Failed);
}

#[tokio::test]
async fn stalled_provider_hits_the_idle_timeout() {
    let started = Instant::now();
    let (data, record) = failure_case("stub-stream-stall").await;
    assert_eq!(data.last().unwrap()["type"], "response.failed");
    assert!(data.last().unwrap()["response"]["error"]["message"].as_str().unwrap().contains("nothing"));
    assert!(started.elapsed() < Duration::from_secs(30), "the stall did not hold the stream open");
    assert_eq!(record.status, UsageStatus::Failed);
}

#[tokio::test]
async fn errors_before_the_first_byte_are_json() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("t/e500", "stub-error-500", "1", "1", None).await;
    gw.put_price("t/e400", "stub-error-400", "1", "1", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    for (body, status) in [
        (json!({"model": "t/e500", "input": "x", "stream": true}), 502),
        (json!({"model": "t/e400", "input": "x", "stream": true}), 400),
        (json!({"model": "t/unknown", "input": "x", "stream": true}), 404),
    ] {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
    }
    let response = gw.post("rsk_bad", &json!({"model": "t/e500", "input": "x", "stream": true})).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
}

/// Whether an event ends a response.
fn is_terminal(payload: &Value) -> bool {
    ["response.completed", "response.incomplete", "response.failed"].contains(&payload["type"].as_str().unwrap_or(""))
}

/// A provider lifecycle event whose `response` is not an object, then a dead connection: the
/// client still gets exactly one terminal `response.failed`, and the request is settled (a failed
/// usage record, the hard-cap reservation released) rather than left held.
async fn response_that_is_not_an_object(upstream: &str) {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", upstream, "2.50", "10.00", None).await;
    let (secret, key) = gw
        .create_key(|k| {
            k.spend_cap = Some(mesh::money::Nanos(1_000_000));
            k.spend_cap_mode = mesh::domain::CapMode::Hard;
        })
        .await;
    let body = json!({"model": "openai/gpt-4o", "input": "hi", "stream": true, "max_output_tokens": 5});
    let response = gw.post(&secret, &body).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let data = payloads(&read_events(response).await);
    assert_eq!(data.iter().filter(|d| is_terminal(d)).count(), 1, "one terminal event: {data:?}");
    let last = data.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert_eq!(last["response"]["id"], data[0]["response"]["id"], "the response the client was told about");
    assert!(data.iter().all(|d| d.get("response").is_none_or(Value::is_object)), "no non-object response forwarded");
    let record = gw.usage_of(&request_id).await;
    assert_eq!(record.status, UsageStatus::Failed);
    gw.settled().await;
    let key = gw.key(&key.id).await;
    assert_eq!(key.reserved.0, 0, "the reservation was released");
    assert_eq!(key.spent.0, 0);
}

#[tokio::test]
async fn a_response_of_42_fails_the_stream_and_settles() {
    response_that_is_not_an_object("stub-stream-response-42").await;
}

#[tokio::test]
async fn a_response_that_is_a_string_fails_the_stream_and_settles() {
    response_that_is_not_an_object("stub-stream-response-x").await;
}

/// A provider event `type` with line breaks in it would end the `event:` line and let the rest
/// forge frames (a fake `response.completed`): the stream fails instead, and nothing forged, nor
/// the provider's later real `response.completed`, reaches the client.
#[tokio::test]
async fn an_event_type_with_line_breaks_cannot_forge_frames() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "stub-stream-forged-type", "2.50", "10.00", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(!text.contains("event: response.completed"), "no forged frame: {text}");
    assert!(!text.contains("forged"), "{text}");
    let mut parser = SseParser::new();
    let mut events = parser.feed(text.as_bytes()).unwrap();
    events.extend(parser.finish().unwrap());
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    for (event, payload) in events.iter().zip(&data) {
        assert_eq!(event.event.as_deref(), payload["type"].as_str(), "event name equals the payload type");
    }
    let kinds: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            // The message still open is closed as incomplete and kept in the failed output.
            "response.output_item.done",
            "response.failed"
        ]
    );
    assert_eq!(data[4]["item"]["status"], "incomplete");
    assert_eq!(data[4]["item"]["id"], data[2]["item"]["id"]);
    assert_eq!(data[5]["response"]["output"], json!([data[4]["item"]]));
    assert_eq!(data[5]["response"]["error"]["code"], "server_error");
    assert_eq!(gw.usage_of(&request_id).await.status, UsageStatus::Failed);
}
