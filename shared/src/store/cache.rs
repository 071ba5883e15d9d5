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

/// Store reads of one key (or balance) while settlements for it keep landing mid-read; the last
/// one is served as read.
const MAX_KEY_READS: u32 = 4;

/// Oldest entry served while the store is unavailable.
const STALE_LIMIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
struct Entry<V> {
    value: V,
    /// When the read that produced the value began.
    fetched: Instant,
    /// When it was stored here (the read had ended).
    inserted: Instant,
    /// Position in [`Entries::by_age`].
    age: u64,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Keys by fetch order, oldest first: what is evicted first.
    by_age: BTreeMap<u64, K>,
    next_age: u64,
    /// Store writes settled so far (see [`TtlCache::settle_write`]).
    writes: u64,
    /// The write count when each key's last write settled (bounded: cleared past capacity).
    settled: HashMap<K, u64>,
    /// The write count when `settled` was last cleared.
    forgotten_at: u64,
}

impl<K: Eq + Hash + Clone, V> Entries<K, V> {
    fn insert(&mut self, capacity: usize, key: K, value: V, read_at: Instant) {
        if let Some(previous) = self.map.remove(&key) {
            self.by_age.remove(&previous.age);
        }
        while self.map.len() >= capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.map.remove(&oldest);
        }
        let age = self.next_age;
        self.next_age += 1;
        self.by_age.insert(age, key.clone());
        self.map.insert(key, Entry { value, fetched: read_at, inserted: Instant::now(), age });
    }

    fn remove(&mut self, key: &K) {
        if let Some(entry) = self.map.remove(key) {
            self.by_age.remove(&entry.age);
        }
    }
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
            entries: RwLock::new(Entries {
                map: HashMap::new(),
                by_age: BTreeMap::new(),
                next_age: 0,
                writes: 0,
                settled: HashMap::new(),
                forgotten_at: 0,
            }),
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
        let Ok(mut entries) = self.entries.write() else { return };
        entries.insert(self.capacity, key, value, read_at);
    }

    /// Taken before a store read, for [`TtlCache::insert_unless_written`].
    pub fn read_token(&self) -> u64 {
        self.entries.read().map_or(0, |entries| entries.writes)
    }

    /// Stores a value read from the store at `read_at`, unless a write to `key` settled since
    /// `token` was taken: the value may or may not hold that write, so it is not kept (the
    /// caller reads again). Returns whether it was stored.
    pub fn insert_unless_written(&self, key: K, value: V, read_at: Instant, token: u64) -> bool {
        let Ok(mut entries) = self.entries.write() else { return false };
        let written = entries.forgotten_at > token || entries.settled.get(&key).is_some_and(|at| *at > token);
        if !written {
            entries.insert(self.capacity, key, value, read_at);
        }
        !written
    }

    /// A write to `key` that began at `began` and was done by `ended` is settled: a cached value
    /// read wholly before it began gets `change` (it lacks the write); one read after it ended
    /// already holds it; one read while it ran is dropped, since it may or may not hold it (the
    /// next read does). A read in flight now will not be stored (see
    /// [`TtlCache::insert_unless_written`]).
    pub fn settle_write(&self, key: &K, began: Instant, ended: Instant, change: impl FnOnce(&mut V)) {
        let Ok(mut guard) = self.entries.write() else { return };
        let entries = &mut *guard;
        entries.writes += 1;
        if entries.settled.len() >= self.capacity {
            entries.settled.clear();
            entries.forgotten_at = entries.writes;
        }
        entries.settled.insert(key.clone(), entries.writes);
        let Some(entry) = entries.map.get_mut(key) else { return };
        if entry.inserted < began {
            change(&mut entry.value);
        } else if entry.fetched <= ended {
            entries.remove(key);
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
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
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
    /// Held while a settled cost moves from the held costs into the cached key and balance,
    /// and while a spend is read from both: a read never sees a cost in neither place, nor in
    /// both.
    settling: std::sync::Mutex<()>,
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
            settling: std::sync::Mutex::new(()),
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
        // A settlement written while the key was read may or may not be in what was read: read
        // again (its held cost was released, so a stale copy would undercount the spend).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.keys.read_token();
            let read_at = Instant::now();
            match self.stores.keys.key_by_hash(key_hash).await {
                Ok(Some(key)) => {
                    let key = Arc::new(key);
                    self.unknown_keys.remove(&hash);
                    if self.keys.insert_unless_written(hash.clone(), key.clone(), read_at, token)
                        || attempt >= MAX_KEY_READS
                    {
                        return Ok(Some(key));
                    }
                }
                Ok(None) => {
                    self.keys.remove(&hash);
                    self.unknown_keys.insert(hash, ());
                    return Ok(None);
                }
                // Known keys keep working while the store is down; unknown ones cannot be
                // checked, and neither can spend: keys with a spend cap fail closed.
                Err(err) => {
                    return match self.keys.stale(&hash) {
                        Some(key) if key.spend_cap.is_none() => {
                            tracing::warn!(error = %err, "store unavailable: serving a cached key");
                            Ok(Some(key))
                        }
                        _ => Err(err),
                    }
                }
            }
        }
    }

    /// Counts a request's cost in this instance's view now, before settlement writes it.
    pub fn hold_spend(&self, request_id: &str, held: crate::spend::Held) -> bool {
        self.spend.hold(request_id, held)
    }

    /// The cost of `request_id` is in the store (written between `began` and `ended`): moves it
    /// from the held costs into the cached key and balance where those were read before the
    /// write (see [`TtlCache::settle_write`]).
    pub fn confirm_spend(&self, request_id: &str, began: Instant, ended: Instant) {
        let _settling = self.settling();
        let Some(held) = self.spend.release(request_id) else { return };
        self.keys.settle_write(&held.key_hash, began, ended, |key| {
            let mut copy = ApiKey::clone(key);
            copy.spent = copy.spent.saturating_add(held.cost);
            *key = Arc::new(copy);
        });
        if held.debit {
            let cost = i64::try_from(held.cost.0).unwrap_or(i64::MAX);
            self.balances.settle_write(&held.owner, began, ended, |balance| {
                if let Some(b) = balance {
                    *b = b.saturating_sub(cost);
                }
            });
        }
    }

    fn settling(&self) -> std::sync::MutexGuard<'_, ()> {
        self.settling.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the key has spent as this instance sees it now: the cached stored spend (read again
    /// if a settlement dropped it) plus held costs, read together. `key` (the copy the request
    /// authenticated with, which may predate a settlement) is the last resort.
    pub async fn spent(&self, key: &ApiKey) -> Nanos {
        for _ in 0..MAX_KEY_READS {
            {
                let _settling = self.settling();
                if let Some(current) = self.keys.get(&key.key_hash) {
                    return current.spent.saturating_add(self.spend.pending_for_key(&key.key_hash));
                }
            }
            if self.key(&key.key_hash).await.is_err() {
                break;
            }
        }
        let _settling = self.settling();
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.balances.read_token();
            let read_at = Instant::now();
            match self.stores.balances.balance(owner).await {
                Ok(fetched) => {
                    if self.balances.insert_unless_written(owner.to_owned(), fetched, read_at, token)
                        || attempt >= MAX_KEY_READS
                    {
                        return Ok(fetched);
                    }
                }
                // An owner without a balance stays without one; a balance itself cannot be
                // verified.
                Err(err) => {
                    return match self.balances.stale(&owner.to_owned()) {
                        Some(None) => Ok(None),
                        _ => Err(err),
                    }
                }
            }
        }
    }

    /// The owner's prepaid balance left as this instance sees it (held debits subtracted, read
    /// together with the cached balance).
    pub async fn balance_left(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        let pending = || i64::try_from(self.spend.pending_for_owner(owner).0).unwrap_or(i64::MAX);
        let mut fetched = None;
        for _ in 0..MAX_KEY_READS {
            {
                let _settling = self.settling();
                if let Some(current) = self.balances.get(&owner.to_owned()) {
                    return Ok(current.map(|balance| balance.saturating_sub(pending())));
                }
            }
            fetched = Some(self.balance(owner).await?);
        }
        let _settling = self.settling();
        Ok(fetched.flatten().map(|balance| balance.saturating_sub(pending())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_writes_are_counted_once_whatever_the_read_overlapped() {
        let cache: TtlCache<&str, u64> = TtlCache::new(Duration::from_secs(60));
        // Read wholly before the write: the write is added.
        cache.insert("before", 10);
        // A read in flight while a write settles is not kept: it may or may not hold the write.
        let token = cache.read_token();
        let read_at = Instant::now();
        let began = Instant::now();
        cache.settle_write(&"before", began, Instant::now(), |v| *v += 5);
        assert_eq!(cache.get(&"before"), Some(15));
        cache.settle_write(&"racing", began, Instant::now(), |v| *v += 5);
        assert!(!cache.insert_unless_written("racing", 10, read_at, token), "a write settled mid-read");
        assert_eq!(cache.get(&"racing"), None);
        let token = cache.read_token();
        assert!(cache.insert_unless_written("racing", 15, Instant::now(), token), "read again after it");
        // Read while the write ran (stored after it began): dropped, not added to twice.
        let began = Instant::now();
        cache.insert("during", 15);
        cache.settle_write(&"during", began, Instant::now(), |v| *v += 5);
        assert_eq!(cache.get(&"during"), None, "the next read has the write");
        // Read after the write ended: it already holds it.
        let (began, ended) = (Instant::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        cache.insert("after", 15);
        cache.settle_write(&"after", began, ended, |v| *v += 5);
        assert_eq!(cache.get(&"after"), Some(15));
    }

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
