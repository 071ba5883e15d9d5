//! In-process read-through caches for the hot path: keys by hash, catalog rows by model, and
//! owner balances. Entries live for the configured TTL (≤ 5 s), so revocations and price
//! changes show within 5 s while a warm request reads nothing from the store.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::{ApiKey, ModelPrice};
use crate::error::StoreError;
use crate::money::Nanos;
use crate::store::Stores;

/// Bound on entries per cache; past it, expired entries are swept before inserting.
const MAX_ENTRIES: usize = 100_000;

/// Oldest entry served while the store is unavailable.
const STALE_LIMIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
struct Entry<V> {
    value: V,
    fetched: Instant,
}

/// A TTL map with cheap concurrent reads.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: RwLock<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: RwLock::new(HashMap::new()) }
    }

    /// The fresh value for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(key)?;
        (entry.fetched.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// The last value for `key` however old (served only while the store cannot answer).
    pub fn stale(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(key)?;
        (entry.fetched.elapsed() < STALE_LIMIT).then(|| entry.value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        self.insert_read_at(key, value, Instant::now());
    }

    /// Inserts a value read from the store at `read_at` (its age counts from then).
    pub fn insert_read_at(&self, key: K, value: V, read_at: Instant) {
        let Ok(mut entries) = self.entries.write() else { return };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.fetched.elapsed() < STALE_LIMIT);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, Entry { value, fetched: read_at });
    }

    /// Changes a cached value in place if it was read from the store before `instant` (so it
    /// may not reflect a write completed then).
    pub fn update_if_read_before(&self, key: &K, instant: Instant, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(entry) = entries.get_mut(key) {
                if entry.fetched < instant {
                    change(&mut entry.value);
                }
            }
        }
    }

    /// Changes a cached value in place without extending its life.
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(entry) = entries.get_mut(key) {
                change(&mut entry.value);
            }
        }
    }

    pub fn remove(&self, key: &K) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
        }
    }
}

/// The hot-path view of the stores.
#[derive(Debug)]
pub struct Cached {
    pub stores: Stores,
    keys: TtlCache<String, Option<Arc<ApiKey>>>,
    prices: TtlCache<String, Arc<Vec<ModelPrice>>>,
    balances: TtlCache<String, Option<i64>>,
    /// Settlements waiting for the store to answer again.
    pub outbox: crate::accounting::Outbox,
    /// Costs counted by this instance and not yet written.
    pub spend: crate::spend::SpendView,
}

impl Cached {
    pub fn new(stores: Stores, ttl: Duration) -> Self {
        Cached {
            stores,
            keys: TtlCache::new(ttl),
            prices: TtlCache::new(ttl),
            balances: TtlCache::new(ttl),
            outbox: crate::accounting::Outbox::default(),
            spend: crate::spend::SpendView::default(),
        }
    }

    /// The key with this secret hash (unknown keys are cached as absent too).
    pub async fn key(&self, key_hash: &str) -> Result<Option<Arc<ApiKey>>, StoreError> {
        if let Some(hit) = self.keys.get(&key_hash.to_owned()) {
            return Ok(hit);
        }
        let read_at = Instant::now();
        match self.stores.keys.key_by_hash(key_hash).await {
            Ok(fetched) => {
                let fetched = fetched.map(Arc::new);
                self.keys.insert_read_at(key_hash.to_owned(), fetched.clone(), read_at);
                Ok(fetched)
            }
            // Known keys keep working while the store is down; unknown ones cannot be checked,
            // and neither can spend: keys with a spend cap fail closed.
            Err(err) => match self.keys.stale(&key_hash.to_owned()) {
                Some(Some(key)) if key.spend_cap.is_none() => {
                    tracing::warn!(error = %err, "store unavailable: serving a cached key");
                    Ok(Some(key))
                }
                _ => Err(err),
            },
        }
    }

    /// Counts a request's cost in this instance's view now, before settlement writes it.
    pub fn hold_spend(&self, request_id: &str, held: crate::spend::Held) -> bool {
        self.spend.hold(request_id, held)
    }

    /// The cost of `request_id` is in the store (written by `written_at`): moves it from the
    /// held costs into the cached key and balance, unless those were read after the write.
    pub fn confirm_spend(&self, request_id: &str, written_at: Instant) {
        let Some(held) = self.spend.release(request_id) else { return };
        self.keys.update_if_read_before(&held.key_hash, written_at, |cached| {
            if let Some(key) = cached {
                let mut copy = ApiKey::clone(key);
                copy.spent = copy.spent.saturating_add(held.cost);
                *key = Arc::new(copy);
            }
        });
        if held.debit {
            let cost = i64::try_from(held.cost.0).unwrap_or(i64::MAX);
            self.balances.update_if_read_before(&held.owner, written_at, |balance| {
                if let Some(b) = balance {
                    *b = b.saturating_sub(cost);
                }
            });
        }
    }

    /// What the key has spent as this instance sees it: the stored spend plus held costs.
    pub fn spent(&self, key: &ApiKey) -> Nanos {
        key.spent.saturating_add(self.spend.pending_for_key(&key.key_hash))
    }

    /// Drops a cached key (after a reservation changed its spend state).
    pub fn forget_key(&self, key_hash: &str) {
        self.keys.remove(&key_hash.to_owned());
    }

    /// The catalog rows of a model.
    pub async fn prices(&self, model: &str) -> Result<Arc<Vec<ModelPrice>>, StoreError> {
        if let Some(hit) = self.prices.get(&model.to_owned()) {
            return Ok(hit);
        }
        match self.stores.prices.prices_for(model).await {
            Ok(rows) => {
                let fetched = Arc::new(rows);
                self.prices.insert(model.to_owned(), fetched.clone());
                Ok(fetched)
            }
            Err(err) => self.prices.stale(&model.to_owned()).ok_or(err),
        }
    }

    /// The owner's prepaid balance, if the owner has one.
    pub async fn balance(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        if let Some(hit) = self.balances.get(&owner.to_owned()) {
            return Ok(hit);
        }
        let read_at = Instant::now();
        match self.stores.balances.balance(owner).await {
            Ok(fetched) => {
                self.balances.insert_read_at(owner.to_owned(), fetched, read_at);
                Ok(fetched)
            }
            // An owner without a balance stays without one; a balance itself cannot be verified.
            Err(err) => match self.balances.stale(&owner.to_owned()) {
                Some(None) => Ok(None),
                _ => Err(err),
            },
        }
    }

    /// The owner's prepaid balance left as this instance sees it (held debits subtracted).
    pub async fn balance_left(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        let pending = i64::try_from(self.spend.pending_for_owner(owner).0).unwrap_or(i64::MAX);
        Ok(self.balance(owner).await?.map(|balance| balance.saturating_sub(pending)))
    }
}
