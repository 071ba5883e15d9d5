//! In-process read-through caches for the hot path: keys by hash, catalog rows by model, and
//! owner balances. Entries live for the configured TTL (≤ 5 s), so revocations and price
//! changes show within 5 s while a warm request reads nothing from the store.
//!
//! Every cache is bounded: past its capacity the entries fetched longest ago (the expired ones
//! first) make room, one at a time; a cache is never emptied whole. Lookups of unknown key hashes
//! are remembered apart, in a small cache of their own, so a flood of made-up keys can neither
//! evict real keys nor the copies served while the store is down.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::{ApiKey, ModelPrice};
use crate::error::StoreError;
use crate::money::Nanos;
use crate::store::Stores;

/// Default bound on entries per cache.
pub const MAX_ENTRIES: usize = 100_000;

/// Bound on remembered unknown key hashes (each spares the store one read for a TTL).
pub const MAX_UNKNOWN_KEYS: usize = 4_096;

/// Oldest entry served while the store is unavailable.
const STALE_LIMIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
struct Entry<V> {
    value: V,
    fetched: Instant,
    /// Position in [`Entries::by_age`].
    age: u64,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Keys by fetch order, oldest first: what is evicted first.
    by_age: BTreeMap<u64, K>,
    next_age: u64,
}

/// A bounded TTL map with cheap concurrent reads.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<Entries<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    /// A cache of at most `capacity` entries (at least one).
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity: capacity.max(1),
            entries: RwLock::new(Entries { map: HashMap::new(), by_age: BTreeMap::new(), next_age: 0 }),
        }
    }

    /// The fresh value for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let entry = entries.map.get(key)?;
        (entry.fetched.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// The last value for `key` however old (served only while the store cannot answer).
    pub fn stale(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let entry = entries.map.get(key)?;
        (entry.fetched.elapsed() < STALE_LIMIT).then(|| entry.value.clone())
    }

    /// Whether an entry for `key` is held, whatever its age.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.read().is_ok_and(|entries| entries.map.contains_key(key))
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |entries| entries.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a freshly fetched value, evicting the entries fetched longest ago if full.
    pub fn insert(&self, key: K, value: V) {
        self.insert_read_at(key, value, Instant::now());
    }

    /// Stores a value read from the store at `read_at` (its age counts from then), evicting the
    /// entries fetched longest ago if full.
    pub fn insert_read_at(&self, key: K, value: V, read_at: Instant) {
        let Ok(mut guard) = self.entries.write() else { return };
        let entries = &mut *guard;
        if let Some(previous) = entries.map.remove(&key) {
            entries.by_age.remove(&previous.age);
        }
        while entries.map.len() >= self.capacity {
            let Some((_, oldest)) = entries.by_age.pop_first() else { break };
            entries.map.remove(&oldest);
        }
        let age = entries.next_age;
        entries.next_age += 1;
        entries.by_age.insert(age, key.clone());
        entries.map.insert(key, Entry { value, fetched: read_at, age });
    }

    /// Changes a cached value in place if it was read from the store before `instant` (so it
    /// may not reflect a write completed then).
    pub fn update_if_read_before(&self, key: &K, instant: Instant, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(entry) = entries.map.get_mut(key) {
                if entry.fetched < instant {
                    change(&mut entry.value);
                }
            }
        }
    }

    /// Changes a cached value in place without extending its life.
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(entry) = entries.map.get_mut(key) {
                change(&mut entry.value);
            }
        }
    }

    pub fn remove(&self, key: &K) {
        if let Ok(mut guard) = self.entries.write() {
            let entries = &mut *guard;
            if let Some(entry) = entries.map.remove(key) {
                entries.by_age.remove(&entry.age);
            }
        }
    }
}

/// Capacities of the hot-path caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCapacity {
    /// Known keys (also served while the store is down).
    pub keys: usize,
    /// Unknown key hashes.
    pub unknown_keys: usize,
    /// Catalog models and owner balances, each.
    pub others: usize,
}

impl Default for CacheCapacity {
    fn default() -> Self {
        CacheCapacity { keys: MAX_ENTRIES, unknown_keys: MAX_UNKNOWN_KEYS, others: MAX_ENTRIES }
    }
}

/// The hot-path view of the stores.
#[derive(Debug)]
pub struct Cached {
    pub stores: Stores,
    /// Keys that exist, by hash.
    keys: TtlCache<String, Arc<ApiKey>>,
    /// Hashes the store has no key for.
    unknown_keys: TtlCache<String, ()>,
    prices: TtlCache<String, Arc<Vec<ModelPrice>>>,
    balances: TtlCache<String, Option<i64>>,
    /// Settlements waiting for the store to answer again.
    pub outbox: crate::accounting::Outbox,
    /// Costs counted by this instance and not yet written.
    pub spend: crate::spend::SpendView,
}

impl Cached {
    pub fn new(stores: Stores, ttl: Duration) -> Self {
        Self::with_capacity(stores, ttl, CacheCapacity::default())
    }

    pub fn with_capacity(stores: Stores, ttl: Duration, capacity: CacheCapacity) -> Self {
        Cached {
            stores,
            keys: TtlCache::with_capacity(ttl, capacity.keys),
            unknown_keys: TtlCache::with_capacity(ttl, capacity.unknown_keys),
            prices: TtlCache::with_capacity(ttl, capacity.others),
            balances: TtlCache::with_capacity(ttl, capacity.others),
            outbox: crate::accounting::Outbox::default(),
            spend: crate::spend::SpendView::default(),
        }
    }

    /// The key with this secret hash. Unknown hashes are remembered for the TTL too, apart
    /// from known keys.
    pub async fn key(&self, key_hash: &str) -> Result<Option<Arc<ApiKey>>, StoreError> {
        let hash = key_hash.to_owned();
        if let Some(hit) = self.keys.get(&hash) {
            return Ok(Some(hit));
        }
        if self.unknown_keys.get(&hash).is_some() {
            return Ok(None);
        }
        let read_at = Instant::now();
        match self.stores.keys.key_by_hash(key_hash).await {
            Ok(Some(key)) => {
                let key = Arc::new(key);
                self.unknown_keys.remove(&hash);
                self.keys.insert_read_at(hash, key.clone(), read_at);
                Ok(Some(key))
            }
            Ok(None) => {
                self.keys.remove(&hash);
                self.unknown_keys.insert(hash, ());
                Ok(None)
            }
            // Known keys keep working while the store is down; unknown ones cannot be checked,
            // and neither can spend: keys with a spend cap fail closed.
            Err(err) => match self.keys.stale(&hash) {
                Some(key) if key.spend_cap.is_none() => {
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
        self.keys.update_if_read_before(&held.key_hash, written_at, |key| {
            let mut copy = ApiKey::clone(key);
            copy.spent = copy.spent.saturating_add(held.cost);
            *key = Arc::new(copy);
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

    /// Whether a known key with this hash is cached, whatever its age (it would be served while
    /// the store is down).
    pub fn holds_key(&self, key_hash: &str) -> bool {
        self.keys.contains(&key_hash.to_owned())
    }

    /// How many known keys and unknown key hashes are cached.
    pub fn key_counts(&self) -> (usize, usize) {
        (self.keys.len(), self.unknown_keys.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_evicts_the_oldest_entries_one_at_a_time() {
        let cache = TtlCache::with_capacity(Duration::from_secs(60), 3);
        for key in ["a", "b", "c"] {
            cache.insert(key, key.len());
        }
        cache.insert("a", 10); // refreshed: now the newest
        cache.insert("d", 4);
        assert!(!cache.contains(&"b"), "the oldest fetch went first");
        assert_eq!((cache.get(&"a"), cache.get(&"c"), cache.get(&"d")), (Some(10), Some(1), Some(4)));
        cache.remove(&"c");
        cache.insert("e", 5);
        assert_eq!(cache.len(), 3, "a removal frees a place");
        for i in 0..1000 {
            cache.insert("f", i);
        }
        assert_eq!(cache.len(), 3, "reinserting one key does not grow the cache");
        assert!(!cache.contains(&"a"), "the first `f` took the place of the oldest");
        assert!(cache.contains(&"d") && cache.contains(&"e") && cache.contains(&"f"), "the others stay");
    }
}
