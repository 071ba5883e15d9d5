//! One contract suite for the store ports, run against the embedded adapter and DynamoDB (moto).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::domain::{
    now_unix, now_unix_ms, ApiKey, CapMode, Charge, KeyStatus, KeyUpdate, ModelPrice, UsageFilter, UsageRecord,
    UsageStatus,
};
use mesh::money::{Nanos, TokenUsage, UsdPerMtok};
use mesh::store::{Reservation, Stores};
use mesh_tests::gateway::fresh_stores;
use mesh_tests::{on_both_stores, StoreKind};

fn key(id: &str, hash: &str, cap: Option<u64>) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        key_hash: hash.to_owned(),
        name: "n".to_owned(),
        owner: "o".to_owned(),
        status: KeyStatus::Active,
        rpm: Some(10),
        rpd: None,
        spend_cap: cap.map(Nanos),
        spend_cap_mode: CapMode::Hard,
        spent: Nanos::ZERO,
        reserved: Nanos::ZERO,
        default_model: Some("a/b".to_owned()),
        default_params: serde_json::Map::from_iter([("temperature".to_owned(), serde_json::json!(0.5))]),
        allowed_models: vec!["a/b".to_owned()],
        expires_at: None,
        created_at: now_unix(),
    }
}

fn record(request_id: &str, key_id: &str, cost: u64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        key_id: key_id.to_owned(),
        owner: "o".to_owned(),
        model: "a/b".to_owned(),
        provider: "openai".to_owned(),
        session_id: Some("s1".to_owned()),
        template_id: None,
        tokens: TokenUsage {
            input_tokens: 10,
            cached_input_tokens: 2,
            output_tokens: 3,
            reasoning_tokens: 1,
            ..TokenUsage::default()
        },
        cost: Nanos(cost),
        status: UsageStatus::Success,
        latency_ms: 5,
        created_at_ms: now_unix_ms(),
    }
}

fn charge(hash: &str, cost: u64) -> Charge {
    Charge { key_hash: hash.to_owned(), cost: Nanos(cost), release: None, debit_owner_balance: false }
}

async fn open(kind: StoreKind) -> (Stores, Option<std::path::PathBuf>) {
    fresh_stores(kind).await
}

async fn keys_round_trip(kind: StoreKind) {
    let (stores, _dir) = open(kind).await;
    let k = key("key_1", "h1", Some(1000));
    stores.keys.insert_key(&k).await.unwrap();
    assert!(stores.keys.insert_key(&k).await.is_err(), "duplicate hash is refused");
    let by_hash = stores.keys.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(by_hash, k);
    assert_eq!(stores.keys.key_by_id("key_1").await.unwrap().unwrap(), k);
    assert!(stores.keys.key_by_hash("nope").await.unwrap().is_none());
    let update = KeyUpdate {
        status: Some(KeyStatus::Suspended),
        rpm: Some(None),
        spend_cap: Some(Some(Nanos(2000))),
        ..KeyUpdate::default()
    };
    let updated = stores.keys.update_key("key_1", &update).await.unwrap().unwrap();
    assert_eq!(updated.status, KeyStatus::Suspended);
    assert_eq!(updated.rpm, None);
    assert_eq!(stores.keys.key_by_hash("h1").await.unwrap().unwrap().spend_cap, Some(Nanos(2000)));
    assert!(stores.keys.update_key("missing", &update).await.unwrap().is_none());
    assert_eq!(stores.keys.list_keys().await.unwrap().len(), 1);
}
on_both_stores!(keys_round_trip_on, keys_round_trip);

async fn usage_is_idempotent_and_charges_atomically(kind: StoreKind) {
    let (stores, _dir) = open(kind).await;
    stores.keys.insert_key(&key("key_1", "h1", None)).await.unwrap();
    assert!(stores.usage.record_usage(&record("req_1", "key_1", 700), &charge("h1", 700)).await.unwrap());
    assert!(
        !stores.usage.record_usage(&record("req_1", "key_1", 700), &charge("h1", 700)).await.unwrap(),
        "second write of the same request is a no-op"
    );
    assert!(stores.usage.record_usage(&record("req_2", "key_1", 300), &charge("h1", 300)).await.unwrap());
    let k = stores.keys.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(k.spent, Nanos(1000));
    let records = stores
        .usage
        .query_usage(&UsageFilter { key_id: Some("key_1".into()), ..UsageFilter::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].tokens.cached_input_tokens, 2);
    let by_session = stores
        .usage
        .query_usage(&UsageFilter { session_id: Some("s1".into()), ..UsageFilter::default() })
        .await
        .unwrap();
    assert_eq!(by_session.len(), 2);
    let none =
        stores.usage.query_usage(&UsageFilter { owner: Some("other".into()), ..UsageFilter::default() }).await.unwrap();
    assert!(none.is_empty());
}
on_both_stores!(usage_idempotent_on, usage_is_idempotent_and_charges_atomically);

async fn reservations_hold_the_cap(kind: StoreKind) {
    let (stores, _dir) = open(kind).await;
    stores.keys.insert_key(&key("key_1", "h1", Some(1000))).await.unwrap();
    let r =
        |id: &str, amount: u64, expires_at: i64| Reservation { id: id.to_owned(), amount: Nanos(amount), expires_at };
    let later = now_unix() + 600;
    assert!(stores.keys.reserve("h1", &r("a", 600, later)).await.unwrap());
    assert!(!stores.keys.reserve("h1", &r("b", 500, later)).await.unwrap(), "600 + 500 > 1000");
    assert!(stores.keys.reserve("h1", &r("c", 400, now_unix() - 1)).await.unwrap());
    // Settle `a` at 250: spent 250, reserved 400 (c).
    let settle = Charge {
        key_hash: "h1".into(),
        cost: Nanos(250),
        release: Some(("a".into(), Nanos(600))),
        debit_owner_balance: false,
    };
    assert!(stores.usage.record_usage(&record("a", "key_1", 250), &settle).await.unwrap());
    let k = stores.keys.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!((k.spent, k.reserved), (Nanos(250), Nanos(400)));
    // `c` expired: releasing it frees room.
    assert_eq!(stores.keys.release_expired("h1", now_unix()).await.unwrap(), 1);
    assert!(stores.keys.reserve("h1", &r("d", 750, later)).await.unwrap());
    let k = stores.keys.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!((k.spent, k.reserved), (Nanos(250), Nanos(750)));
    // Settling a released reservation charges the cost without releasing twice.
    let late = Charge {
        key_hash: "h1".into(),
        cost: Nanos(100),
        release: Some(("c".into(), Nanos(400))),
        debit_owner_balance: false,
    };
    assert!(stores.usage.record_usage(&record("c", "key_1", 100), &late).await.unwrap());
    let k = stores.keys.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!((k.spent, k.reserved), (Nanos(350), Nanos(750)));
    // Raising the cap makes room.
    stores
        .keys
        .update_key("key_1", &KeyUpdate { spend_cap: Some(Some(Nanos(5000))), ..KeyUpdate::default() })
        .await
        .unwrap();
    assert!(stores.keys.reserve("h1", &r("e", 3000, later)).await.unwrap());
    assert!(!stores.keys.reserve("h1", &r("f", 1000, later)).await.unwrap(), "350 + 750 + 3000 + 1000 > 5000");
}
on_both_stores!(reservations_on, reservations_hold_the_cap);

async fn prices_and_balances(kind: StoreKind) {
    let (stores, _dir) = open(kind).await;
    let row = |provider: &str, default: bool| ModelPrice {
        model: "a/b".into(),
        provider: provider.into(),
        upstream_model: "b".into(),
        input_usd_per_mtok: Some(UsdPerMtok::from_usd_str("2.5").unwrap()),
        output_usd_per_mtok: Some(UsdPerMtok::from_usd_str("10").unwrap()),
        cached_input_usd_per_mtok: None,
        context_length: Some(1000),
        max_output_tokens: None,
        is_free: false,
        is_default: default,
        enabled: true,
        priority: Some(2),
    };
    stores.prices.put_price(&row("x", true)).await.unwrap();
    stores.prices.put_price(&row("y", true)).await.unwrap();
    let rows = stores.prices.prices_for("a/b").await.unwrap();
    assert_eq!(rows.len(), 2);
    let defaults: Vec<&str> = rows.iter().filter(|r| r.is_default).map(|r| r.provider.as_str()).collect();
    assert_eq!(defaults, ["y"], "at most one default row per model");
    assert_eq!(rows.iter().find(|r| r.provider == "x").unwrap().input_usd_per_mtok, Some(UsdPerMtok(2_500_000_000)));
    assert_eq!(stores.prices.list_prices().await.unwrap().len(), 2);
    assert!(stores.prices.prices_for("none/such").await.unwrap().is_empty());

    assert_eq!(stores.balances.balance("o").await.unwrap(), None);
    assert_eq!(stores.balances.add_balance("o", 5_000).await.unwrap(), 5_000);
    stores.keys.insert_key(&key("key_1", "h1", None)).await.unwrap();
    let debit = Charge { key_hash: "h1".into(), cost: Nanos(1_200), release: None, debit_owner_balance: true };
    stores.usage.record_usage(&record("r1", "key_1", 1_200), &debit).await.unwrap();
    assert_eq!(stores.balances.balance("o").await.unwrap(), Some(3_800));
    stores.health.ping().await.unwrap();
}
on_both_stores!(prices_and_balances_on, prices_and_balances);
