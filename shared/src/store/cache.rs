//! In-process read-through caches for the hot path: keys by hash, catalog rows by model, and
//! owner balances. Entries live for the configured TTL (≤ 5 s), so revocations and price
//! changes show within 5 s while a warm request reads nothing from the store.
//!
//! Every cache is bounded: past its capacity the entries fetched longest ago (the expired ones
//! first) make room, one at a time; a cache is never emptied whole. Lookups of unknown key hashes
//! are remembered apart, in a small cache of their own, so a flood of made-up keys can neither
//! evict real keys nor the copies served while the store is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{ApiKey, ModelPrice};
use crate::error::StoreError;
use crate::money::Nanos;
use crate::store::Stores;
use crate::ttl::{TtlCache, MAX_ENTRIES};

/// Bound on remembered unknown key hashes (each spares the store one read for a TTL).
pub const MAX_UNKNOWN_KEYS: usize = 4_096;

/// Store reads of one key (or balance) while settlements for it keep landing mid-read; the last
/// one is served as read.
const MAX_KEY_READS: u32 = 4;

/// Reads `key` from the store through `read` into `cache`. A settlement written while it was
/// read may or may not be in what was read, so the value is then read again (at most
/// [`MAX_KEY_READS`] times; the last read is served as read). `Ok(None)` from `read` caches
/// nothing.
async fn read_settled<V, F, Fut>(cache: &TtlCache<String, V>, key: &str, mut read: F) -> Result<Option<V>, StoreError>
where
    V: Clone,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let token = cache.read_token();
        let read_at = Instant::now();
        let Some(value) = read().await? else { return Ok(None) };
        if cache.insert_unless_written(key.to_owned(), value.clone(), read_at, token) || attempt >= MAX_KEY_READS {
            return Ok(Some(value));
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
    pub outbox: crate::store::outbox::Outbox,
    /// Settlements running in the background.
    pub backlog: Arc<crate::store::outbox::Backlog>,
    /// Costs counted by this instance and not yet written.
    pub spend: crate::spend::SpendView,
    /// Held while a settled cost moves from the held costs into the cached key and balance,
    /// and while a spend is read from both: a read never sees a cost in neither place, nor in
    /// both.
    settling: std::sync::Mutex<()>,
}

impl Cached {
    /// Admits a request once the settlements not yet written (running, or in the outbox) leave
    /// room in the backlog: a full backlog slows admissions down to the pace the store writes
    /// at, and refuses them after [`BACKLOG_WAIT`](crate::store::outbox::BACKLOG_WAIT).
    pub async fn admit(&self) -> Result<(), crate::error::GatewayError> {
        let deadline = tokio::time::Instant::now() + crate::store::outbox::BACKLOG_WAIT;
        loop {
            // Registered before the check: an ending settlement between the two is not missed.
            let finished = self.backlog.finished.notified();
            let pending = self.backlog.running() + self.outbox.len();
            if pending < self.backlog.limit {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return Err(crate::error::GatewayError::SettlementBacklog { pending });
            }
        }
    }

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
            outbox: crate::store::outbox::Outbox::default(),
            backlog: Arc::default(),
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
        // The held cost of a settlement is released once written, so a stale copy would
        // undercount the spend: see [`read_settled`].
        let read = || async move { Ok(self.stores.keys.key_by_hash(key_hash).await?.map(Arc::new)) };
        match read_settled(&self.keys, &hash, read).await {
            Ok(Some(key)) => {
                self.unknown_keys.remove(&hash);
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
        let read = || async move { self.stores.balances.balance(owner).await.map(Some) };
        match read_settled(&self.balances, owner, read).await {
            Ok(fetched) => Ok(fetched.flatten()),
            // An owner without a balance stays without one; a balance itself cannot be verified.
            Err(err) => match self.balances.stale(&owner.to_owned()) {
                Some(None) => Ok(None),
                _ => Err(err),
            },
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
