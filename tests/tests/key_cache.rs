//! The hot-path key cache under a flood of made-up keys, on both stores: unknown hashes are
//! remembered apart in a small bounded cache, so 10,000 of them evict no real key, and the real
//! key is still served from the cache while the store is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mesh::domain::{now_unix, ApiKey, CapMode, KeyStatus, KeyUpdate};
use mesh::error::StoreError;
use mesh::ids::new_key_secret;
use mesh::money::Nanos;
use mesh::store::cache::{CacheCapacity, Cached};
use mesh::store::{KeyStore, Reservation, Stores};
use mesh_tests::gateway::fresh_stores;
use mesh_tests::{on_both_stores, StoreKind};

/// A key store that can be taken down.
struct Switchable {
    inner: Arc<dyn KeyStore>,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("taken down by the test".to_owned()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for Switchable {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_key(key).await
    }
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.check()?;
        self.inner.key_by_hash(key_hash).await
    }
    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.check()?;
        self.inner.key_by_id(id).await
    }
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.check()?;
        self.inner.list_keys().await
    }
    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<ApiKey>, StoreError> {
        self.check()?;
        self.inner.update_key(id, update).await
    }
    async fn reserve(&self, key_hash: &str, reservation: &Reservation) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.reserve(key_hash, reservation).await
    }
    async fn release_expired(&self, key_hash: &str, now_unix: i64) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.release_expired(key_hash, now_unix).await
    }
}

async fn a_flood_of_unknown_keys_evicts_no_real_key(kind: StoreKind) {
    let (stores, _dir) = fresh_stores(kind).await;
    let secret = new_key_secret().unwrap();
    let key = ApiKey {
        id: secret.id.clone(),
        key_hash: secret.hash.clone(),
        name: "real".to_owned(),
        owner: "team-a".to_owned(),
        status: KeyStatus::Active,
        rpm: None,
        rpd: None,
        spend_cap: None,
        spend_cap_mode: CapMode::Soft,
        spent: Nanos::ZERO,
        reserved: Nanos::ZERO,
        default_model: None,
        default_params: serde_json::Map::new(),
        allowed_models: Vec::new(),
        expires_at: None,
        created_at: now_unix(),
    };
    stores.keys.insert_key(&key).await.unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let switchable = Stores { keys: Arc::new(Switchable { inner: stores.keys.clone(), down: down.clone() }), ..stores };
    // A zero TTL: every lookup asks the store, and what is held stays only as the outage copy.
    // Small capacities, so that a cache emptied when full would show at once.
    let capacity = CacheCapacity { keys: 100, unknown_keys: 64, others: 100 };
    let cached = Arc::new(Cached::with_capacity(switchable, Duration::ZERO, capacity));

    assert_eq!(cached.key(&secret.hash).await.unwrap().unwrap().id, key.id);
    assert!(cached.holds_key(&secret.hash));

    let unknown = futures_util::stream::iter(0..10_000u32)
        .map(|i| {
            let cached = cached.clone();
            async move { cached.key(&format!("{i:064x}")).await.unwrap() }
        })
        .buffer_unordered(32)
        .filter(|found| std::future::ready(found.is_none()))
        .count()
        .await;
    assert_eq!(unknown, 10_000, "made-up keys are unknown");
    assert!(cached.holds_key(&secret.hash), "the real key is still cached");
    let (keys, unknown_held) = cached.key_counts();
    assert_eq!(keys, 1);
    assert!(unknown_held <= capacity.unknown_keys, "unknown hashes stay within their own bound: {unknown_held}");

    // Store down: the real key is served from the cache; an unknown key cannot be checked.
    down.store(true, Ordering::SeqCst);
    assert_eq!(cached.key(&secret.hash).await.unwrap().unwrap().id, key.id, "the outage copy survived the flood");
    assert!(cached.key(&format!("{:064x}", 20_000)).await.is_err());
}
on_both_stores!(flood_on, a_flood_of_unknown_keys_evicts_no_real_key);

/// A request authenticates with a copy of its key; a settlement of an earlier request can land
/// between that and its spend check, moving a cost out of the held costs into the cached key.
/// The check must see the cost in one place or the other, never in neither (the soft cap let one
/// request too many through) nor in both.
async fn a_settlement_between_auth_and_the_spend_check_is_seen(kind: StoreKind) {
    let (stores, _dir) = fresh_stores(kind).await;
    let secret = new_key_secret().unwrap();
    let key = ApiKey {
        id: secret.id.clone(),
        key_hash: secret.hash.clone(),
        name: "capped".to_owned(),
        owner: "team-a".to_owned(),
        status: KeyStatus::Active,
        rpm: None,
        rpd: None,
        spend_cap: Some(Nanos(200_000)),
        spend_cap_mode: CapMode::Soft,
        spent: Nanos::ZERO,
        reserved: Nanos::ZERO,
        default_model: None,
        default_params: serde_json::Map::new(),
        allowed_models: Vec::new(),
        expires_at: None,
        created_at: now_unix(),
    };
    stores.keys.insert_key(&key).await.unwrap();
    let cached = Cached::new(stores, Duration::from_secs(60));
    let held = |cost| mesh::spend::Held {
        key_hash: secret.hash.clone(),
        owner: "team-a".into(),
        cost: Nanos(cost),
        debit: false,
    };

    let authenticated = cached.key(&secret.hash).await.unwrap().unwrap();
    assert!(cached.hold_spend("req_1", held(77_500)));
    assert_eq!(cached.spent(&authenticated).await, Nanos(77_500), "held");
    let began = std::time::Instant::now();
    cached.confirm_spend("req_1", began, std::time::Instant::now());
    assert_eq!(cached.spent(&authenticated).await, Nanos(77_500), "settled: in the cached key now, counted once");

    // A second one, on the cached key already updated once.
    assert!(cached.hold_spend("req_2", held(10_000)));
    let began = std::time::Instant::now();
    cached.confirm_spend("req_2", began, std::time::Instant::now());
    assert_eq!(cached.spent(&authenticated).await, Nanos(87_500));
}
on_both_stores!(settlement_between_auth_and_check_on, a_settlement_between_auth_and_the_spend_check_is_seen);
