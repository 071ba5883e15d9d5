//! The gateway's shared state, built once per process (cold start): configuration, the cached
//! stores, the limiter, the provider dispatcher and the circuit breakers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::GatewayError;
use crate::limits::RateLimiter;
use crate::providers::Dispatcher;
use crate::routing::{BreakerBoard, Breakers, LocalBreakerBoard};
use crate::store::cache::Cached;

/// How accounting writes are scheduled relative to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleMode {
    /// Standalone server: the process outlives the response, so settle in the background.
    Background,
    /// Lambda: the environment may freeze once the body ends, so settle before ending it
    /// (after the last byte of the answer has been sent).
    BeforeBodyEnds,
}

/// Counters exported in logs and `/readyz`.
#[derive(Debug, Default)]
pub struct Counters {
    pub limiter_fail_open: AtomicU64,
}

/// Everything a request needs, built once per process (cold start) and shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub cached: Arc<Cached>,
    pub limiter: Arc<dyn RateLimiter>,
    pub dispatcher: Dispatcher,
    pub settle_mode: SettleMode,
    pub tasks: TaskTracker,
    pub counters: Arc<Counters>,
    /// Circuit breakers per (provider, model), in this process, shared on a board.
    pub breakers: Arc<Breakers>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settle_mode", &self.settle_mode).finish_non_exhaustive()
    }
}

/// Builds the shared state from the configuration (no I/O that can wait: clients connect lazily).
pub async fn build_state(mut config: Config, settle_mode: SettleMode) -> Result<AppState, GatewayError> {
    crate::secrets::resolve(&mut config).await;
    if config.emf_metrics {
        crate::metrics::enable();
    }
    let stores = crate::store::open(&config.store).await?;
    let (limiter, board): (Arc<dyn RateLimiter>, Arc<dyn BreakerBoard>) = match &config.redis_url {
        Some(url) => {
            let ca = match &config.redis_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| GatewayError::Internal(format!("MESH_REDIS_CA_FILE {}: {e}", path.display())))?,
                ),
                None => None,
            };
            let redis = crate::limits::redis::RedisLimiter::new(
                url.expose(),
                config.redis_cluster,
                config.redis_timeout,
                config.redis_breaker_interval,
                ca,
            )
            .map_err(|e| GatewayError::Internal(format!("redis: {e}")))?;
            let board = Arc::new(redis.breaker_board());
            (Arc::new(redis), board)
        }
        None => (Arc::new(crate::limits::memory::MemoryLimiter::new()), Arc::new(LocalBreakerBoard)),
    };
    state_with(config, stores, limiter, board, settle_mode)
}

/// Builds the state from given adapters (tests pass their own).
pub fn state_with(
    config: Config,
    stores: crate::store::Stores,
    limiter: Arc<dyn RateLimiter>,
    board: Arc<dyn BreakerBoard>,
    settle_mode: SettleMode,
) -> Result<AppState, GatewayError> {
    let dispatcher =
        Dispatcher::new(&config.providers, config.upstream)?.with_bedrock_s3_buckets(config.bedrock_s3_buckets.clone());
    let breakers = Arc::new(Breakers::new(config.routing, board));
    Ok(AppState {
        cached: Arc::new({
            let mut cached = Cached::new(stores, config.cache_ttl);
            cached.backlog = Arc::new(crate::store::outbox::Backlog::with_limit(config.settlement_backlog));
            cached
        }),
        config: Arc::new(config),
        limiter,
        dispatcher,
        settle_mode,
        tasks: TaskTracker::new(),
        counters: Arc::new(Counters::default()),
        breakers,
    })
}

impl AppState {
    /// Whether another instance reported this pair's breaker open; mirrors it locally so later
    /// checks need no round trip.
    pub async fn peer_breaker_open(&self, pair: &str) -> bool {
        self.breakers.peer_open(pair).await
    }

    /// Tells other instances that this pair's breaker opened.
    pub fn announce_breaker_open(&self, pair: &str) {
        self.breakers.announce_open(pair);
    }
}
