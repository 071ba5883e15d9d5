//! Accounting exactness: a known usage costs exactly what the prices say, to the nano-dollar;
//! after N requests the key's spend equals the sum of its usage records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::app::SettleMode;
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::json;

async fn exact_costs_and_totals(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    // $2.50 in, $1.25 cached, $10 out per Mtok. Stub usage: 12 in (2 cached), 5 out (1 reasoning).
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi", "session_id": "sess-42"})).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let record = gw.usage_of(&request_id).await;
    // 10 × 2.50 + 2 × 1.25 + 5 × 10 = 25 + 2.5 + 50 = 77.5 USD per Mtok-token = 0.0000775 USD = 77 500 nano-USD.
    assert_eq!(record.cost.0, 77_500);
    assert_eq!(record.tokens.input_tokens, 12);
    assert_eq!(record.tokens.cached_input_tokens, 2);
    assert_eq!(record.tokens.output_tokens, 5);
    assert_eq!(record.tokens.reasoning_tokens, 1);
    assert_eq!(record.session_id.as_deref(), Some("sess-42"));
    assert_eq!(record.model, "openai/gpt-4o");
    assert_eq!(record.provider, "openai");
    assert_eq!(record.key_id, key.id);
    assert_eq!(record.owner, "team-a");

    // A price that does not divide evenly rounds up once, to the next nano-dollar.
    gw.put_price("openai/cheap", "cheap", "0.075", "0.3", Some("0.0075")).await;
    gw.stub.settings(|s| s.usage = json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}}));
    let response = gw.post(&secret, &json!({"model": "openai/cheap", "input": "x"})).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    // (2 × 0.075 + 1 × 0.0075 + 1 × 0.3) USD per Mtok = 457.5 nano-USD → 458.
    assert_eq!(gw.usage_of(&request_id).await.cost.0, 458);

    for i in 0..8 {
        let response = gw
            .post(&secret, &json!({"model": if i % 2 == 0 { "openai/gpt-4o" } else { "openai/cheap" }, "input": "x"}))
            .await;
        assert_eq!(response.status(), 200);
    }
    gw.settled().await;
    let records = gw.usage_of_key(&key.id).await;
    assert_eq!(records.len(), 10);
    let sum: u64 = records.iter().map(|r| r.cost.0).sum();
    assert_eq!(gw.key(&key.id).await.spent.0, sum, "spend equals the sum of the usage records");
}
on_both_stores!(exact_costs_on, exact_costs_and_totals);

#[tokio::test]
async fn lambda_mode_settles_before_the_body_ends() {
    let gw =
        Gateway::start(GatewayOptions { settle_mode: SettleMode::BeforeBodyEnds, ..GatewayOptions::default() }).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "hi"})).await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["model"], "openai/gpt-4o");
    // Settlement ran inside the response body, not as a detached task a frozen Lambda would lose:
    // once the body has ended, the record is there without waiting.
    assert!(gw.state.tasks.is_empty());
    let records = gw.usage_of_key(&key.id).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].cost.0, 77_500);
    assert_eq!(gw.key(&key.id).await.spent.0, 77_500);
}
