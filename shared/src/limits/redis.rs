//! The Redis limiter: both windows checked and counted by one Lua script in one round trip,
//! with the time read inside the script (`TIME`), so every gateway instance agrees on windows.
//!
//! Keys of one API key share the hash tag `{<key id>}`, so the script runs on Redis Cluster and
//! ElastiCache Serverless. Each window is a hash `{w: window start, c: count}` with an expiry,
//! so nothing outlives two windows. A command timeout and a circuit breaker bound what a slow
//! or dead Redis can cost: one timeout per breaker interval.
//!
//! [`RedisBreakerBoard`] shares open circuit breakers between instances over the same
//! connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{LimitDecision, LimiterError, RateLimiter, Window};
use crate::money::Nanos;
use crate::routing::BreakerBoard;
use crate::ttl::TtlCache;

const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1])
local rpm = tonumber(ARGV[1])
local rpd = tonumber(ARGV[2])
local mw = now - (now % 60)
local dw = now - (now % 86400)
local function current(key, window)
  local v = redis.call('HMGET', key, 'w', 'c')
  if v[1] and tonumber(v[1]) == window then return tonumber(v[2]) or 0 end
  return 0
end
local mc = 0
local dc = 0
if rpm >= 0 then mc = current(KEYS[1], mw) end
if rpd >= 0 then dc = current(KEYS[2], dw) end
local refused = 0
if rpm >= 0 and mc >= rpm then
  refused = 1
elseif rpd >= 0 and dc >= rpd then
  refused = 2
end
if refused == 0 then
  if rpm >= 0 then
    mc = mc + 1
    redis.call('HSET', KEYS[1], 'w', mw, 'c', mc)
    redis.call('EXPIRE', KEYS[1], 120)
  end
  if rpd >= 0 then
    dc = dc + 1
    redis.call('HSET', KEYS[2], 'w', dw, 'c', dc)
    redis.call('EXPIRE', KEYS[2], 172800)
  end
end
local spent = '-1'
if ARGV[3] ~= '-1' then
  local shared = redis.call('GET', KEYS[3])
  if (not shared) or tonumber(shared) < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[3], ARGV[3])
    shared = ARGV[3]
  end
  redis.call('EXPIRE', KEYS[3], 604800)
  spent = shared
end
return {refused, mc, dc, now, spent}
";

/// How long a key's shared spend is kept without use (it is rebuilt from the store after).
const SPEND_TTL_SECS: i64 = 604_800;

/// A circuit breaker: after a failure, skip the backend for one interval, then let one probe through.
#[derive(Debug)]
pub struct Breaker {
    epoch: Instant,
    interval: Duration,
    /// Milliseconds since `epoch` until which the circuit is open (0 = closed).
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub fn new(interval: Duration) -> Self {
        Breaker { epoch: Instant::now(), interval, open_until_ms: AtomicU64::new(0), probing: AtomicBool::new(false) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to the backend now.
    pub fn allow(&self) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        if self.now_ms() < open_until {
            return false;
        }
        // Half-open: exactly one caller probes.
        !self.probing.swap(true, Ordering::AcqRel)
    }

    pub fn record_success(&self) {
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn record_failure(&self) {
        let until = self.now_ms().saturating_add(u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX)).max(1);
        self.open_until_ms.store(until, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }
}

/// A connection to a standalone Redis, or to a Redis Cluster (ElastiCache Serverless only
/// speaks cluster mode). Both carry every command; the cluster client routes by hash slot.
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the limiter's connection comes from.
enum Connection {
    Single(ConnectionManager),
    /// Connected in the background (never on the request path); absent until then.
    Cluster(Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>),
}

/// The connection with its command timeout and its availability breaker, shared by the
/// limiter and the breaker board.
struct Backend {
    connection: Connection,
    timeout: Duration,
    breaker: Breaker,
}

/// The production limiter.
pub struct RedisLimiter {
    backend: Arc<Backend>,
    script: redis::Script,
    prefix: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("timeout", &self.backend.timeout).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Prepares a lazily connected, self-reconnecting client (no I/O at cold start). With
    /// `ca_pem`, a `rediss://` server is verified against that CA instead of the public roots.
    pub fn new(
        url: &str,
        cluster: bool,
        timeout: Duration,
        breaker_interval: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, LimiterError> {
        let unavailable = |e: redis::RedisError| LimiterError::Unavailable(format!("{:?}", e.kind()));
        if cluster {
            return Ok(Self::assemble(
                Connection::Cluster(Self::connect_cluster(url, timeout, ca_pem)?),
                timeout,
                breaker_interval,
            ));
        }
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
            )
            .map_err(unavailable)?,
            None => redis::Client::open(url).map_err(unavailable)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| LimiterError::Unavailable(format!("{:?}", e.kind())))?;
        Ok(Self::assemble(Connection::Single(connection), timeout, breaker_interval))
    }

    fn assemble(connection: Connection, timeout: Duration, breaker_interval: Duration) -> Self {
        RedisLimiter {
            backend: Arc::new(Backend { connection, timeout, breaker: Breaker::new(breaker_interval) }),
            script: redis::Script::new(SCRIPT),
            prefix: "mesh:rl".to_owned(),
        }
    }

    /// Starts connecting to a cluster in the background, retrying until it succeeds.
    fn connect_cluster(
        url: &str,
        timeout: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>, LimiterError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(vec![url])
            .connection_timeout(timeout.max(Duration::from_millis(500)))
            .response_timeout(timeout)
            .retries(1);
        if let Some(root_cert) = ca_pem {
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) });
        }
        let client = builder.build().map_err(|e| LimiterError::Unavailable(format!("{:?}", e.kind())))?;
        let cell = Arc::new(tokio::sync::OnceCell::new());
        let filled = cell.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match client.get_async_connection().await {
                    Ok(connection) => {
                        let _ = filled.set(connection);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = ?err.kind(), "redis cluster not reachable yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(cell)
    }

    /// The key's shared spend (nano-USD), beside its windows under the same hash tag.
    fn spend_key(&self, key_id: &str) -> String {
        format!("{}:{{{key_id}}}:s", self.prefix)
    }

    /// Uses a different key prefix (tests isolate themselves with it).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// A board sharing open circuit breakers through this limiter's Redis (same connection,
    /// key prefix and timeout).
    pub fn breaker_board(&self) -> RedisBreakerBoard {
        RedisBreakerBoard {
            backend: self.backend.clone(),
            prefix: self.prefix.clone(),
            peer_breakers: TtlCache::new(Duration::from_secs(1)),
        }
    }
}

impl Backend {
    /// The connection to use now.
    fn link(&self) -> Result<Link, LimiterError> {
        match &self.connection {
            Connection::Single(manager) => Ok(Link::Single(manager.clone())),
            Connection::Cluster(cell) => {
                cell.get().cloned().map(Link::Cluster).ok_or_else(|| LimiterError::Unavailable("connecting".to_owned()))
            }
        }
    }

    async fn run<T, F>(&self, call: F) -> Result<T, LimiterError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(LimiterError::CircuitOpen);
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.breaker.record_success();
                Ok(value)
            }
            Ok(Err(err)) => {
                self.breaker.record_failure();
                Err(LimiterError::Unavailable(format!("{:?}", err.kind())))
            }
            Err(_) => {
                self.breaker.record_failure();
                Err(LimiterError::Timeout)
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key_id: &str, rpm: Option<u64>, rpd: Option<u64>) -> Result<LimitDecision, LimiterError> {
        Ok(self.check_with_spend(key_id, rpm, rpd, None).await?.0)
    }

    async fn check_with_spend(
        &self,
        key_id: &str,
        rpm: Option<u64>,
        rpd: Option<u64>,
        spent: Option<Nanos>,
    ) -> Result<(LimitDecision, Option<Nanos>), LimiterError> {
        let mut connection = self.backend.link()?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}:{{{key_id}}}:m", self.prefix))
            .key(format!("{}:{{{key_id}}}:d", self.prefix))
            .key(self.spend_key(key_id))
            .arg(rpm.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)))
            .arg(rpd.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)))
            .arg(spent.map_or_else(|| "-1".to_owned(), |s| s.0.to_string()));
        let (refused, minute_count, day_count, now, shared): (u8, u64, u64, u64, String) =
            self.backend.run(invocation.invoke_async(&mut connection)).await?;
        let refused = match refused {
            1 => Some(Window::Minute),
            2 => Some(Window::Day),
            _ => None,
        };
        let decision = LimitDecision::from_counts(refused, rpm, rpd, (minute_count, day_count), now);
        Ok((decision, shared.parse::<u64>().ok().map(Nanos)))
    }

    async fn add_spend(&self, key_id: &str, cost: Nanos) {
        let Ok(mut connection) = self.backend.link() else { return };
        let key = self.spend_key(key_id);
        let mut pipe = redis::pipe();
        pipe.cmd("INCRBY").arg(&key).arg(cost.0).ignore().cmd("EXPIRE").arg(&key).arg(SPEND_TTL_SECS).ignore();
        if let Err(err) = self.backend.run(pipe.query_async::<()>(&mut connection)).await {
            tracing::warn!(error = %err, "could not add to a key's shared spend");
        }
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        let mut connection = self.backend.link()?;
        let _: String = self.backend.run(redis::cmd("PING").query_async(&mut connection)).await?;
        Ok(())
    }
}

/// Open circuit breakers shared by every instance through Redis: one key per pair, expiring
/// when the breaker closes. Peers' state is read at most once a second per pair.
pub struct RedisBreakerBoard {
    backend: Arc<Backend>,
    prefix: String,
    peer_breakers: TtlCache<String, Option<Duration>>,
}

impl std::fmt::Debug for RedisBreakerBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBreakerBoard").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[async_trait]
impl BreakerBoard for RedisBreakerBoard {
    async fn open_for(&self, pair: &str) -> Option<Duration> {
        if let Some(cached) = self.peer_breakers.get(&pair.to_owned()) {
            return cached;
        }
        let Ok(mut connection) = self.backend.link() else { return None };
        let key = format!("{}:cb:{{{pair}}}", self.prefix);
        let remaining = match self.backend.run(redis::cmd("PTTL").arg(&key).query_async::<i64>(&mut connection)).await {
            Ok(ms) if ms > 0 => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            _ => None,
        };
        self.peer_breakers.insert(pair.to_owned(), remaining);
        remaining
    }

    async fn announce_open(&self, pair: &str, open_for: Duration) {
        let Ok(mut connection) = self.backend.link() else { return };
        let key = format!("{}:cb:{{{pair}}}", self.prefix);
        let millis = u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(&key).arg(1).arg("PX").arg(millis);
        if let Err(err) = self.backend.run(command.query_async::<()>(&mut connection)).await {
            tracing::warn!(error = %err, "could not share an open circuit breaker");
        }
    }
}
