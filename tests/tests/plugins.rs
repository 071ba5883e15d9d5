//! Gateway plugins through `/v1/responses`: pii-redaction before the provider, response-healing
//! after it, context-compression for oversized input, and all of them with a template and a
//! `previous_response_id` in one request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

#[tokio::test]
async fn pii_is_redacted_before_the_provider() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let response = gw
        .post(&secret, &json!({"model": "openai/gpt-4o", "instructions": "Reply to ada@example.com",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Card 4242 4242 4242 4242, phone +44 20 7946 0958, key sk-proj-AAAAAAAAAAAAAAAAAAAA"}]}],
            "plugins": [{"id": "pii-redaction"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let sent = gw.stub.last_request().body;
    assert_eq!(sent["instructions"], "Reply to [EMAIL]");
    assert_eq!(sent["input"][0]["content"][0]["text"], "Card [CARD], phone [PHONE], key [SECRET]");
    assert!(sent.get("plugins").is_none(), "gateway plugins are not forwarded");
    gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "mail ada@example.com or +44 20 7946 0958", "plugins": [{"id": "pii-redaction", "kinds": ["email"]}]})).await;
    assert_eq!(gw.stub.last_request().body["input"], "mail [EMAIL] or +44 20 7946 0958", "options choose the kinds");
    let bad = gw
        .post(
            &secret,
            &json!({"model": "openai/gpt-4o", "input": "x", "plugins": [{"id": "pii-redaction", "kinds": ["dna"]}]}),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn broken_json_is_healed_or_refused() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("t/broken", "stub-broken-json", "2.5", "10", None).await;
    gw.put_price("t/garbage", "stub-garbage-json", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let format = json!({"format": {"type": "json_object"}});
    let healed: Value = gw
        .post(
            &secret,
            &json!({"model": "t/broken", "input": "x", "text": format, "plugins": [{"id": "response-healing"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let text = healed["output"][0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), json!({"answer": 42}));
    let untouched: Value =
        gw.post(&secret, &json!({"model": "t/broken", "input": "x", "text": format})).await.json().await.unwrap();
    assert!(untouched["output"][0]["content"][0]["text"].as_str().unwrap().starts_with("```"), "only with the plugin");
    let refused = gw
        .post(
            &secret,
            &json!({"model": "t/garbage", "input": "x", "text": format, "plugins": [{"id": "response-healing"}]}),
        )
        .await;
    assert_eq!(refused.status(), 502);
    let streaming = gw
        .post(
            &secret,
            &json!({"model": "t/broken", "input": "x", "stream": true, "plugins": [{"id": "response-healing"}]}),
        )
        .await;
    assert_eq!(streaming.status(), 400, "healing needs the complete response");
}

#[tokio::test]
async fn oversized_input_is_compressed_middle_out() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut row = gw.put_price("openai/small", "gpt-4o", "2.5", "10", None).await;
    row.context_length = Some(1_000);
    row.max_output_tokens = Some(100);
    gw.stores.prices.put_price(&row).await.unwrap();
    let (secret, _) = gw.create_key(|_| {}).await;
    let input: Vec<Value> = (0..12)
        .flat_map(|i| {
            vec![
                json!({"role": "user", "content": format!("q{i} {}", "y".repeat(300))}),
                json!({"role": "assistant", "content": format!("a{i}")}),
            ]
        })
        .collect();
    gw.post(&secret, &json!({"model": "openai/small", "input": input, "plugins": [{"id": "context-compression"}]}))
        .await;
    let sent = gw.stub.last_request().body["input"].as_array().unwrap().clone();
    assert!(sent.len() < 24);
    assert!(sent[0]["content"].as_str().unwrap().starts_with("q0"));
    assert_eq!(sent[sent.len() - 1]["content"], "a11");
    gw.post(&secret, &json!({"model": "openai/small", "input": input})).await;
    assert_eq!(
        gw.stub.last_request().body["input"].as_array().unwrap().len(),
        24,
        "nothing dropped without the plugin"
    );
}

#[tokio::test]
async fn template_chain_and_plugins_together() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let created = gw
        .http
        .post(format!("{}/v1/templates", gw.url))
        .bearer_auth(&secret)
        .json(&json!({"name": "agent", "system": "You help {{ user }}.", "messages": [{"role": "user", "content": "I am {{ user }}, mail me at {{ mail }}"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let first: Value =
        gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hello"})).await.json().await.unwrap();
    let response = gw
        .post(&secret, &json!({"model": "openai/gpt-4o", "template": "agent", "variables": {"user": "Ada", "mail": "ada@example.com"},
            "previous_response_id": first["id"], "input": "call 555-010-9999 please", "plugins": [{"id": "pii-redaction"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let sent = gw.stub.last_request().body;
    assert_eq!(sent["instructions"], "You help Ada.");
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input[0]["content"], "hello", "history first");
    assert_eq!(input[2]["content"], "I am Ada, mail me at [EMAIL]", "then the template's messages, redacted");
    assert_eq!(input[3]["content"], "call [PHONE] please", "then the request's input, redacted");
}
