//! A gateway started in process on a loopback port, over a chosen store adapter and limiter.

use mesh::app::{state_with, AppState, SettleMode};
use mesh::config::{Config, FailMode, ProviderApi, ProviderConfig, Secret};
use mesh::domain::{now_unix, ApiKey, CapMode, KeyStatus, ModelPrice, UsageFilter, UsageRecord};
use mesh::ids::new_key_secret;
use mesh::limits::RateLimiter;
use mesh::money::{Nanos, UsdPerMtok};
use mesh::routing::{BreakerBoard, LocalBreakerBoard};
use mesh::store::Stores;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

use crate::services;
use crate::stub::Stub;
use crate::wait::{wait_for, PATIENCE};

/// Which store adapter a gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Dynamo,
}

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub store: StoreKind,
    /// Use Redis for limits (else the in-process limiter).
    pub redis: bool,
    /// Share limiter keys with another gateway (same prefix).
    pub redis_prefix: Option<String>,
    pub fail_mode: FailMode,
    pub default_model: Option<String>,
    pub settle_mode: SettleMode,
    pub configure: fn(&mut Config),
    /// Share another gateway's stores (several instances over one store).
    pub stores: Option<Stores>,
    /// Redis URL for the limiter (default: the test Redis).
    pub redis_url: Option<String>,
    /// More providers (e.g. stubs of other provider APIs).
    pub providers: Vec<ProviderConfig>,
    /// CA (PEM) for a `rediss://` limiter.
    pub redis_ca: Option<Vec<u8>>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            store: StoreKind::Local,
            redis: false,
            redis_prefix: None,
            fail_mode: FailMode::Open,
            default_model: None,
            settle_mode: SettleMode::Background,
            configure: |_| {},
            stores: None,
            redis_url: None,
            providers: Vec::new(),
            redis_ca: None,
        }
    }
}

impl GatewayOptions {
    pub fn on(store: StoreKind) -> Self {
        GatewayOptions { store, ..GatewayOptions::default() }
    }
}

/// A running gateway with a stub provider behind it.
pub struct Gateway {
    pub url: String,
    pub state: AppState,
    pub stub: Stub,
    pub stores: Stores,
    pub http: reqwest::Client,
    dir: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Opens a fresh store of the given kind; returns it and the directory to clean up.
pub async fn fresh_stores(kind: StoreKind) -> (Stores, Option<PathBuf>) {
    match kind {
        StoreKind::Local => {
            let dir = std::env::temp_dir().join(format!("mesh-test-{}", services::unique_prefix()));
            let store = mesh::store::local::LocalStore::open(&dir).expect("open local store");
            (Stores::from_adapter(store), Some(dir))
        }
        StoreKind::Dynamo => {
            let client = services::dynamodb_client().await;
            let store = mesh::store::dynamo::DynamoStore::new(client, &services::unique_prefix());
            store.create_tables().await.expect("create tables in the emulator");
            (Stores::from_adapter(store), None)
        }
    }
}

/// The provider entries every test gateway has: `openai` and `backup` (the stub), `dead` (a
/// closed port) and `nokey` (no credential).
pub fn stub_providers(stub_url: &str) -> Vec<ProviderConfig> {
    vec![
        ProviderConfig {
            name: "openai".to_owned(),
            api: ProviderApi::Responses,
            base_url: stub_url.to_owned(),
            api_key: Some(Secret::new("sk-stub-upstream-secret")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        },
        ProviderConfig {
            name: "backup".to_owned(),
            api: ProviderApi::Responses,
            base_url: stub_url.to_owned(),
            api_key: Some(Secret::new("sk-backup-secret")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        },
        ProviderConfig {
            name: "dead".to_owned(),
            api: ProviderApi::Responses,
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            api_key: Some(Secret::new("sk-dead")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        },
        ProviderConfig {
            name: "nokey".to_owned(),
            api: ProviderApi::Responses,
            base_url: stub_url.to_owned(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        },
    ]
}

impl Gateway {
    pub async fn start(options: GatewayOptions) -> Gateway {
        let stub = Stub::start().await;
        let (stores, dir) = match &options.stores {
            Some(stores) => (stores.clone(), None),
            None => fresh_stores(options.store).await,
        };
        let mut config = Config {
            rate_limit_fail_mode: options.fail_mode,
            default_model: options.default_model.clone(),
            // Patient with Redis: on a loaded test machine a round trip can take longer than the
            // production 50 ms, and a timeout lets a request through uncounted (fail-open) or
            // refuses it (fail-closed), which is not what a test of exact limits is about. The
            // tests of a slow Redis set their own timeout.
            redis_timeout: std::time::Duration::from_secs(5),
            ..Config::default()
        };
        for provider in stub_providers(&stub.url).into_iter().chain(options.providers.iter().cloned()) {
            config.providers.insert(provider.name.clone(), provider);
        }
        (options.configure)(&mut config);
        let (limiter, board): (Arc<dyn RateLimiter>, Arc<dyn BreakerBoard>) =
            if options.redis || options.redis_url.is_some() {
                let url = options.redis_url.clone().unwrap_or_else(services::redis_url);
                let prefix = options.redis_prefix.clone().unwrap_or_else(services::unique_prefix);
                let redis = mesh::limits::redis::RedisLimiter::new(
                    &url,
                    config.redis_cluster,
                    config.redis_timeout,
                    config.redis_breaker_interval,
                    options.redis_ca.clone(),
                )
                .expect("redis limiter")
                .with_prefix(&prefix);
                let board = Arc::new(redis.breaker_board());
                (Arc::new(redis), board)
            } else {
                (Arc::new(mesh::limits::memory::MemoryLimiter::new()), Arc::new(LocalBreakerBoard))
            };
        let state = state_with(config, stores.clone(), limiter, board, options.settle_mode).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        // The standalone front door itself (TCP_NODELAY, graceful shutdown).
        let serving = state.clone();
        let task = tokio::spawn(async move {
            let _ = mesh::server::serve(serving, listener).await;
        });
        Gateway { url: format!("http://{addr}"), state, stub, stores, http: reqwest::Client::new(), dir, task }
    }

    /// Creates a key with the given changes; returns (secret, key).
    pub async fn create_key(&self, change: impl FnOnce(&mut ApiKey)) -> (String, ApiKey) {
        let secret = new_key_secret().expect("csprng");
        let mut key = ApiKey {
            id: secret.id,
            key_hash: secret.hash,
            name: "test".to_owned(),
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
        change(&mut key);
        self.stores.keys.insert_key(&key).await.expect("insert key");
        (secret.secret, key)
    }

    /// Adds a catalog row served by the stub (`openai`) at the given prices per Mtok.
    pub async fn put_price(
        &self,
        model: &str,
        upstream: &str,
        input: &str,
        output: &str,
        cached: Option<&str>,
    ) -> ModelPrice {
        self.put_row(model, "openai", upstream, input, output, cached).await
    }

    pub async fn put_row(
        &self,
        model: &str,
        provider: &str,
        upstream: &str,
        input: &str,
        output: &str,
        cached: Option<&str>,
    ) -> ModelPrice {
        let row = ModelPrice {
            model: model.to_owned(),
            provider: provider.to_owned(),
            upstream_model: upstream.to_owned(),
            input_usd_per_mtok: Some(UsdPerMtok::from_usd_str(input).expect("price")),
            output_usd_per_mtok: Some(UsdPerMtok::from_usd_str(output).expect("price")),
            cached_input_usd_per_mtok: cached.map(|c| UsdPerMtok::from_usd_str(c).expect("price")),
            context_length: Some(128_000),
            max_output_tokens: Some(16_384),
            is_free: false,
            is_default: true,
            enabled: true,
            priority: None,
        };
        self.stores.prices.put_price(&row).await.expect("put price");
        row
    }

    /// `POST /v1/responses` with a bearer secret.
    pub async fn post(&self, secret: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/responses", self.url))
            .bearer_auth(secret)
            .json(body)
            .send()
            .await
            .expect("gateway answers")
    }

    /// Waits until the usage record of `request_id` is written (settlement is asynchronous).
    pub async fn usage_of(&self, request_id: &str) -> UsageRecord {
        wait_for(&format!("the usage record of {request_id} is written"), PATIENCE, || async {
            let records = self.stores.usage.query_usage(&UsageFilter::default()).await.expect("query usage");
            let count = records.len();
            records.into_iter().find(|r| r.request_id == request_id).ok_or_else(|| format!("{count} other records"))
        })
        .await
    }

    /// All usage records of a key.
    pub async fn usage_of_key(&self, key_id: &str) -> Vec<UsageRecord> {
        self.stores
            .usage
            .query_usage(&UsageFilter { key_id: Some(key_id.to_owned()), ..UsageFilter::default() })
            .await
            .expect("query usage")
    }

    /// The key as stored now.
    pub async fn key(&self, id: &str) -> ApiKey {
        self.stores.keys.key_by_id(id).await.expect("read key").expect("key exists")
    }

    /// Waits for every background task of the gateway (request work, stored responses and
    /// settlement) to finish.
    pub async fn settled(&self) {
        wait_for("the gateway's background tasks (stored responses, settlement) finish", PATIENCE, || async {
            if self.state.tasks.is_empty() {
                Ok(())
            } else {
                Err(format!("{} tasks running", self.state.tasks.len()))
            }
        })
        .await;
    }
}

/// Runs a scenario once per store adapter.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$scenario($crate::StoreKind::Local).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamodb() {
                super::$scenario($crate::StoreKind::Dynamo).await;
            }
        }
    };
}
