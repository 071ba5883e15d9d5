//! Failover, retries and circuit breaking across a model's catalog rows.
//!
//! A model may have several rows (one per provider). When the chosen provider fails before
//! anything reached the client (connect error, timeout, 5xx, 529, 429), the call is retried
//! with exponential backoff and jitter (honouring `retry-after`) and then moved to the next row,
//! all inside the request's deadline. A circuit breaker per (provider, model) skips a pair whose
//! recent failure rate is too high, lets one probe through after a while, and, when Redis is
//! configured, shares "open" with every instance.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::GatewayError;

/// Tuning of retries and breakers.
#[derive(Debug, Clone, Copy)]
pub struct RoutingPolicy {
    /// Attempts on one row before moving to the next.
    pub attempts_per_row: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Breaker: outcomes older than this are forgotten.
    pub window: Duration,
    /// Breaker: fewer outcomes than this never open it.
    pub min_calls: usize,
    /// Breaker: failure share (percent) that opens it.
    pub failure_percent: u32,
    /// Breaker: how long it stays open before one probe.
    pub open_for: Duration,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        RoutingPolicy {
            attempts_per_row: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            window: Duration::from_secs(60),
            min_calls: 5,
            failure_percent: 50,
            open_for: Duration::from_secs(30),
        }
    }
}

/// How a failed call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying (after at least this long, if the provider said so).
    Retryable(Option<Duration>),
    /// This provider cannot serve (it refused the gateway's credential): try the next row at
    /// once, without retries.
    NextRow,
    /// The request itself is at fault: answer it as is.
    Final,
}

/// Classifies an error from a provider call made before any byte reached the client.
pub fn classify(err: &GatewayError) -> Failure {
    match err {
        GatewayError::UpstreamFailure(_) | GatewayError::GatewayTimeout(_) => Failure::Retryable(None),
        GatewayError::UpstreamCredential(_) => Failure::NextRow,
        GatewayError::UpstreamBusy { retry_after_seconds, .. } => {
            Failure::Retryable(Some(Duration::from_secs(*retry_after_seconds)))
        }
        GatewayError::UpstreamClient(fault) if fault.status == 429 || fault.status == 408 => {
            Failure::Retryable(fault.retry_after_seconds.map(Duration::from_secs))
        }
        _ => Failure::Final,
    }
}

/// Backoff before attempt `n` (1-based retry count): exponential with full jitter.
pub fn backoff(policy: &RoutingPolicy, retry: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling =
        policy.backoff_base.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1))).min(policy.backoff_max);
    let mut random = [0u8; 8];
    let jitter = if getrandom::fill(&mut random).is_ok() {
        let fraction = u64::from_le_bytes(random) % 1_000;
        ceiling.mul_f64(fraction as f64 / 1_000.0)
    } else {
        ceiling / 2
    };
    retry_after.map_or(jitter, |after| after.max(jitter))
}

#[derive(Debug, Default)]
struct PairState {
    outcomes: VecDeque<(Instant, bool)>,
    open_until: Option<Instant>,
    probing: bool,
}

/// What a breaker says about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// Open, but this caller is the one probe.
    Probe,
    Open,
}

/// Where instances tell each other which breakers are open (the port). Adapters:
/// [`crate::limits::redis::RedisBreakerBoard`] and [`LocalBreakerBoard`].
#[async_trait]
pub trait BreakerBoard: Send + Sync {
    /// How long the pair's breaker stays open as some instance reported it, if it is open.
    async fn open_for(&self, pair: &str) -> Option<Duration>;
    /// Reports the pair's breaker open to every instance for `open_for`.
    async fn announce_open(&self, pair: &str, open_for: Duration);
}

/// One process alone: no other instance to tell (its own breakers are [`Breakers`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBreakerBoard;

#[async_trait]
impl BreakerBoard for LocalBreakerBoard {
    async fn open_for(&self, _pair: &str) -> Option<Duration> {
        None
    }

    async fn announce_open(&self, _pair: &str, _open_for: Duration) {}
}

/// In-process breakers per (provider, model), and the board they are shared on.
pub struct Breakers {
    policy: RoutingPolicy,
    pairs: Mutex<HashMap<String, PairState>>,
    board: Arc<dyn BreakerBoard>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers").field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// The breaker key of a pair.
pub fn pair(provider: &str, upstream_model: &str) -> String {
    format!("{provider}|{upstream_model}")
}

impl Breakers {
    pub fn new(policy: RoutingPolicy, board: Arc<dyn BreakerBoard>) -> Self {
        Breakers { policy, pairs: Mutex::new(HashMap::new()), board }
    }

    pub fn policy(&self) -> &RoutingPolicy {
        &self.policy
    }

    /// Whether a call to the pair may go ahead now.
    pub fn gate(&self, key: &str) -> Gate {
        let Ok(mut pairs) = self.pairs.lock() else { return Gate::Closed };
        let state = pairs.entry(key.to_owned()).or_default();
        match state.open_until {
            None => Gate::Closed,
            Some(until) if Instant::now() < until => Gate::Open,
            Some(_) if state.probing => Gate::Open,
            Some(_) => {
                state.probing = true;
                Gate::Probe
            }
        }
    }

    /// Records an outcome; returns true when this opened the breaker.
    pub fn record(&self, key: &str, success: bool) -> bool {
        let Ok(mut pairs) = self.pairs.lock() else { return false };
        let policy = self.policy;
        let state = pairs.entry(key.to_owned()).or_default();
        let now = Instant::now();
        if state.open_until.is_some() {
            // The probe's outcome decides.
            state.probing = false;
            if success {
                *state = PairState::default();
                return false;
            }
            state.open_until = Some(now + policy.open_for);
            return false;
        }
        state.outcomes.push_back((now, success));
        while state.outcomes.front().is_some_and(|(at, _)| now.duration_since(*at) > policy.window) {
            state.outcomes.pop_front();
        }
        while state.outcomes.len() > 100 {
            state.outcomes.pop_front();
        }
        let failures = state.outcomes.iter().filter(|(_, ok)| !ok).count();
        let total = state.outcomes.len();
        let rate_exceeded = failures * 100 >= total * usize::try_from(policy.failure_percent).unwrap_or(50);
        if total >= policy.min_calls && rate_exceeded {
            state.open_until = Some(now + policy.open_for);
            state.outcomes.clear();
            return true;
        }
        false
    }

    /// Whether another instance reported this pair's breaker open (on the board); mirrors it
    /// locally so later checks need no round trip.
    pub async fn peer_open(&self, key: &str) -> bool {
        match self.board.open_for(key).await {
            Some(remaining) if !remaining.is_zero() => {
                self.open_from_peer(key, remaining);
                true
            }
            _ => false,
        }
    }

    /// Tells other instances that this pair's breaker opened (in a task of its own).
    pub fn announce_open(&self, key: &str) {
        let board = self.board.clone();
        let key = key.to_owned();
        let open_for = self.policy.open_for;
        tokio::spawn(async move { board.announce_open(&key, open_for).await });
    }

    /// Opens the breaker because another instance reported it open.
    pub fn open_from_peer(&self, key: &str, remaining: Duration) {
        if let Ok(mut pairs) = self.pairs.lock() {
            let state = pairs.entry(key.to_owned()).or_default();
            let until = Instant::now() + remaining;
            if state.open_until.is_none_or(|current| current < until) {
                state.open_until = Some(until);
                state.probing = false;
            }
        }
    }
}

/// How a request was routed, for the `X-Mesh-Routing-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub attempts: u32,
    pub fallback: bool,
    pub served_provider: Option<String>,
}

/// The request's deadline: the earlier of the gateway's total budget and the platform's
/// (Lambda's remaining time, less a margin to answer 504 before being killed).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamFault;

    #[test]
    fn opens_on_failure_rate_and_probes_once() {
        let policy = RoutingPolicy { open_for: Duration::from_millis(50), ..RoutingPolicy::default() };
        let breakers = Breakers::new(policy, Arc::new(LocalBreakerBoard));
        let key = pair("p", "m");
        for _ in 0..4 {
            assert!(!breakers.record(&key, false), "below min_calls");
        }
        assert!(breakers.record(&key, false));
        assert_eq!(breakers.gate(&key), Gate::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(breakers.gate(&key), Gate::Probe);
        assert_eq!(breakers.gate(&key), Gate::Open, "one probe at a time");
        breakers.record(&key, true);
        assert_eq!(breakers.gate(&key), Gate::Closed);
        // A mostly healthy pair stays closed.
        for i in 0..20 {
            breakers.record(&key, i % 3 != 0);
        }
        assert_eq!(breakers.gate(&key), Gate::Closed);
    }

    #[test]
    fn classifies_and_backs_off() {
        assert_eq!(classify(&GatewayError::UpstreamFailure("x".into())), Failure::Retryable(None));
        assert_eq!(classify(&GatewayError::UpstreamCredential("x".into())), Failure::NextRow);
        let limited = GatewayError::UpstreamClient(UpstreamFault {
            status: 429,
            error_type: "rate_limit_error".into(),
            code: None,
            message: "slow".into(),
            param: None,
            retry_after_seconds: Some(2),
        });
        assert_eq!(classify(&limited), Failure::Retryable(Some(Duration::from_secs(2))));
        assert_eq!(classify(&GatewayError::invalid("invalid_value", "x", "y")), Failure::Final);
        let policy = RoutingPolicy::default();
        for retry in 1..6 {
            assert!(backoff(&policy, retry, None) <= policy.backoff_max);
        }
        assert!(backoff(&policy, 1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }
}
