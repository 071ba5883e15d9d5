//! DynamoDB down and throttled (`ProvisionedThroughputExceededException`) while the gateway
//! serves: cached keys keep working, unknown keys get 503 `store_unavailable`, usage records
//! wait in the outbox and are written once the store is back, exactly once, and the gateway
//! recovers without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh::store::Stores;
use mesh_tests::faults::{FaultProxy, Mode};
use mesh_tests::{eventually, services, wait_for, Gateway, GatewayOptions, PATIENCE};
use serde_json::{json, Value};

/// Waits until `key_id` has `count` usage records and nothing is left in the outbox: an outbox
/// entry is written by a flush some time after the store is back, and a settlement still
/// retrying can still add one after another record became visible.
async fn wait_for_records(gw: &Gateway, key_id: &str, count: usize) {
    wait_for(&format!("{count} usage records of {key_id} written and the outbox drained"), PATIENCE, || async {
        let written = gw.usage_of_key(key_id).await.len();
        let pending = gw.state.cached.outbox.len();
        if written == count && pending == 0 {
            Ok(())
        } else {
            Err(format!("{written} records, {pending} in the outbox"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_down_and_throttled() {
    let proxy = FaultProxy::start(&services::dynamodb_endpoint()).await;
    let client = services::dynamodb_client_at(&proxy.url).await;
    let store = mesh::store::dynamo::DynamoStore::new(client, &services::unique_prefix());
    store.create_tables().await.unwrap();
    let stores = Stores::from_adapter(store);
    let gw = Gateway::start(GatewayOptions {
        stores: Some(stores),
        configure: |c| c.cache_ttl = Duration::from_millis(200),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    let (known, key) = gw.create_key(|_| {}).await;
    let (unknown, other) = gw.create_key(|_| {}).await;
    let (capped, _) = gw.create_key(|k| k.spend_cap = Some(mesh::money::Nanos(1_000_000_000))).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    assert_eq!(gw.post(&known, &body).await.status(), 200);
    assert_eq!(gw.post(&capped, &body).await.status(), 200);
    wait_for_records(&gw, &key.id, 1).await;
    // The capped key's settlement too: one still in flight when the fault starts would fail
    // into the outbox and be taken for the one this test waits for there.
    gw.settled().await;

    for fault in [Mode::Down, Mode::Throttle] {
        proxy.set(fault);
        tokio::time::sleep(Duration::from_millis(300)).await; // the cache entries are now stale
        let started = Instant::now();
        let response = gw.post(&known, &body).await;
        assert_eq!(response.status(), 200, "{fault:?}: a cached key keeps working");
        let refused = gw.post(&unknown, &body).await;
        assert_eq!(refused.status(), 503, "{fault:?}: an unknown key cannot be checked");
        assert_eq!(gw.post(&capped, &body).await.status(), 503, "{fault:?}: spend caps fail closed");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "store_unavailable");
        assert!(started.elapsed() < Duration::from_secs(15), "{fault:?}: bounded: {:?}", started.elapsed());
        // Settlement fails and waits in the outbox (the SDK's own retries take a few seconds).
        eventually(&format!("{fault:?}: the usage record reached the outbox"), PATIENCE, || async {
            !gw.state.cached.outbox.is_empty()
        })
        .await;
        proxy.set(Mode::Up);
        let expected = if fault == Mode::Down { 2 } else { 3 };
        wait_for_records(&gw, &key.id, expected).await;
    }
    gw.settled().await;
    // Each request charged exactly once: 77 500 nano-USD each.
    assert_eq!(gw.key(&key.id).await.spent.0, 3 * 77_500);
    assert_eq!(gw.post(&unknown, &body).await.status(), 200, "recovered without a restart");
    wait_for_records(&gw, &other.id, 1).await;
}
