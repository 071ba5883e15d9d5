//! Storage ports: one narrow trait per table, an embedded adapter and a DynamoDB adapter.
//!
//! Both adapters pass the same test suite (`tests/tests/stores.rs`). Caching for the hot path
//! lives in [`cache`], above the ports, so adapters stay plain.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{ApiKey, Charge, KeyUpdate, ModelPrice, StoredResponse, Template, UsageFilter, UsageRecord};
use crate::error::StoreError;
use crate::money::Nanos;

pub mod cache;
pub mod dynamo;
pub mod local;
pub mod outbox;

/// A hard-cap reservation: money set aside for one request until it settles or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The request id.
    pub id: String,
    pub amount: Nanos,
    /// Unix seconds after which the reservation is released by [`KeyStore::release_expired`].
    pub expires_at: i64,
}

/// API keys, found by the SHA-256 of their secret.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key; fails with `Conflict` when the hash or id exists.
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Applies `update`; `None` when no key has this id.
    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<ApiKey>, StoreError>;
    /// Sets `reservation.amount` aside under the key's hard cap, atomically; `false` if it does not fit.
    async fn reserve(&self, key_hash: &str, reservation: &Reservation) -> Result<bool, StoreError>;
    /// Releases reservations of this key whose expiry has passed; returns how many.
    async fn release_expired(&self, key_hash: &str, now_unix: i64) -> Result<usize, StoreError>;
}

/// The catalog: one row per (model, provider).
#[async_trait]
pub trait PriceStore: Send + Sync {
    async fn put_price(&self, price: &ModelPrice) -> Result<(), StoreError>;
    async fn prices_for(&self, model: &str) -> Result<Vec<ModelPrice>, StoreError>;
    async fn list_prices(&self) -> Result<Vec<ModelPrice>, StoreError>;
}

/// Usage records and the charges they carry.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Writes the record and applies the charge in one atomic step. Idempotent by request id:
    /// returns `false` (and charges nothing) when the record already exists.
    async fn record_usage(&self, record: &UsageRecord, charge: &Charge) -> Result<bool, StoreError>;
    async fn query_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, StoreError>;
}

/// Prepaid owner balances in nano-USD (may dip below zero by the last request's cost).
#[async_trait]
pub trait BalanceStore: Send + Sync {
    /// Adds `delta` (may be negative) and returns the new balance.
    async fn add_balance(&self, owner: &str, delta: i64) -> Result<i64, StoreError>;
    /// The owner's balance, or `None` when the owner has no prepaid balance.
    async fn balance(&self, owner: &str) -> Result<Option<i64>, StoreError>;
}

/// Prompt templates, per owner plus global ones.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores a new template; `Conflict` when the owner already has one with this name.
    async fn insert_template(&self, template: &Template) -> Result<(), StoreError>;
    async fn template(&self, id: &str) -> Result<Option<Template>, StoreError>;
    /// The template of `owner` (or a global one, with `GLOBAL_OWNER`) with this name.
    async fn template_by_name(&self, owner: &str, name: &str) -> Result<Option<Template>, StoreError>;
    /// Templates of one owner (`GLOBAL_OWNER` for the global ones), by name.
    async fn templates_of(&self, owner: &str) -> Result<Vec<Template>, StoreError>;
    /// Replaces a template; `Conflict` when its new name is taken by another of the owner's.
    async fn replace_template(&self, template: &Template) -> Result<(), StoreError>;
    async fn delete_template(&self, id: &str) -> Result<bool, StoreError>;
}

/// Stored responses, for `previous_response_id` and `/v1/responses/{id}`.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Writes a response in one step (it is never visible half-written).
    async fn put_response(&self, response: &StoredResponse) -> Result<(), StoreError>;
    /// The response, if it exists and has not expired (any owner: callers check ownership).
    async fn response(&self, id: &str, now_unix: i64) -> Result<Option<StoredResponse>, StoreError>;
    async fn delete_response(&self, id: &str) -> Result<bool, StoreError>;
}

/// Liveness of the store, for `/readyz`.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The ports the gateway uses, all served by one adapter.
#[derive(Clone)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub prices: Arc<dyn PriceStore>,
    pub usage: Arc<dyn UsageStore>,
    pub balances: Arc<dyn BalanceStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub responses: Arc<dyn ResponseStore>,
    pub health: Arc<dyn StoreHealth>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

impl Stores {
    /// Serves every port from one adapter.
    pub fn from_adapter<A>(adapter: A) -> Self
    where
        A: KeyStore + PriceStore + UsageStore + BalanceStore + TemplateStore + ResponseStore + StoreHealth + 'static,
    {
        let adapter = Arc::new(adapter);
        Stores {
            keys: adapter.clone(),
            prices: adapter.clone(),
            usage: adapter.clone(),
            balances: adapter.clone(),
            templates: adapter.clone(),
            responses: adapter.clone(),
            health: adapter,
        }
    }
}

/// Opens the configured adapter.
pub async fn open(config: &crate::config::StoreConfig) -> Result<Stores, StoreError> {
    match config {
        crate::config::StoreConfig::Local { dir } => Ok(Stores::from_adapter(local::LocalStore::open(dir)?)),
        crate::config::StoreConfig::Dynamo { table_prefix } => {
            Ok(Stores::from_adapter(dynamo::DynamoStore::from_env(table_prefix).await))
        }
    }
}
