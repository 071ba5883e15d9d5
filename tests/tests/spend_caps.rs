//! Spend caps and owner balances: soft caps refuse once reached, hard caps never let recorded
//! spend pass the cap under concurrency and still use it nearly fully, reservations settle after
//! streams and expire after crashes, prepaid balances run out for paid models only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use mesh::domain::{now_unix, CapMode};
use mesh::money::{Nanos, PriceSheet, UsdPerMtok};
use mesh::store::Reservation;
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

/// The stub's answer costs 77 500 nano-USD at these prices (12 in, 2 cached, 5 out).
async fn gateway(kind: StoreKind) -> Gateway {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    gw
}

async fn soft_cap_refuses_once_reached(kind: StoreKind) {
    let gw = gateway(kind).await;
    let (secret, key) = gw.create_key(|k| k.spend_cap = Some(Nanos(100_000))).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    for _ in 0..2 {
        assert_eq!(gw.post(&secret, &body).await.status(), 200, "under the cap");
        gw.settled().await;
    }
    let refused = gw.post(&secret, &body).await;
    assert_eq!(refused.status(), 402);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "spend_limit_exceeded");
    assert_eq!(error["error"]["type"], "insufficient_quota");
    assert!(error["error"]["message"].as_str().unwrap().contains("spend cap"));
    assert_eq!(gw.key(&key.id).await.spent.0, 155_000, "soft: the request in flight finished past the cap");
    assert_eq!(gw.stub.requests().len(), 2);
}
on_both_stores!(soft_cap_on, soft_cap_refuses_once_reached);

async fn hard_cap_holds_under_concurrency(kind: StoreKind) {
    let gw = gateway(kind).await;
    let cap = Nanos(3_000_000);
    let (secret, key) = gw
        .create_key(|k| {
            k.spend_cap = Some(cap);
            k.spend_cap_mode = CapMode::Hard;
        })
        .await;
    let body = json!({"model": "openai/gpt-4o", "input": "x", "max_output_tokens": 5});
    let body_len = u64::try_from(serde_json::to_vec(&body).unwrap().len()).unwrap();
    let sheet = PriceSheet {
        input: UsdPerMtok::from_usd_str("2.5").unwrap(),
        output: UsdPerMtok::from_usd_str("10").unwrap(),
        cached_input: None,
        is_free: false,
    };
    let worst_case = sheet.worst_case(body_len, 5);

    // 50 concurrent requests, far more than the cap allows at once.
    let requests = (0..50).map(|_| gw.post(&secret, &body));
    let statuses: Vec<u16> =
        futures_util::future::join_all(requests).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    assert!(statuses.contains(&402), "the cap refused some");
    gw.settled().await;
    let after_burst = gw.key(&key.id).await;
    assert!(after_burst.spent <= cap, "recorded spend {} never passes the cap {}", after_burst.spent, cap);
    assert_eq!(after_burst.reserved, Nanos::ZERO, "every reservation settled");

    // Then one at a time until refused: with nothing in flight, a refusal means the room left is
    // smaller than one request's worst case.
    loop {
        let response = gw.post(&secret, &body).await;
        gw.settled().await;
        if response.status() == 402 {
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let final_key = gw.key(&key.id).await;
    assert!(final_key.spent <= cap);
    assert!(
        cap.0 - final_key.spent.0 < worst_case.0,
        "cap nearly used: {} left, worst case {}",
        cap.0 - final_key.spent.0,
        worst_case.0
    );
    let records = gw.usage_of_key(&key.id).await;
    assert_eq!(records.iter().map(|r| r.cost.0).sum::<u64>(), final_key.spent.0);
}
on_both_stores!(hard_cap_on, hard_cap_holds_under_concurrency);

async fn hard_cap_settles_after_streaming_and_releases_expired(kind: StoreKind) {
    let gw = gateway(kind).await;
    let (secret, key) = gw
        .create_key(|k| {
            k.spend_cap = Some(Nanos(1_000_000));
            k.spend_cap_mode = CapMode::Hard;
        })
        .await;
    // A crashed invocation left a reservation holding the whole cap; it has expired.
    let stale = Reservation { id: "req_crashed".into(), amount: Nanos(1_000_000), expires_at: now_unix() - 1 };
    assert!(gw.stores.keys.reserve(&key.key_hash, &stale).await.unwrap());
    assert_eq!(gw.key(&key.id).await.reserved, Nanos(1_000_000));

    let response = gw
        .post(&secret, &json!({"model": "openai/gpt-4o", "input": "x", "stream": true, "max_output_tokens": 5}))
        .await;
    assert_eq!(response.status(), 200, "the expired reservation was released to make room");
    let mut body = response.bytes_stream();
    while body.next().await.is_some() {}
    gw.settled().await;
    let settled = gw.key(&key.id).await;
    assert_eq!(settled.spent, Nanos(77_500), "streams settle to the actual cost");
    assert_eq!(settled.reserved, Nanos::ZERO);
}
on_both_stores!(hard_cap_stream_on, hard_cap_settles_after_streaming_and_releases_expired);

async fn owner_balance_runs_out_for_paid_models_only(kind: StoreKind) {
    let gw = gateway(kind).await;
    let mut free = gw.put_price("meta/llama-free", "llama", "0", "0", None).await;
    free.is_free = true;
    gw.stores.prices.put_price(&free).await.unwrap();
    let (secret, _) = gw.create_key(|k| k.owner = "prepaid".into()).await;
    gw.stores.balances.add_balance("prepaid", 100_000).await.unwrap();
    let paid = json!({"model": "openai/gpt-4o", "input": "x"});
    assert_eq!(gw.post(&secret, &paid).await.status(), 200);
    gw.settled().await;
    assert_eq!(gw.stores.balances.balance("prepaid").await.unwrap(), Some(22_500), "cost deducted exactly");
    assert_eq!(gw.post(&secret, &paid).await.status(), 200);
    gw.settled().await;
    assert_eq!(gw.stores.balances.balance("prepaid").await.unwrap(), Some(-55_000));
    let refused = gw.post(&secret, &paid).await;
    assert_eq!(refused.status(), 402);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "spend_limit_exceeded");
    assert!(error["error"]["message"].as_str().unwrap().contains("balance"));
    assert_eq!(
        gw.post(&secret, &json!({"model": "meta/llama-free", "input": "x"})).await.status(),
        200,
        "free models need no balance"
    );
    gw.settled().await;
    assert_eq!(gw.stores.balances.balance("prepaid").await.unwrap(), Some(-55_000));
}
on_both_stores!(balance_on, owner_balance_runs_out_for_paid_models_only);
