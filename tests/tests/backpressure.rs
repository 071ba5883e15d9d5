//! A store that falls behind: settlements wait for it, and once the settlement backlog is full
//! the gateway refuses new admissions with 503 `store_unavailable` and `retry-after` instead of
//! holding ever more work in memory. Nothing is dropped: once the store catches up every
//! settlement is written, exactly once, and admissions resume.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use mesh::domain::{Charge, UsageFilter, UsageRecord};
use mesh::error::StoreError;
use mesh::store::{Stores, UsageStore};
use mesh_tests::gateway::fresh_stores;
use mesh_tests::{eventually, Gateway, GatewayOptions, StoreKind, PATIENCE};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Usage writes that wait until the gate opens.
struct Gated {
    inner: Arc<dyn UsageStore>,
    open: watch::Receiver<bool>,
}

#[async_trait]
impl UsageStore for Gated {
    async fn record_usage(&self, record: &UsageRecord, charge: &Charge) -> Result<bool, StoreError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        self.inner.record_usage(record, charge).await
    }

    async fn query_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.query_usage(filter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_settlement_backlog_refuses_admissions_until_the_store_catches_up() {
    let (stores, _dir) = fresh_stores(StoreKind::Local).await;
    let (gate, open) = watch::channel(false);
    let stores = Stores { usage: Arc::new(Gated { inner: stores.usage.clone(), open }), ..stores };
    let gw = Gateway::start(GatewayOptions {
        stores: Some(stores),
        configure: |c| c.settlement_backlog = 3,
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", None).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    let body = json!({"model": "openai/gpt-4o", "input": "hello"});

    // Answered at once; their settlements wait for the store.
    for _ in 0..3 {
        assert_eq!(gw.post(&secret, &body).await.status(), 200);
    }
    assert_eq!(gw.state.cached.backlog.running(), 3);

    let refused = gw.post(&secret, &body).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let envelope: Value = refused.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "store_unavailable");
    assert_eq!(envelope["error"]["type"], "api_error");
    assert_eq!(envelope["error"]["retry_after_seconds"], 1);
    assert!(envelope["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(gw.stub.requests().len(), 3, "a refused admission never reaches the provider");

    gate.send(true).unwrap();
    eventually("the three waiting settlements written", PATIENCE, || async {
        gw.usage_of_key(&key.id).await.len() == 3 && gw.state.cached.backlog.running() == 0
    })
    .await;
    assert_eq!(gw.post(&secret, &body).await.status(), 200, "admissions resume once the store caught up");
    eventually("the fourth settlement written", PATIENCE, || async { gw.usage_of_key(&key.id).await.len() == 4 }).await;
    let spent = gw.key(&key.id).await.spent;
    let billed: u64 = gw.usage_of_key(&key.id).await.iter().map(|r| r.cost.0).sum();
    assert_eq!(spent.0, billed, "every written record charged once");
}
