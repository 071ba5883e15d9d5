//! A bounded map whose entries live for a TTL, with cheap concurrent reads: what the read
//! caches and the limiter's view of peers' circuit breakers are built on.
//!
//! Past its capacity the entries fetched longest ago (the expired ones first) make room, one at a
//! time; the map is never emptied whole. Writes settled through [`TtlCache::settle_write`] keep a
//! cached value exact across a concurrent store read.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Default bound on entries per cache.
pub const MAX_ENTRIES: usize = 100_000;

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
